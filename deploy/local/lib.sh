# Shared settings for deploy/local scripts (sourced, not executed).
# Every value can be overridden from the environment.
# shellcheck shell=bash
# shellcheck source=versions.env
LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${LOCAL_DIR}/versions.env"
REPO_ROOT="$(cd "${LOCAL_DIR}/../.." && pwd)"

# Binaries are cached outside the clone, keyed by the Kubernetes version.
DBOP_CACHE="${DBOP_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/db-operator}"
K8S_CACHE="${DBOP_K8S_CACHE:-${DBOP_CACHE}/k8s/${K8S_VERSION}}"
BIN_DIR="${DBOP_BIN_DIR:-${K8S_CACHE}/bin}"
STAGES_DIR="${K8S_CACHE}/kwok-stages"

# Cluster state lives in the repository's git-ignored .local/.
STATE_DIR="${DBOP_STATE_DIR:-${REPO_ROOT}/.local}"
PKI_DIR="${STATE_DIR}/pki"
LOG_DIR="${STATE_DIR}/logs"
RUN_DIR="${STATE_DIR}/run"
ETCD_DATA_DIR="${STATE_DIR}/etcd"
KUBECONFIG_FILE="${STATE_DIR}/kubeconfig"

# Fixed, uncommon loopback ports (override when they clash).
ETCD_CLIENT_PORT="${DBOP_ETCD_CLIENT_PORT:-23791}"
ETCD_PEER_PORT="${DBOP_ETCD_PEER_PORT:-23801}"
APISERVER_PORT="${DBOP_APISERVER_PORT:-26443}"
CONTROLLER_MANAGER_PORT="${DBOP_CONTROLLER_MANAGER_PORT:-26257}"
SCHEDULER_PORT="${DBOP_SCHEDULER_PORT:-26259}"
KWOK_PORT="${DBOP_KWOK_PORT:-26280}"
NODE_COUNT="${DBOP_NODE_COUNT:-1}"

# Addresses (never 10/8, 172.16/12, 192.168/16): Services 198.19.0.0/16, pods 198.18.0.0/16.
SERVICE_CIDR="${DBOP_SERVICE_CIDR:-198.19.0.0/16}"   # apiserver/controller-manager --service-cluster-ip-range
CLUSTER_DNS_IP="${DBOP_CLUSTER_DNS_IP:-198.19.0.10}"  # Service kube-system/kube-dns, kubelet clusterDNS
CLUSTER_DOMAIN="cluster.local"
POD_CIDR="${DBOP_POD_CIDR:-198.18.0.0/16}"           # kube-proxy clusterCIDR
NODE_POD_CIDR="${DBOP_NODE_POD_CIDR:-198.18.0.0/24}" # the real node's pods (bridge cni0, host-local IPAM)
KWOK_POD_CIDR="${DBOP_KWOK_POD_CIDR:-198.18.128.0/17}" # fake pod IPs kwok hands out
FENCE_CIDR="198.18.0.0/15"  # FORWARD guard: nothing from here may be forwarded outside it

# The real node (kubelet + containerd + kube-proxy + CoreDNS on the host); DBOP_REAL_NODE=off: kwok only.
REAL_NODE="${DBOP_REAL_NODE:-on}"
NODE_NAME="${DBOP_NODE_NAME:-dbop-node}"
# The node IP lives on lo as a /32 (the kubelet refuses loopback IPs, and this kernel has no dummy
# links); the kubelet serves on it, CoreDNS binds it. Only this machine can reach it.
NODE_IP="${DBOP_NODE_IP:-198.18.255.1}"
BRIDGE="cni0"
KUBELET_PORT="${DBOP_KUBELET_PORT:-10250}"            # on NODE_IP
KUBELET_HEALTHZ_PORT="${DBOP_KUBELET_HEALTHZ_PORT:-10248}" # on 127.0.0.1
KUBE_PROXY_METRICS_PORT="${DBOP_KUBE_PROXY_METRICS_PORT:-10249}" # on 127.0.0.1
KUBE_PROXY_HEALTHZ_PORT="${DBOP_KUBE_PROXY_HEALTHZ_PORT:-10256}" # on 127.0.0.1
COREDNS_HEALTH_PORT="${DBOP_COREDNS_HEALTH_PORT:-18080}"  # on 127.0.0.1
COREDNS_READY_PORT="${DBOP_COREDNS_READY_PORT:-18181}"    # on 127.0.0.1
# kwok's fake nodes carry this taint: only pods that tolerate it are scheduled there.
KWOK_TAINT_KEY="kwok.x-k8s.io/node"
KWOK_TAINT_VALUE="fake"
KWOK_TAINT_EFFECT="NoSchedule"
# Images are never pulled: the sandbox (pause) image is imported by deploy/local/images/import.
PAUSE_IMAGE="${DBOP_PAUSE_IMAGE:-localhost/db-operator/pause:3.10}"
# Node state: containerd root/state, kubelet root, CNI config and IPAM (mounts and netns live here).
NODE_DIR="${DBOP_NODE_DIR:-${STATE_DIR}/node}"
CONTAINERD_SOCKET="${NODE_DIR}/run/containerd.sock"

# Node binaries, cached per component version.
CONTAINERD_BIN_DIR="${DBOP_CACHE}/containerd/${CONTAINERD_VERSION}/bin"
CNI_BIN_DIR="${DBOP_CACHE}/cni-plugins/${CNI_PLUGINS_VERSION}/bin"
COREDNS_BIN_DIR="${DBOP_CACHE}/coredns/${COREDNS_VERSION}/bin"
RUNC="${DBOP_RUNC:-/usr/sbin/runc}"  # Debian's runc package (deploy/local/build installs it)
CONTAINERD_BINARIES=(containerd containerd-shim-runc-v2 ctr)
CNI_PLUGINS=(bridge host-local loopback portmap)

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
ALL_BINARIES=("${K8S_BINARIES[@]}" etcd kwok helm)

bin_path() { if [[ "$1" == */* ]]; then echo "$1"; else echo "${BIN_DIR}/$1"; fi; }

# Root-only tools the scripts install themselves on Debian (CI is a fresh root machine).
apt_install() { # package...
  (( EUID == 0 )) || die "need root to install $*"
  command -v apt-get >/dev/null || die "install $* (no apt-get here)"
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-o DPkg::Lock::Timeout=600)
  apt-get install -y -q "${opts[@]}" "$@" >&2 \
    || { apt-get update -q "${opts[@]}" >&2 && apt-get install -y -q "${opts[@]}" "$@" >&2; } \
    || die "apt-get install $* failed"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Prints the pid of component $1 if its pid file names a live process running binary $2 (a path,
# or a name in BIN_DIR). A binary replaced by a rebuild shows as "<path> (deleted)" and still counts (up restarts it).
component_pid() {
  local pidfile="${RUN_DIR}/$1.pid" pid exe
  [[ -s "${pidfile}" ]] || return 1
  pid="$(<"${pidfile}")"
  [[ "${pid}" =~ ^[0-9]+$ && -d "/proc/${pid}" ]] || return 1
  exe="$(readlink "/proc/${pid}/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$(readlink -f "$(bin_path "$2")")" ]] || return 1
  echo "${pid}"
}

# ---------------------------------------------------------------------------------------------
# Process helpers for up and node (pid files in RUN_DIR, logs in LOG_DIR)
# ---------------------------------------------------------------------------------------------
running() { # component binary -> 0 if its pid file names a live process of that binary
  component_pid "$1" "$2" >/dev/null
}

start() { # component binary args...   (binary: a path, or a name in BIN_DIR)
  local component="$1" binary="$2"; shift 2
  local args_file="${RUN_DIR}/${component}.args" args
  args="$(printf '%q ' "${binary}" "$@")"
  if running "${component}" "${binary}"; then
    local exe; exe="$(readlink "/proc/$(<"${RUN_DIR}/${component}.pid")/exe" 2>/dev/null || true)"
    if [[ "$(cat "${args_file}" 2>/dev/null)" == "${args}" && "${exe}" != *" (deleted)" ]]; then
      log "${component} already running (pid $(<"${RUN_DIR}/${component}.pid"))"
      return 0
    fi
    # Flags changed (a newer version of this script) or the binary was rebuilt: restart.
    local pid; pid="$(<"${RUN_DIR}/${component}.pid")"
    log "restarting ${component} (pid ${pid}): its flags or binary changed"
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 150); do [[ -d "/proc/${pid}" ]] || break; sleep 0.1; done
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  log "starting ${component}"
  printf '\n===== %s starting %s =====\n' "$(date -Is)" "${component}" >> "${LOG_DIR}/${component}.log"
  # setsid: the component outlives the shell (or test binary) that ran `up`.
  # 9>&-: the component must not inherit (and hold) the up.lock descriptor.
  setsid "$(bin_path "${binary}")" "$@" >> "${LOG_DIR}/${component}.log" 2>&1 < /dev/null 9>&- &
  local pid=$!
  echo "${pid}" > "${RUN_DIR}/${component}.pid"
  echo "${args}" > "${args_file}"
  # Until setsid has exec'd the binary, /proc/<pid>/exe is setsid: wait (<= 5 s) so that the
  # liveness checks below do not mistake a starting component for a dead one.
  local want; want="$(readlink -f "$(bin_path "${binary}")")"
  for _ in $(seq 1 50); do
    [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${want}" || ! -d "/proc/${pid}" ]] && break
    sleep 0.1
  done
}

wait_until() { # description timeout_seconds command...
  local what="$1" timeout="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" 7>&2 >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      log "timed out after ${timeout}s waiting for ${what}"
      for f in "${LOG_DIR}"/*.log; do echo "----- tail ${f}" >&2; tail -n 20 "${f}" >&2; done
      exit 1
    fi
    sleep 0.2
  done
}

alive() { # component binary: fail fast (with its log) if the process died
  running "$1" "$2" && return 0
  # wait_until silences its check's output but keeps the caller's stderr as fd 7.
  local fd=2; { true >&7; } 2>/dev/null && fd=7
  { log "$1 exited; last lines of ${LOG_DIR}/$1.log:"; tail -n 40 "${LOG_DIR}/$1.log"; } >&"${fd}" 2>&1
  exit 1
}

healthy() { # component binary url [curl args...]
  alive "$1" "$2"
  curl -fsS --max-time 2 "${@:4}" "$3"
}

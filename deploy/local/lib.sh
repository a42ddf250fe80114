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
SERVICE_CIDR="${DBOP_SERVICE_CIDR:-10.196.0.0/16}"
NODE_COUNT="${DBOP_NODE_COUNT:-1}"

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
ALL_BINARIES=("${K8S_BINARIES[@]}" etcd kwok helm)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Prints the pid of component $1 if its pid file names a live process running binary $2 from
# BIN_DIR. A binary replaced by a rebuild shows as "<path> (deleted)" and still counts (up restarts it).
component_pid() {
  local pidfile="${RUN_DIR}/$1.pid" pid exe
  [[ -s "${pidfile}" ]] || return 1
  pid="$(<"${pidfile}")"
  [[ "${pid}" =~ ^[0-9]+$ && -d "/proc/${pid}" ]] || return 1
  exe="$(readlink "/proc/${pid}/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$(readlink -f "${BIN_DIR}/$2")" ]] || return 1
  echo "${pid}"
}

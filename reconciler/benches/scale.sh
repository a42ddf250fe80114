#!/usr/bin/env bash
# Scale benchmark of the reconciler (issue 11): N Databases created at once on kwok nodes of the
# local cluster, on the release binary with its default flags. A measurement script, not a test.
#
#   make up && reconciler/benches/scale.sh            # N = 100 and 1000
#   (or on the test cluster: deploy/local/test-env -- reconciler/benches/scale.sh)
#   SIZES="100" reconciler/benches/scale.sh
#   RECONCILER_BIN=/path/to/reconciler reconciler/benches/scale.sh
#   EXTRA_FLAGS="--kube-qps 50" reconciler/benches/scale.sh
#
# For each N, in a namespace of its own: the reconciler is started on the host (the in-cluster
# one is scaled to 0 meanwhile, and restored at the end), and left idle for IDLE_SECONDS (10):
# that window's requests and RSS are the baseline of the same run. Then N Databases (1 replica,
# steered to kwok nodes through spec.scheduling, so no real database starts) are created with
# 8 parallel kubectl writers (through the admission webhooks when they are installed), and the
# script waits until every
# one is Ready, then deletes them all and waits until they are gone. It prints, per N: time to
# all Ready, API requests per Database by verb on the create path (from the reconciler's
# db_operator_api_requests_total, the Lease traffic apart), peak RSS (VmHWM), time to all
# deleted, and orphans (children left with our labels once their Database is gone; data PVCs
# are kept by design and not counted).
#
# kwok nodes: 250 pods each; the script adds bench-kwok-* nodes until there is room for N pods
# (and removes them at the end).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local" && pwd)/lib.sh"
export KUBECONFIG="${KUBECONFIG_FILE}"
k() { "${BIN_DIR}/kubectl" "$@"; }
sizes=${SIZES:-100 1000}
idle_seconds=${IDLE_SECONDS:-10}
extra_flags=${EXTRA_FLAGS:-}
port=${METRICS_PORT:-18081}
k get --raw /readyz >/dev/null 2>&1 || die "no local cluster: run make up first"

if [[ -z "${RECONCILER_BIN:-}" ]]; then
  (cd "${REPO_ROOT}" && cargo build -q --release --locked -p reconciler --bin reconciler >&2)
  RECONCILER_BIN="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/release/reconciler"
fi

work="$(mktemp -d)"
pid=
sys=db-operator-system
in_cluster="$(k -n "${sys}" get deployment db-operator-reconciler -o jsonpath='{.spec.replicas}' 2>/dev/null || true)"
cleanup() {
  [[ -n "${pid}" ]] && kill "${pid}" 2>/dev/null && wait "${pid}" 2>/dev/null
  k delete node -l bench-kwok=true --wait=false >/dev/null 2>&1 || true
  if [[ -n "${in_cluster}" ]]; then
    k -n "${sys}" scale deployment db-operator-reconciler --replicas="${in_cluster}" >/dev/null 2>&1 || true
  fi
  rm -rf "${work}"
}
trap cleanup EXIT
if [[ -n "${in_cluster}" && "${in_cluster}" != 0 ]]; then
  k -n "${sys}" scale deployment db-operator-reconciler --replicas=0 >/dev/null
  k -n "${sys}" wait --for=delete pod -l app.kubernetes.io/component=reconciler --timeout=60s >/dev/null 2>&1 || true
fi

ensure_kwok_room() { # pods
  local need=$(( ($1 + 249) / 250 )) have i
  have="$(k get nodes -l type=kwok -o name | wc -l)"
  for ((i = have; i < need; i++)); do
    k apply --server-side --field-manager=scale-bench -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: bench-kwok-${i}
  labels: {type: kwok, bench-kwok: "true", kubernetes.io/hostname: bench-kwok-${i}, kubernetes.io/os: linux}
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "250", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "250", ephemeral-storage: 1Ti}
NODE
  done
  k wait --for=condition=Ready node -l type=kwok --timeout=60s >/dev/null
}

metric() { # name{labels} -> value (0 when absent)
  curl -s "http://127.0.0.1:${port}/metrics" | awk -v m="$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
requests() { # client -> "verb=count ..." for every verb
  local v out=""
  for v in get list watch create patch update delete; do
    out+="${v}=$(metric "db_operator_api_requests_total{client=\"$1\",verb=\"${v}\"}") "
  done
  echo "${out}"
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/${pid}/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/${pid}/status"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
per_db() { # "verb=count ..." before, after, N -> "verb count/N ..."
  awk -v before="$1" -v after="$2" -v n="$3" 'BEGIN {
    split(before, b, " "); m = split(after, a, " ");
    for (i = 1; i <= m; i++) { split(a[i], x, "="); split(b[i], y, "="); d = x[2] - y[2];
      printf "%s %.2f  ", x[1], d / n; if (x[1] ~ /create|patch|update|delete/) w += d; if (x[1] ~ /get|list/) r += d }
    printf "| writes %.2f, reads (get+list) %.2f", w / n, r / n }'
}

printf '%-6s %-10s %-10s %-9s %-9s %-8s %s\n' N ready_s deleted_s rss_MiB idle_MiB orphans "requests per Database on the create path"
for n in ${sizes}; do
  ns="scale-bench-${n}-$(date +%s)"
  ensure_kwok_room "$(( n + 10 ))"
  k create namespace "${ns}" >/dev/null
  # shellcheck disable=SC2086
  RUST_LOG=warn "${RECONCILER_BIN}" --http-addr "127.0.0.1:${port}" --lease-namespace "${ns}" ${extra_flags} \
    > "${work}/reconciler-${n}.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:${port}/readyz" >/dev/null && break; sleep 0.2; done
  for _ in $(seq 150); do [[ "$(metric db_operator_leader)" == 1 ]] && break; sleep 0.2; done
  [[ "$(metric db_operator_leader)" == 1 ]] || die "the reconciler did not become leader (log: ${work}/reconciler-${n}.log)"
  sleep "${idle_seconds}"
  idle_rss=$(( $(rss) / 1024 ))
  idle_before="$(requests reconcile)"; sleep "${idle_seconds}"; idle_after="$(requests reconcile)"
  for w in $(seq 0 7); do
    for i in $(seq "${w}" 8 $((n - 1))); do
      cat <<YAML
---
apiVersion: example.com/v1
kind: Database
metadata: {name: db-${i}}
spec:
  engine: postgres
  replicas: 1
  scheduling:
    nodeSelector: {type: kwok}
    tolerations: [{key: kwok.x-k8s.io/node, operator: Equal, value: fake, effect: NoSchedule}]
YAML
    done > "${work}/dbs-${w}.yaml"
  done
  before="$(requests reconcile)"
  t0="$(now)"
  for w in $(seq 0 7); do k -n "${ns}" create -f "${work}/dbs-${w}.yaml" >/dev/null & done
  wait $(jobs -p | grep -v "^${pid}$") 2>/dev/null || true
  created="$(since "${t0}")"
  while :; do
    ready="$(k -n "${ns}" get databases.example.com -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
    [[ "${ready}" -ge "${n}" ]] && break
    kill -0 "${pid}" 2>/dev/null || die "the reconciler exited (log: ${work}/reconciler-${n}.log)"
    sleep 1
  done
  ready_s="$(since "${t0}")"
  after="$(requests reconcile)"
  peak=$(( $(hwm) / 1024 ))
  t1="$(now)"
  k -n "${ns}" delete databases.example.com --all --wait=false >/dev/null
  while [[ "$(k -n "${ns}" get databases.example.com -o name | wc -l)" -gt 0 ]]; do sleep 1; done
  deleted_s="$(since "${t1}")"
  orphans=0
  for kind in statefulsets services configmaps secrets cronjobs poddisruptionbudgets; do
    orphans=$(( orphans + $(k -n "${ns}" get "${kind}" -l app.kubernetes.io/managed-by=db-operator -o name | wc -l) ))
  done
  kill "${pid}"; wait "${pid}" 2>/dev/null || true; pid=
  printf '%-6s %-10s %-10s %-9s %-9s %-8s %s\n' "${n}" "${ready_s}" "${deleted_s}" "${peak}" "${idle_rss}" "${orphans}" "$(per_db "${before}" "${after}" "${n}")"
  echo "       (creating took ${created} s of that; idle baseline, ${idle_seconds} s: $(per_db "${idle_before}" "${idle_after}" 1 | sed 's/|.*//'))"
  k delete namespace "${ns}" --wait=false >/dev/null
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); reconciler flags: defaults ${extra_flags}"

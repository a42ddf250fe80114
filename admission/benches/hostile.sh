#!/usr/bin/env bash
# Hostile-load benchmark for the real `admission` binary (release build, --no-cluster, dev cert).
#
# Load (issue 10): LOAD_WORKERS (32) parallel clients, each posting, again and again for
# LOAD_SECONDS (20), a 3,144,704-byte (3 MiB - 1 KiB) AdmissionReview whose object carries a million empty
# arrays in an unknown spec field (half to /mutate, which must keep unknown fields and so builds
# a JSON tree of the object, half to /validate). Throughout, 100 ms after each probe: the RSS
# (/proc/PID/status VmRSS, and VmHWM = peak) and one /healthz on a new TLS connection, timed
# (as the kubelet probes). The same sampling runs first for IDLE_SECONDS (3) without load: the
# baseline of the same run.
#
#   admission/benches/hostile.sh                  # builds the release binary if needed
#   LOAD_SECONDS=60 LOAD_WORKERS=64 admission/benches/hostile.sh
#   ADMISSION_BIN=/path/to/admission admission/benches/hostile.sh
#   EXTRA_FLAGS="--max-in-flight 64" admission/benches/hostile.sh
#
# Prints: idle RSS and /healthz latency, peak RSS (VmHWM) under load against the 160 MiB target,
# /healthz max/p99 under load against the 0.5 s target, /healthz failures, and the load's answers
# by endpoint and status. All traffic stays on 127.0.0.1.
#
# The load uses HTTP/1.1: an early answer (429 before the body is read) ends an HTTP/2 stream
# with RST_STREAM(NO_ERROR) after the response (RFC 9113 §8.1), which Go's client (the API server)
# and hyper's accept but curl 7.88 reports as "Stream error in the HTTP/2 framing layer".
# The HTTP/2 429 path is tested with hyper's client in admission/tests/bounds.rs.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
workers=${LOAD_WORKERS:-32}
load_seconds=${LOAD_SECONDS:-20}
idle_seconds=${IDLE_SECONDS:-3}
extra_flags=${EXTRA_FLAGS:-}

if [ -z "${ADMISSION_BIN:-}" ]; then
  target=${CARGO_TARGET_DIR:-$here/target}
  (cd "$here" && cargo build --release -p admission --bin admission >&2)
  ADMISSION_BIN=$target/release/admission
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$ADMISSION_BIN" dev-cert --out "$work/cert" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
RUST_LOG=info "$ADMISSION_BIN" serve --no-cluster --listen "127.0.0.1:$port" \
  --tls-cert "$work/cert/tls.crt" --tls-key "$work/cert/tls.key" $extra_flags \
  >"$work/server.log" 2>&1 &
server_pid=$!
url=https://localhost:$port
curl_base=(curl -sS --cacert "$work/cert/ca.crt" --resolve "localhost:$port:127.0.0.1")
for _ in $(seq 100); do
  "${curl_base[@]}" -o /dev/null "$url/healthz" 2>/dev/null && break
  sleep 0.1
done

# The hostile body: 3 MiB - 1 KiB (just under the 3 MiB limit), a million `[]`.
python3 - "$work/body.json" <<'EOF'
import json, sys
review = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {
        "uid": "hostile", "kind": {"group": "example.com", "version": "v1", "kind": "Database"},
        "resource": {"group": "example.com", "version": "v1", "resource": "databases"},
        "requestKind": {"group": "example.com", "version": "v1", "kind": "Database"},
        "requestResource": {"group": "example.com", "version": "v1", "resource": "databases"},
        "name": "orders", "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "hostile"},
        "object": {"apiVersion": "example.com/v1", "kind": "Database",
                   "metadata": {"name": "orders", "namespace": "shop"},
                   "spec": {"engine": "postgres", "x": "ARRAYS"}},
        "dryRun": False,
    },
}
text = json.dumps(review, separators=(",", ":"))
head, tail = text.split('"ARRAYS"')
n = 1_000_000
SIZE = 3 * 1024 * 1024 - 1024
arrays = "[" + ",".join(["[]"] * n) + "]"
pad = SIZE - len(head) - len(arrays) - len(tail)
assert pad >= 0, pad
body = head + arrays + " " * pad + tail
assert len(body) == SIZE
open(sys.argv[1], "w").write(body)
EOF

# sampler PHASE SECONDS: every 100 ms one line "phase rss_kib hwm_kib healthz_seconds http_code".
sampler() {
  local phase=$1 until=$(( $(date +%s%N) + $2 * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$until" ]; do
    local rss hwm probe
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")
    probe=$("${curl_base[@]}" -o /dev/null --max-time 5 -w '%{time_total} %{http_code}' \
      "$url/healthz" 2>/dev/null || true)
    [ -n "$probe" ] || probe="5 000"
    echo "$phase $rss $hwm $probe"
    sleep 0.1
  done
}

# worker N SECONDS: posts the body until the time is up; one line "endpoint http_code seconds".
worker() {
  local path=/validate until=$(( $(date +%s%N) + $2 * 1000000000 ))
  [ $(( $1 % 2 )) -eq 0 ] && path=/mutate
  while [ "$(date +%s%N)" -lt "$until" ]; do
    local out
    out=$("${curl_base[@]}" --http1.1 -o /dev/null --max-time 30 -H 'Content-Type: application/json' \
      --data-binary "@$work/body.json" -w '%{http_code} %{time_total}' "$url$path" 2>/dev/null ||
      true)
    [ -n "$out" ] || out="000 30"
    echo "$path $out"
  done
}

echo "server: $ADMISSION_BIN (pid $server_pid, 127.0.0.1:$port) $extra_flags" >&2
echo "idle for ${idle_seconds}s, then $workers clients x 3 MiB bodies of a million empty arrays for ${load_seconds}s" >&2
sampler idle "$idle_seconds" >"$work/samples"
for i in $(seq "$workers"); do worker "$i" "$load_seconds" >"$work/load.$i" & done
sampler load "$load_seconds" >>"$work/samples"
wait $(jobs -p | grep -v "^$server_pid$") 2>/dev/null || true
# Let the last answers finish and the allocator settle, then one more sample.
sleep 1
cat "$work"/load.* >"$work/answers"
alive=$(kill -0 "$server_pid" 2>/dev/null && echo yes || echo "NO (crashed or killed)")

python3 - "$work/samples" "$work/answers" "$alive" <<'EOF'
import sys, collections
samples = [l.split() for l in open(sys.argv[1]) if l.strip()]
answers = [l.split() for l in open(sys.argv[2]) if l.strip()]
alive = sys.argv[3]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")
MiB = 1024
for phase in ("idle", "load"):
    rows = [s for s in samples if s[0] == phase]
    rss = [int(r[1]) / MiB for r in rows]
    hwm = [int(r[2]) / MiB for r in rows]
    lat = [float(r[3]) for r in rows]
    bad = [r for r in rows if r[4] != "200"]
    print(f"{phase:>4}: {len(rows)} samples; RSS max {max(rss):.1f} MiB (VmHWM {max(hwm):.1f} MiB); "
          f"/healthz p50 {pct(lat, 50)*1000:.1f} ms, p99 {pct(lat, 99)*1000:.1f} ms, "
          f"max {max(lat)*1000:.1f} ms; not 200: {len(bad)}")
load = [s for s in samples if s[0] == "load"]
# VmHWM is synced lazily; a VmRSS sample can be above the VmHWM read just after it.
peak = max(max(int(r[1]), int(r[2])) for r in load) / MiB
hmax = max(float(r[3]) for r in load)
print(f"peak RSS under load: {peak:.1f} MiB (target <= 160 MiB: {'met' if peak <= 160 else 'MISSED'})")
print(f"/healthz max under load: {hmax*1000:.1f} ms (target < 500 ms: {'met' if hmax < 0.5 else 'MISSED'})")
by = collections.Counter((a[0], a[1]) for a in answers)
times = collections.defaultdict(list)
for a in answers:
    times[(a[0], a[1])].append(float(a[2]))
print(f"load answers: {len(answers)}")
for (path, code), n in sorted(by.items()):
    t = times[(path, code)]
    print(f"  {path:<9} {code}: {n:>5}  (p50 {pct(t, 50)*1000:.0f} ms, max {max(t)*1000:.0f} ms)")
print(f"server still running after the load: {alive}")
EOF

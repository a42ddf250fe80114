#!/usr/bin/env bash
# Coverage-guided fuzzing of the admission server's request handling (libFuzzer through the
# libfuzzer-sys crate, instrumented with LLVM's SanitizerCoverage on the stable toolchain, the
# flags cargo-fuzz would pass). Not part of the test run.
#
#   fuzz/run.sh                 # 10,000,000 inputs, seeded from fuzz/corpus/server and fixtures/
#   FUZZ_RUNS=1000000 fuzz/run.sh
#   FUZZ_SECONDS=3000 fuzz/run.sh  # also stop after this wall time (libFuzzer -max_total_time)
#   FUZZ_TARGET_DIR=...         # cargo target dir (default ~/.cache/db-operator/target-fuzz)
#
# Prints the number of inputs run, the wall time and the result; exits non-zero on a crash
# (the input is saved as fuzz/artifacts/crash-*; replay it with `fuzz/run.sh <file>`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${FUZZ_RUNS:-10000000}
seconds=${FUZZ_SECONDS:-0}
target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/db-operator/target-fuzz}
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
(cd "$here" && cargo build --release --target "$triple" --target-dir "$target_dir" --bin server)
bin=$target_dir/$triple/release/server
if [ $# -gt 0 ]; then exec "$bin" "$@"; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/corpus/server/* "$work"/
# The request fixtures are seeds too, with their target's selector byte (see admission::fuzzing).
fixtures=$here/../fixtures
for pair in 0:validate/*.request.json 1:mutate/*.request.json 2:convert/*.request.json \
  3:manifests/*.yaml 3:manifests/update/*.yaml; do
  sel=${pair%%:*}
  for f in $fixtures/${pair#*:}; do
    [ -f "$f" ] || continue
    { printf "\\$(printf %o "$sel")"; cat "$f"; } >"$work/fixture-$sel-$(basename "$f")"
  done
done
mkdir -p "$here/artifacts"
log=$work/fuzz.log
start=$(date +%s)
set +e
"$bin" -runs="$runs" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$here/artifacts/" "$work" 2>"$log"
rc=$?
set -e
end=$(date +%s)
tail -n 25 "$log"
done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
case $rc in
  0) verdict='no crash, no failed reply check' ;;
  72) verdict='interrupted, no crash so far' ;;
  *) verdict='CRASH: see fuzz/artifacts' ;;
esac
echo "fuzz: ${done_runs:-?} inputs in $((end - start)) s, exit code $rc ($verdict)"
exit $rc

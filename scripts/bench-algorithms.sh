#!/usr/bin/env bash
# The algorithm matrix of docs/benchmarks.md ("Algorithms at realistic settings"): every algorithm on the memory
# and Postgres stores, 1 h windows, limits 100 / 10,000 / 1,000,000, every key of the uniform shape filled to 90 %
# of its limit before each run, each pair (floor or pgbench, and sluice) measured in the same run. sliding_log is
# measured at limits 100 and 10,000 on 1,000 keys (its state is one entry per unit: 9,000 instants per key at
# 10,000). Loopback only; about 15 minutes with the defaults.
#
#   DURATION=4s WARMUP=1s ROUNDS=1 scripts/bench-algorithms.sh
#   STORES=memory SLICES=8 DURATION=2s WARMUP=500ms scripts/bench-algorithms.sh   # interleaved pairs (-slices)
#
# SLICES (memory store only) keeps the floor and sluice up at once and measures them in that many alternating
# pairs of DURATION each, so the machine's drift between runs cancels within a pair (see sluice-bench -slices).
set -uo pipefail
cd "$(dirname "$0")/.."
GOTOOLCHAIN=$(sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-1}
SLICES=${SLICES:-0}
STORES=${STORES:-memory,postgres}
out=${OUT:-$(mktemp -d /tmp/sluice-bench-alg.XXXXXX)}
go build -o "$out/sluice-bench" ./cmd/sluice-bench
echo "== $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); results in $out"
run() { # store algorithm limit keys
  echo "== store=$1 algorithm=$2 limit=$3 keys=$4"
  "$out/sluice-bench" -store "$1" -algorithm "$2" -limit "$3" -keys "$4" -fill 0.9 -window 1h -pg-window 1h \
    -shapes uniform,hot -duration "$DURATION" -warmup "$WARMUP" -rounds "$ROUNDS" -slices "$SLICES" \
    -markdown "$out/$1-$2-$3.md" | grep -E '^(memory|postgres) |^- .*decisions/s [0-9.]+×' || echo "   (this configuration failed: see above)"
}
for store in ${STORES//,/ }; do
  for alg in sliding_window token_bucket fixed_window; do
    for limit in 100 10000 1000000; do
      run "$store" "$alg" "$limit" 10000
    done
  done
  for limit in 100 10000; do
    run "$store" sliding_log "$limit" 1000
  done
done

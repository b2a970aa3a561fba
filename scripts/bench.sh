#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: the Go benchmarks (-benchmem) and the load tool (floor vs sluice on the memory
# store; pgbench vs sluice on the Postgres store). Loopback only, bounded in time (about 10 minutes with the
# defaults). Run it on an otherwise idle machine: the ratios are measured in one run, but other load on the two
# CPUs still skews them; each pair is measured ROUNDS times, alternating which goes first, and the median ratio is
# reported (a single pair swung from 0.69x to 0.94x between back-to-back runs on a shared VM).
#
#   scripts/bench.sh                 everything
#   DURATION=5s scripts/bench.sh     shorter load runs
#   ROUNDS=1 scripts/bench.sh        one measurement per pair (default 3)
#   STORES=memory scripts/bench.sh   skip Postgres (it is skipped anyway when 127.0.0.1:5432 does not answer)
#   GO_BENCH=0 scripts/bench.sh      only the load tool
#
# Output goes to stdout and to $OUT (default: a new /tmp/sluice-bench.* directory), with CPU profiles of the
# sluice servers.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build and test with the toolchain go.mod names (`toolchain` line: standard-library security fixes that the
# machine's own Go may lack). A machine whose go env says GOTOOLCHAIN=local would ignore that line; exporting it
# here makes every step, and every binary the tests build, use it. The go command fetches it once from the module
# proxy (about 76 MB).
GOTOOLCHAIN=$(sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
STORES=${STORES:-memory,postgres}
GO_BENCH=${GO_BENCH:-1}
out=${OUT:-$(mktemp -d /tmp/sluice-bench.XXXXXX)}
mkdir -p "$out/profiles"

echo "== machine (results in $out)"
echo "$(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB, $(go version), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$GO_BENCH" = 1 ]; then
  echo "== go benchmarks"
  go test -run '^$' -bench . -benchmem -count 1 \
    ./domain/ ./adapters/memory/ ./adapters/httpapi/ ./adapters/postgres/ | tee "$out/go-bench.txt"
fi

if [[ "$STORES" == *postgres* ]] && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "== postgres does not answer at 127.0.0.1:5432: skipping the Postgres store (scripts/test.d/00-postgres-up.sh starts it)"
  STORES=${STORES//postgres/}
fi
echo "== load tool"
go build -o "$out/sluice-bench" ./cmd/sluice-bench
"$out/sluice-bench" -store "$STORES" -duration "$DURATION" -warmup "$WARMUP" -rounds "$ROUNDS" \
  -cpuprofile-dir "$out/profiles" -markdown "$out/results.md" | tee "$out/load.txt"
echo "== profiles: go tool pprof -top $out/sluice-bench $out/profiles/<file>"

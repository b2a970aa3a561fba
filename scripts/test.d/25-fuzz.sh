#!/usr/bin/env bash
# Fuzzing, briefly: every Fuzz target of the packages below for FUZZTIME each (default 3s), one target per
# `go test -fuzz` invocation (Go fuzzes one target at a time). The committed seed corpora (f.Add and
# testdata/fuzz/) already run as plain tests in 20-go.sh; this step searches for new inputs. A failure prints the
# input and writes it to the package's testdata/fuzz/FuzzX/ directory: commit it as a regression seed once fixed.
# Longer runs: FUZZTIME=2m bash scripts/test.d/25-fuzz.sh (docs/reliability.md records what they found).
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME="${FUZZTIME:-3s}"
# Minimising a new input (one that widens coverage, or a crasher) runs the target for up to -fuzzminimizetime,
# 60 s by default per input: a slow target (FuzzLoad builds a whole config) spent minutes there after its 3 s of
# fuzzing. One second per input keeps each target near FUZZTIME; a crasher is still reported, less minimised.
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-1s}"
PKGS=(./domain ./app ./adapters/httpapi ./adapters/memory ./adapters/postgres ./adapters/redis ./adapters/envoyrls)
n=0
for pkg in "${PKGS[@]}"; do
  targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
  if [ -z "$targets" ]; then
    echo "no Fuzz targets in $pkg" >&2
    exit 1
  fi
  for target in $targets; do
    t0=$SECONDS
    if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" 2>&1); then
      echo "$out"
      echo "FAIL fuzz $pkg $target" >&2
      exit 1
    fi
    last=$(echo "$out" | grep '^fuzz: elapsed' | tail -n 1 || true)
    echo "ok   fuzz $pkg $target ($((SECONDS - t0)) s) ${last#fuzz: }"
    n=$((n + 1))
  done
done
echo "fuzz: $n targets, ${FUZZTIME} each"

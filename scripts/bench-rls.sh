#!/usr/bin/env bash
# Side by side over Envoy's Rate Limit Service protocol, one load tool (cmd/rls-bench) for all: sluice on the memory
# store, envoyproxy/ratelimit on its own redis-server (pinned build from scripts/install-envoy-ratelimit.sh), and
# sluice on PostgreSQL (127.0.0.1:5432, a throwaway database; skipped when it does not answer). Every server gets
# the same config (domain bench, a bare-key rule on "user" with a limit no run reaches unless LIMIT says, so every
# request is a full decision that touches the store) and the same requests (user=u0..u999 round-robin). CPU per decision counts the
# server and its store process (sluice alone on Postgres: the database's backends are not attributed). Loopback
# only, bounded in time (about 1 minute with the defaults). With taskset and 2+ CPUs, every server and its store
# process share CPU 1 and the load tool runs on CPU 0 (PIN=0 turns that off), so each server gets the same one-core
# budget and the load tool does not compete with it (the shared PostgreSQL server cannot be pinned).
#
# HOT=true adds a descriptor every request shares (user=hot: one hot key beside the per-user ones). LIMIT=N sets the
# rule's requests per hour (default 4000000000, never reached; LIMIT=1 denies every request after each key's first:
# the denial path). DESCRIPTORS=N sends N descriptors per request (N distinct keys: one atomic batch of N checks; see
# rls-bench). BASELINE=<git revision> also builds sluice at that revision and measures it on PostgreSQL too (its own
# throwaway database, measured just before the current build), so a change to the Postgres path is compared within one
# run.
#
#   scripts/bench-rls.sh                           DURATION=10s CONCURRENCY=64 DESCRIPTORS=1
#   DURATION=5s CONCURRENCY=32 scripts/bench-rls.sh
#   BASELINE=main DESCRIPTORS=2 scripts/bench-rls.sh
#   BASELINE=main HOT=true LIMIT=1 scripts/bench-rls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GOTOOLCHAIN=$(sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-64}
DESCRIPTORS=${DESCRIPTORS:-1}
LIMIT=${LIMIT:-4000000000}
HOT=${HOT:-false}
BASELINE=${BASELINE:-}
work=$(mktemp -d /tmp/sluice-rls-bench.XXXXXX)
srv=() cli=()
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  srv=(taskset -c 1) cli=(taskset -c 0)
fi
pids=()
dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${dbs[@]}"; do psql -h 127.0.0.1 -U postgres -d postgres -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

upstream=$(bash scripts/install-envoy-ratelimit.sh)
go build -o "$work/sluice" .
go build -o "$work/rls-bench" ./cmd/rls-bench
if [ -n "$BASELINE" ]; then
  rev=$(git rev-parse --short "$BASELINE")
  mkdir -p "$work/baseline-src"
  git archive "$rev" | tar -x -C "$work/baseline-src"
  (cd "$work/baseline-src" && go build -o "$work/sluice-baseline" .)
fi
mkdir -p "$work/runtime/ratelimit/config"
cat > "$work/runtime/ratelimit/config/bench.yaml" <<YAML
domain: bench
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: $LIMIT
YAML

echo "== machine: $(nproc) CPUs, $(go version), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== upstream: envoyproxy/ratelimit $(basename "$upstream") + redis-server $(redis-server --version | awk '{print $3}')"

sluice_rls=$(port)
cat > "$work/memory.yaml" <<YAML
listen: 127.0.0.1:$(port)
log: {level: warn}
memory: {max_keys: 100000}
rls: {listen: 127.0.0.1:$sluice_rls, config_dir: $work/runtime/ratelimit/config, reload_interval: 0s}
YAML
"${srv[@]}" "$work/sluice" serve -config "$work/memory.yaml" > "$work/sluice-memory.log" 2>&1 &
sluice_pid=$!; pids+=("$sluice_pid")

redis_port=$(port)
"${srv[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
wait_port "$redis_port"
up_grpc=$(port)
env USE_STATSD=false LOG_LEVEL=warn REDIS_SOCKET_TYPE=tcp REDIS_URL="127.0.0.1:$redis_port" \
  RUNTIME_ROOT="$work/runtime" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_APPDIRECTORY=config RUNTIME_WATCH_ROOT=false \
  RUNTIME_IGNOREDOTFILES=true HOST=127.0.0.1 PORT="$(port)" GRPC_HOST=127.0.0.1 GRPC_PORT="$up_grpc" \
  DEBUG_HOST=127.0.0.1 DEBUG_PORT="$(port)" "${srv[@]}" "$upstream/service_cmd" > "$work/ratelimit.log" 2>&1 &
up_pid=$!; pids+=("$up_pid")
wait_port "$sluice_rls"; wait_port "$up_grpc"

args=(-target "sluice-memory=127.0.0.1:$sluice_rls" -pid "sluice-memory=$sluice_pid"
  -target "envoyproxy-ratelimit+redis=127.0.0.1:$up_grpc" -pid "envoyproxy-ratelimit+redis=$up_pid,$redis_pid")

# start_postgres NAME BINARY: sluice (BINARY) on its own throwaway database, measured as target NAME.
start_postgres() {
  local name=$1 bin=$2 db rls pid
  db=sluice_rls_bench_$$_${#dbs[@]}
  dbs+=("$db")
  psql -h 127.0.0.1 -U postgres -d postgres -qXc "CREATE DATABASE $db" >/dev/null
  rls=$(port)
  cat > "$work/$name.yaml" <<YAML
listen: 127.0.0.1:$(port)
log: {level: warn}
store: postgres
postgres: {url: "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable", migrate_on_start: true}
rls: {listen: 127.0.0.1:$rls, config_dir: $work/runtime/ratelimit/config, reload_interval: 0s}
YAML
  "${srv[@]}" "$bin" serve -config "$work/$name.yaml" > "$work/$name.log" 2>&1 &
  pid=$!; pids+=("$pid")
  wait_port "$rls"
  args+=(-target "$name=127.0.0.1:$rls" -pid "$name=$pid")
}
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if [ -n "$BASELINE" ]; then start_postgres "sluice-postgres-$rev" "$work/sluice-baseline"; fi
  start_postgres sluice-postgres "$work/sluice"
else
  echo "== postgres: 127.0.0.1:5432 does not answer; skipping sluice-postgres"
fi

echo "== rls-bench -duration $DURATION -concurrency $CONCURRENCY -descriptors $DESCRIPTORS -hot=$HOT (closed loop, 4 connections per target, 1000 keys; pinned: ${srv[*]:-no})"
"${cli[@]}" "$work/rls-bench" -duration "$DURATION" -concurrency "$CONCURRENCY" -descriptors "$DESCRIPTORS" -hot="$HOT" "${args[@]}"

#!/usr/bin/env bash
# Starts the Redis servers the Redis store's tests use, when they are not already running: a single redis-server
# on 127.0.0.1:16379 and a Redis Cluster of 3 masters and 3 replicas on 127.0.0.1:16381-16386, all from Debian's
# redis-server package (installed with apt-get when absent), without persistence, in directories under
# ${SLUICE_TEST_REDIS_DIR:-/tmp/sluice-redis}. The machine's own Redis (6379) is never touched.
#
# The Go tests find them at those addresses (override with SLUICE_TEST_REDIS_ADDR and
# SLUICE_TEST_REDIS_CLUSTER, comma-separated); tests that kill a server start private ones of their own
# (adapters/redis/redistest). With CI=true the Redis tests fail, rather than skip, when these do not answer.
set -euo pipefail
dir=${SLUICE_TEST_REDIS_DIR:-/tmp/sluice-redis}
single=16379
cluster_ports=(16381 16382 16383 16384 16385 16386)

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "redis: not installed; installing Debian's redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server redis-tools >/dev/null
fi

up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

start() { # port [extra args...]
  local port=$1
  shift
  mkdir -p "$dir/$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/$port" --save "" --appendonly no \
    --daemonize yes --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid" \
    --maxmemory-policy noeviction "$@"
}

wait_up() {
  for _ in $(seq 1 100); do
    if up "$1"; then return 0; fi
    sleep 0.05
  done
  echo "redis: 127.0.0.1:$1 did not answer; see $dir/$1/redis.log" >&2
  return 1
}

if up "$single"; then
  echo "redis: single server already running at 127.0.0.1:$single"
else
  start "$single"
  wait_up "$single"
  echo "redis: single server started at 127.0.0.1:$single"
fi

state=$(redis-cli -h 127.0.0.1 -p "${cluster_ports[0]}" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p' || true)
if [ "$state" = "ok" ]; then
  echo "redis: cluster already running at 127.0.0.1:${cluster_ports[0]}-${cluster_ports[5]}"
  exit 0
fi
seeds=()
for p in "${cluster_ports[@]}"; do
  if ! up "$p"; then
    rm -rf "${dir:?}/$p"
    start "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --repl-diskless-sync-delay 0
  fi
  seeds+=("127.0.0.1:$p")
done
for p in "${cluster_ports[@]}"; do wait_up "$p"; done
known=$(redis-cli -h 127.0.0.1 -p "${cluster_ports[0]}" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "${known:-1}" -lt 6 ]; then
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >"$dir/cluster-create.log"
fi
for _ in $(seq 1 100); do
  state=$(redis-cli -h 127.0.0.1 -p "${cluster_ports[0]}" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')
  if [ "$state" = "ok" ]; then
    echo "redis: cluster started at 127.0.0.1:${cluster_ports[0]}-${cluster_ports[5]}"
    exit 0
  fi
  sleep 0.1
done
echo "redis: cluster did not reach cluster_state:ok; see $dir/*/redis.log and $dir/cluster-create.log" >&2
exit 1

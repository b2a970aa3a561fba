#!/usr/bin/env bash
# Builds envoyproxy/ratelimit's service and gRPC CLI (pinned in scripts/install-envoy-ratelimit.sh, into a cache
# outside the repo) and makes sure redis-server is installed, for integration/envoyrls, which runs inside 20-go.sh's
# `go test ./...` (with CI=true it fails instead of skipping when either is missing). The machine's own Redis is
# never used: the test starts its own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v redis-server >/dev/null; then
  echo "redis-server: not installed; installing from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
dir=$(bash scripts/install-envoy-ratelimit.sh)
echo "envoyproxy/ratelimit binaries: $dir"

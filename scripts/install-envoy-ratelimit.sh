#!/usr/bin/env bash
# Builds envoyproxy/ratelimit's service (service_cmd) and its gRPC CLI (client_cmd) from the Go module proxy at
# one pinned version, for the RLS comparison tests in adapters/envoyrls/e2e. The binaries go to a cache directory
# outside the repository (never committed): $SLUICE_TOOLS_CACHE (default ~/.cache/sluice-tools)/envoy-ratelimit-
# <version>/. Prints that directory. A second run with the binaries present does nothing (~0 s; cold ~2 min).
set -euo pipefail
# The version tests are compared against (toolchain-notes: builds here with go1.27.3; pins go-control-plane/envoy
# v1.32.4 at this commit).
version=v1.4.1-0.20260122083618-3fb702589d36
cache=${SLUICE_TOOLS_CACHE:-$HOME/.cache/sluice-tools}
dir=$cache/envoy-ratelimit-$version
if [ -x "$dir/service_cmd" ] && [ -x "$dir/client_cmd" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
# Built outside this module so its dependencies never enter sluice's go.mod.
(cd "$dir" && GOBIN=$dir GOFLAGS=-mod=mod go install \
  "github.com/envoyproxy/ratelimit/src/service_cmd@$version" \
  "github.com/envoyproxy/ratelimit/src/client_cmd@$version") >&2
echo "$dir"

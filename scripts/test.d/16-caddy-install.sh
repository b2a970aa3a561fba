#!/usr/bin/env bash
# Installs Debian's caddy when it is absent, for the forward_auth proxy test in integration/caddy, which runs inside
# 20-go.sh's `go test ./...` (with CI=true it fails instead of skipping when caddy is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash scripts/install-proxy.sh caddy

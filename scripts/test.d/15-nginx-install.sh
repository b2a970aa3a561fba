#!/usr/bin/env bash
# Installs Debian's nginx when it is absent, for the auth_request proxy test in integration/nginx, which runs inside
# 20-go.sh's `go test ./...` (with CI=true it fails instead of skipping when nginx is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash scripts/install-proxy.sh nginx

#!/usr/bin/env bash
# Installs Debian's caddy (for the forward_auth proxy test in integration/caddy) when no caddy is on PATH. It never
# starts, stops or reconfigures a system caddy: the test runs its own caddy with a Caddyfile in a temporary directory.
set -euo pipefail
if command -v caddy >/dev/null 2>&1; then
  echo "caddy: already installed ($(caddy version 2>&1))"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "caddy: not installed, and this script can only install it as root with apt-get; install caddy yourself" >&2
  exit 1
fi
echo "caddy: not installed; installing Debian's caddy"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting a system caddy on port 80 (no init system here anyway).
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends caddy >/dev/null
echo "caddy: installed ($(caddy version 2>&1))"

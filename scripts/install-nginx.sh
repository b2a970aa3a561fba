#!/usr/bin/env bash
# Installs Debian's nginx (for the auth_request proxy test in integration/nginx) when no nginx is on PATH. It never
# starts, stops or reconfigures a system nginx: the test runs its own nginx with a config in a temporary directory.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
  echo "nginx: already installed ($(nginx -v 2>&1))"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "nginx: not installed, and this script can only install it as root with apt-get; install nginx yourself" >&2
  exit 1
fi
echo "nginx: not installed; installing Debian's nginx-light"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting a system nginx on port 80 (no init system here anyway).
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
apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
echo "nginx: installed ($(nginx -v 2>&1))"

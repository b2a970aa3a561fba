#!/usr/bin/env bash
# Usage: install-proxy.sh nginx|caddy
# Installs Debian's nginx (nginx-light, for the auth_request test in integration/nginx) or caddy (for the
# forward_auth test in integration/caddy) when the command is not on PATH. It never starts, stops or reconfigures a
# system server: each test runs its own with a config in a temporary directory.
set -euo pipefail
case "${1:-}" in
  nginx) cmd=nginx pkg=nginx-light ;;
  caddy) cmd=caddy pkg=caddy ;;
  *) echo "usage: $0 nginx|caddy" >&2; exit 2 ;;
esac
version() { if [ "$cmd" = nginx ]; then nginx -v 2>&1; else caddy version 2>&1; fi; }
if command -v "$cmd" >/dev/null 2>&1; then
  echo "$cmd: already installed ($(version))"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$cmd: not installed, and this script can only install it as root with apt-get; install $cmd yourself" >&2
  exit 1
fi
echo "$cmd: not installed; installing Debian's $pkg"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting a system server on port 80 (no init system here anyway).
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
apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
echo "$cmd: installed ($(version))"

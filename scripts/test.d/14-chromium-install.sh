#!/usr/bin/env bash
# Installs Debian's chromium (and chromium-driver) when chromium is not on PATH, for the console's browser test in
# integration/console, which runs inside 20-go.sh's `go test ./...` (with CI=true it fails instead of skipping when
# chromium is missing). The test drives Chromium over the DevTools protocol (chromedp) with a profile of its own in a
# temporary directory; this script only installs.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: already installed ($(chromium --version 2>/dev/null))"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed, and this script can only install it as root with apt-get; install chromium yourself" >&2
  exit 1
fi
echo "chromium: not installed; installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "chromium: installed ($(chromium --version 2>/dev/null))"

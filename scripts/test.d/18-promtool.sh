#!/usr/bin/env bash
# Installs promtool (Prometheus's rule checker) into the tools cache, from Debian's prometheus package, unpacked
# rather than installed (no Prometheus server is set up or started). app/dashboards_test.go runs it on the chart's
# alert rules and dashboard queries.
set -euo pipefail
cache=${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools}
if [ -x "$cache/promtool" ] && "$cache/promtool" --version >/dev/null 2>&1; then
  echo "promtool: $("$cache/promtool" --version 2>&1 | head -1)"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download prometheus >/dev/null 2>&1) || { apt-get update -qq && (cd "$work" && apt-get download prometheus >/dev/null); }
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$cache/promtool"
echo "promtool: installed $("$cache/promtool" --version 2>&1 | head -1)"

#!/usr/bin/env bash
# govulncheck, pinned and offline. The tool (golang.org/x/vuln v1.9.0) is built from its own module in
# tools/govulncheck (kept out of the service's go.mod); the vulnerability database is the OSV data of the pinned
# golang.org/x/vulndb module from the Go module proxy (vuln.go.dev itself is not reachable here), which
# govulncheck reads directly as a flat directory of OSV files (-db file://.../data/osv). Both are cached.
#
# It fails on any vulnerability that sluice's code reaches (govulncheck's default, symbol-level mode), except the
# standard-library entries listed in KNOWN below: they are fixed by a newer Go toolchain, which is a go.mod /
# Dockerfile change (see docs/reliability.md, "govulncheck"); they are printed on every run until then. Bump
# VULNDB to a newer pseudo-version to take in newer advisories (`go list -m -versions` does not list it; take the
# version from the module proxy's @latest of golang.org/x/vulndb or from pkg.go.dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
VULN_VERSION=v1.9.0
VULNDB=v0.0.0-20261105234957-e22db6528018
# ID fixed-in: reached by sluice's code through the standard library of go1.26.8; `toolchain go1.26.10` in go.mod
# (and GO_VERSION=1.26.10 in deploy/Dockerfile) removes every one of them (checked: "No vulnerabilities found").
KNOWN=(
  "GO-2026-6809 go1.26.10"
  "GO-2026-6617 go1.26.9" "GO-2026-6613 go1.26.9" "GO-2026-6612 go1.26.9" "GO-2026-6611 go1.26.9"
  "GO-2026-6610 go1.26.9" "GO-2026-6608 go1.26.9" "GO-2026-6607 go1.26.9" "GO-2026-6605 go1.26.9"
  "GO-2026-6603 go1.26.9"
)

CACHE="${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools}"
BIN="$CACHE/govulncheck-$VULN_VERSION"
mkdir -p "$CACHE"
if [ ! -x "$BIN" ]; then
  echo "govulncheck: building $VULN_VERSION from tools/govulncheck"
  (cd "$ROOT/tools/govulncheck" && go build -o "$BIN.tmp" golang.org/x/vuln/cmd/govulncheck)
  mv "$BIN.tmp" "$BIN"
fi
DBDIR=$(go mod download -json "golang.org/x/vulndb@$VULNDB" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$DBDIR" ] || [ ! -d "$DBDIR/data/osv" ]; then
  echo "govulncheck: golang.org/x/vulndb@$VULNDB has no data/osv directory" >&2
  exit 1
fi
echo "govulncheck $VULN_VERSION, database golang.org/x/vulndb@$VULNDB ($(ls "$DBDIR/data/osv" | wc -l) OSV entries), $(go env GOVERSION)"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
"$BIN" -db "file://$DBDIR/data/osv" ./... >"$out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
  cat "$out"
  echo "govulncheck failed to run (exit $rc)" >&2
  exit 1
fi
found=$(sed -n 's/^Vulnerability #[0-9]*: \(GO-[0-9-]*\)$/\1/p' "$out" | sort -u)
unexpected=0
for id in $found; do
  fix=""
  for k in "${KNOWN[@]}"; do
    if [ "${k%% *}" = "$id" ]; then fix="${k#* }"; fi
  done
  title=$(grep -A1 "^Vulnerability #[0-9]*: $id\$" "$out" | tail -n 1 | sed 's/^ *//')
  if [ -n "$fix" ]; then
    echo "known  $id (standard library, fixed in $fix: bump the toolchain): $title"
  else
    echo "NEW    $id: $title"
    unexpected=$((unexpected + 1))
  fi
done
for k in "${KNOWN[@]}"; do
  if ! grep -qx "${k%% *}" <<<"$found"; then
    echo "note   ${k%% *} is no longer reported: remove it from KNOWN in $0"
  fi
done
if [ "$unexpected" -gt 0 ]; then
  cat "$out"
  echo "govulncheck: $unexpected vulnerabilities reached by sluice's code that are not in KNOWN" >&2
  exit 1
fi
tail -n 4 "$out" | sed 's/^/  /'
echo "govulncheck: $(wc -w <<<"$found") reached (all known, toolchain bump pending), 0 new"

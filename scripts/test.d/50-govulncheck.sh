#!/usr/bin/env bash
# govulncheck, pinned and offline. The tool (golang.org/x/vuln v1.9.0) is built from its own module in
# tools/govulncheck (kept out of the service's go.mod); the vulnerability database is the OSV data of the pinned
# golang.org/x/vulndb module from the Go module proxy (vuln.go.dev itself is not reachable here), which
# govulncheck reads directly as a flat directory of OSV files (-db file://.../data/osv). Both are cached.
#
# It fails on any vulnerability that sluice's code reaches (govulncheck's default, symbol-level mode), except the
# entries listed in KNOWN below, which are printed on every run. KNOWN is for an advisory with no fix available
# yet; it is empty: the ten standard-library advisories that go1.26.8 reached are fixed by the toolchain go.mod
# names (go1.27.3; scripts/test exports it). Bump VULNDB to a newer pseudo-version to take in newer advisories
# (`go list -m -versions` does not list it; take the version from the module proxy's @latest of
# golang.org/x/vulndb or from pkg.go.dev).
#
# It also checks that deploy/Dockerfile builds the image with that same toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
VULN_VERSION=v1.9.0
VULNDB=v0.0.0-20261105234957-e22db6528018
# "ID reason" entries: advisories reached by sluice's code that are accepted for now (see above).
KNOWN=()

toolchain=$(sed -n 's/^toolchain go//p' go.mod)
image=$(sed -n 's/^ARG GO_VERSION=//p' deploy/Dockerfile)
if [ -n "$toolchain" ] && [ "$toolchain" != "$image" ]; then
  echo "deploy/Dockerfile builds with Go $image but go.mod's toolchain is go$toolchain: set ARG GO_VERSION=$toolchain" >&2
  exit 1
fi

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
    echo "known  $id ($fix): $title"
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
if [ -z "$found" ]; then
  echo "govulncheck: no vulnerability reached by sluice's code"
else
  echo "govulncheck: $(wc -w <<<"$found") reached, all of them listed in KNOWN; 0 new"
fi

#!/usr/bin/env bash
# Static checks, in well under a minute once the tool is cached:
#   1. the hexagonal import rules (scripts/import-rules.sh), first on a throwaway module that breaks each rule
#      (the check must catch all three), then on sluice itself;
#   2. staticcheck, pinned (honnef.co/go/tools v0.8.2 in tools/staticcheck/go.mod, built once into the tools
#      cache), with every check of its default set; findings are fixed in the code, never silenced here;
#   3. exhaustive (tools/exhaustive/go.mod, built the same way): a switch over one of sluice's enum types (an
#      algorithm, a status, an outcome) that misses a value and has no default fails, so a new algorithm cannot
#      slip past a switch written for four (the standard library's and decoders' kinds are not sluice's);
#   4. go mod tidy -diff: go.mod and go.sum say exactly what the build needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

echo "--- import rules catch a module that breaks each of them"
fixture="$(mktemp -d)"
trap 'rm -rf "$fixture"' EXIT
mkdir -p "$fixture/fakefx" "$fixture/m/domain" "$fixture/m/app" "$fixture/m/adapters/direct" "$fixture/m/adapters/indirect"
printf 'module go.uber.org/fx\n\ngo 1.22\n' >"$fixture/fakefx/go.mod"
printf 'package fx\n\nconst X = 1\n' >"$fixture/fakefx/fx.go"
printf 'module example.com/m\n\ngo 1.22\n\nrequire go.uber.org/fx v0.0.0\n\nreplace go.uber.org/fx => ../fakefx\n' >"$fixture/m/go.mod"
printf 'package domain\n\nimport "go.uber.org/fx"\n\nconst X = fx.X\n' >"$fixture/m/domain/d.go"
printf 'package app\n\nimport "go.uber.org/fx"\n\nconst X = fx.X\n' >"$fixture/m/app/a.go"
printf 'package direct\n\nimport "example.com/m/app"\n\nconst X = app.X\n' >"$fixture/m/adapters/direct/d.go"
printf 'package indirect\n\nimport "example.com/m/adapters/direct"\n\nconst X = direct.X\n' >"$fixture/m/adapters/indirect/i.go"
if out="$(bash "$ROOT/scripts/import-rules.sh" "$fixture/m" 2>&1)"; then
	echo "$out"
	echo "import-rules.sh passed a module that breaks every rule" >&2
	exit 1
fi
for want in "domain imports go.uber.org/fx" "domain depends on go.uber.org/fx" \
	"adapters/direct depends on example.com/m/app" "adapters/indirect depends on example.com/m/app" \
	"adapters/direct depends on go.uber.org/fx"; do
	if ! grep -qF "import rule: $want" <<<"$out"; then
		echo "$out"
		echo "import-rules.sh did not report: $want" >&2
		exit 1
	fi
done
echo "ok: all $(grep -c '^import rule:' <<<"$out") planted violations reported"

echo "--- import rules (sluice)"
bash "$ROOT/scripts/import-rules.sh" "$ROOT"

echo "--- staticcheck"
STATICCHECK_VERSION=$(sed -n 's/^[[:space:]]*honnef.co\/go\/tools \(v[^ ]*\).*/\1/p' tools/staticcheck/go.mod)
CACHE="${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools}"
BIN="$CACHE/staticcheck-$STATICCHECK_VERSION-$(go env GOVERSION)"
mkdir -p "$CACHE"
if [ ! -x "$BIN" ]; then
	echo "staticcheck: building $STATICCHECK_VERSION from tools/staticcheck (first run only, ~1 min)"
	(cd tools/staticcheck && GOFLAGS=-buildvcs=false go build -o "$BIN.tmp" honnef.co/go/tools/cmd/staticcheck)
	mv "$BIN.tmp" "$BIN"
fi
"$BIN" -version
"$BIN" -tests ./...
echo "staticcheck: no findings"

echo "--- exhaustive"
EXHAUSTIVE_VERSION=$(sed -n 's/^require github.com\/nishanths\/exhaustive \(v[^ ]*\).*/\1/p' tools/exhaustive/go.mod)
EBIN="$CACHE/exhaustive-$EXHAUSTIVE_VERSION-$(go env GOVERSION)"
if [ ! -x "$EBIN" ]; then
	echo "exhaustive: building $EXHAUSTIVE_VERSION from tools/exhaustive (first run only)"
	(cd tools/exhaustive && GOFLAGS=-buildvcs=false go build -o "$EBIN.tmp" github.com/nishanths/exhaustive/cmd/exhaustive)
	mv "$EBIN.tmp" "$EBIN"
fi
"$EBIN" -default-signifies-exhaustive -ignore-enum-types '^(reflect\.|go\.yaml\.in/|github\.com/go-json-experiment/)' ./...
echo "exhaustive: no findings"

echo "--- go mod tidy -diff"
go mod tidy -diff
echo "go.mod and go.sum are tidy"

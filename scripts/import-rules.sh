#!/usr/bin/env bash
# import-rules.sh [DIR]: checks the hexagonal import rules of the Go module in DIR (default: the repo root) with
# `go list` alone (no build, a few seconds). Prints one line per violation and exits 1 if there is any.
#
#   1. domain/... imports only the standard library and domain/... itself: its code and its in-package tests
#      (`package domain`), so the core never depends on a technology.
#   2. adapters/... never depend on app/, directly or through another package: app/ wires adapters, never the
#      other way round (an import cycle would follow, and the wiring would leak into the adapters).
#   3. fx (go.uber.org/fx...) is used only by app/... and the main package: no other package imports it, and no
#      library package depends on it even transitively (another command, cmd/..., may reach it through app/).
#
# External test packages (`package x_test`) are clients of the package under test: a domain external test may also
# import this module's packages (to run the Limiter against adapters/memory) but no other module, an adapter's
# external test may start the whole app (exempt from 2), and all of them count for 3. A standard-library path is
# one whose first element has no dot.
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$DIR"
MOD="$(go list -m)"

# One line per package: path, package name, then |-separated lists (space-joined) of imports, in-package test imports,
# external test imports and transitive dependencies.
listing="$(go list -f '{{.ImportPath}}|{{.Name}}|{{join .Imports " "}}|{{join .TestImports " "}}|{{join .XTestImports " "}}|{{join .Deps " "}}' ./...)"

violations=0
report() { violations=$((violations + 1)); printf 'import rule: %s\n' "$*"; }
is_std() { local first="${1%%/*}"; [[ "$first" != *.* ]]; }
rel() { local p="$1"; [[ "$p" == "$MOD" ]] && echo "." || echo "${p#"$MOD"/}"; }

while IFS='|' read -r pkg name imports testimports xtestimports deps; do
	r="$(rel "$pkg")"
	case "$r" in
	domain | domain/*)
		for imp in $imports $testimports; do
			if is_std "$imp" || [[ "$imp" == "$MOD/domain" || "$imp" == "$MOD/domain/"* ]]; then continue; fi
			report "$r imports $imp: domain/ may import only the standard library and domain/..."
		done
		for imp in $xtestimports; do
			if is_std "$imp" || [[ "$imp" == "$MOD/"* ]]; then continue; fi
			report "$r's external tests import $imp: domain tests may import the standard library and this module only"
		done
		;;
	esac
	case "$r" in
	adapters/*)
		for imp in $imports $testimports $deps; do
			if [[ "$imp" == "$MOD/app" || "$imp" == "$MOD/app/"* ]]; then
				report "$r depends on $imp: adapters never import app/ (app wires adapters)"
			fi
		done
		;;
	esac
	case "$r" in
	. | app | app/*) ;;
	*)
		# Other commands (cmd/...) may reuse app/ and so depend on fx through it, but never import it themselves.
		uses="$imports $testimports $xtestimports"
		[[ "$name" == main ]] || uses="$uses $deps"
		for imp in $uses; do
			if [[ "$imp" == go.uber.org/fx || "$imp" == go.uber.org/fx/* ]]; then
				report "$r depends on $imp: fx is used only in app/ and the main package"
				break
			fi
		done
		;;
	esac
done <<<"$listing"

if [[ "$violations" -gt 0 ]]; then
	echo "import rules: $violations violation(s) in $MOD" >&2
	exit 1
fi
echo "import rules: ok ($(wc -l <<<"$listing") packages of $MOD)"

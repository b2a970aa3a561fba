//go:build tools

// Package tools pins the exhaustiveness linter (github.com/nishanths/exhaustive) that scripts/test.d/19-static.sh
// runs: a switch over one of sluice's enums (an algorithm, a status, an outcome) that misses a value fails CI.
package tools

import _ "github.com/nishanths/exhaustive/cmd/exhaustive"

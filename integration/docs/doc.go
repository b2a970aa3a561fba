// Package docs runs the shell examples of the documentation (every Markdown file: README.md, docs/*.md, the chart's
// and the SDK's READMEs) against a real sluice built from this tree, so that none of them can rot. The convention,
// which its test enforces:
//
//   - Every fenced block has an info string (sh, console, go, text, promql, ...). An untagged block fails the
//     test, so a command cannot escape by being untagged.
//   - A `sh`, `bash`, `shell` or `console` block is a shell example and runs, unless the line just before its
//     fence is a marker comment that says otherwise (see below).
//   - `sh` blocks run as one `bash -euo pipefail` script: they pass when it exits 0 (so `curl` in a script
//     example uses --fail-with-body, and an HTTP error fails the block).
//   - `console` blocks hold `$ ` commands (a trailing `\` continues a line) and the output they print. Each output
//     line must appear, in order, in what its command printed, after digits are normalised (timings, counts and
//     ports change from run to run) and with `...` matching anything. A command ending in `&` starts something in
//     the background: the runner waits until sluice answers /readyz before the next command, and checks that
//     command's output lines anywhere in the block's output.
//   - Before each block the runner starts `sluice serve` with config/sluice.yaml on a free loopback port, and
//     rewrites localhost:8080 and 127.0.0.1:8080 in the block to that port. The block's PATH starts with the built
//     `sluice` binary.
//
// Markers (an HTML comment on the line just before the fence):
//
//	<!-- docs-test: skip REASON -->      not run; REASON is required (e.g. needs a Kubernetes cluster)
//	<!-- docs-test: env K=V ... -->      sets K=V for the server and the block (e.g. SLUICE_CONFIG=deploy/compose/config.yaml)
//	<!-- docs-test: own-server -->       the block starts its own sluice (the runner only sets SLUICE_LISTEN)
//	<!-- docs-test: serves -->           the block runs a server in the foreground: it passes once /readyz answers
//
// Several words combine in one marker: `<!-- docs-test: own-server env SLUICE_LOG_LEVEL=warn -->`.
package docs

#!/usr/bin/env bash
# Go checks: generated code current, gofmt, go vet, and every Go test under the race detector but the churn and
# holds tests (22-churn.sh runs them). With CI=true the Postgres tests must run (they fail instead of skipping when the database
# is unreachable).
set -euo pipefail

echo "--- go generate ./... leaves generated code unchanged"
generated() { git ls-files -co --exclude-standard -- '*.gen.go' 'adapters/postgres/internal/**' | sort | xargs -r sha256sum; }
before=$(generated)
go generate ./...
after=$(generated)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "generated code was stale: run 'GOTOOLCHAIN=go$(sed -n 's/^toolchain go//p' go.mod) go generate ./...' and commit the result (the embedded spec is gzipped: its bytes depend on the Go version)" >&2
  exit 1
fi

echo "--- gofmt"
unformatted=$(gofmt -l $(git ls-files -co --exclude-standard '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "--- go vet"
go vet ./...

echo "--- go test -race"
# integration/churn and integration/holds run in their own step, 22-churn.sh, with their logs shown.
go test -race -count=1 -timeout 20m $(go list ./... | grep -v -e '/integration/churn$' -e '/integration/holds$')

#!/usr/bin/env bash
# Postgres adapter checks that are not Go tests: the sqlc-generated package matches the migrations and queries
# (sqlc diff exits 1 when it is stale), and sqlc's offline vet passes. The Postgres Go tests themselves run in
# 20-go.sh with CI=true, so none of them skips.
set -euo pipefail
echo "--- sqlc diff (generated queries match migrations/ and adapters/postgres/queries/)"
if ! go tool sqlc diff; then
  echo "sqlc output is stale: run 'go generate ./...' (or 'go tool sqlc generate') and commit the result" >&2
  exit 1
fi
echo "--- sqlc vet"
go tool sqlc vet

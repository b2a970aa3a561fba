#!/usr/bin/env bash
# The churn test (integration/churn, issue 22) and the holds test (integration/holds, issue 23): real `sluice serve` replicas on memory (one), PostgreSQL, one Redis
# and a Redis Cluster (three each, one of them stale) while admin clients change and delete + re-create policies
# at random and 20 clients check; no key may admit past the bound in integration/churn/bound_test.go. About a
# minute once the binary is built (after 20-go.sh the build cache is warm; a cold build takes minutes). Its own
# step, with -v, so each store's observed maximum and bound are in this log; 20-go.sh leaves the package out of
# its `go test ./...` so it runs once (and without -race: the race detector would only slow the clients, and the
# server binary is built without it anyway). The seed is printed, and on failure with the command that repeats
# it (SLUICE_TEST_CHURN_SEED=N). With CI=true no store is skipped: a missing PostgreSQL or redis-server fails the
# step (00-postgres-up.sh and 05-redis-up.sh provide them).
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -count=1 -v -timeout 14m ./integration/churn
# The holds test (integration/holds, issue 23): 300 clients acquiring and releasing one concurrency key through
# the same replica shapes; crashed holders; a replica killed holding holds. Under a minute once built.
go test -count=1 -v -timeout 10m ./integration/holds

// Package migrations holds sluice's only database schema: goose SQL migrations (*.sql here) for tables, indexes and
// types, and the functions in functions/*.sql, one file per group, each made of CREATE OR REPLACE statements and
// applied after the migrations (and again whenever it changes) by postgres.Migrate (adapters/postgres/functions.go).
// Both are embedded so the binary migrates itself (`sluice migrate up`, or at start-up when postgres.migrate_on_start
// is set). sqlc reads both directories (sqlc.yaml at the repository root), so the queries are checked against exactly
// this schema and these functions.
//
// Changing a function file: raise its first line, "-- revision: N", so that no older build re-applies its own copy
// over it; a function whose arguments change is dropped first (DROP FUNCTION IF EXISTS with the old arguments) in the
// same file. The previous release keeps calling the functions its queries name (sluice_decide_batch, sluice_put_policy,
// sluice_register_config_policy) during a rolling upgrade: their arguments and results must keep working for it.
package migrations

import "embed"

// FS holds the migration files (the root) and the function files (functions/).
//
//go:embed *.sql functions/*.sql
var FS embed.FS

// Package migrations holds sluice's only database schema: goose SQL migrations (*.sql here) for tables, indexes and
// types, and the functions in functions/*.sql, one file per group, each made of CREATE OR REPLACE statements and
// applied after the migrations (and again whenever it changes) by adapters/postgres/migrate.go. Both are embedded
// so the binary migrates itself (`sluice migrate up`, or at start-up when postgres.migrate_on_start is set). sqlc
// reads both directories (sqlc.yaml at the repository root), so the queries are checked against exactly this
// schema and these functions.
package migrations

import "embed"

// FS holds the migration files (the root) and the function files (functions/).
//
//go:embed *.sql functions/*.sql
var FS embed.FS

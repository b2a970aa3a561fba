// Package migrations holds sluice's only database schema: goose SQL migrations, embedded so the binary migrates
// itself (`sluice migrate up`, or at start-up when postgres.migrate_on_start is set). sqlc reads the same files
// (sqlc.yaml at the repository root), so the queries are checked against exactly this schema.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

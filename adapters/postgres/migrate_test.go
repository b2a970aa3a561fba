package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/migrations"
)

// Every migration goes down and up again cleanly, leaving no object behind.
func TestMigrationsDownAndUp(t *testing.T) {
	url := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithTableName("sluice_goose_db_version"), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'sluice\_%' AND tablename <> 'sluice_goose_db_version')
		+ (SELECT count(*) FROM pg_proc WHERE proname LIKE 'sluice\_%')`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d sluice tables or functions left after migrating down", left)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
}

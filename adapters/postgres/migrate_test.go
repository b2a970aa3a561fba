package postgres_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
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

// A database a build before migrations/functions/ migrated to version 3 holds that build's functions (frozen in
// testdata/v3_functions.sql) and state they wrote. Migrating it with this build replaces every function (the old
// sluice_step signature included), keeps the state, and decides on: a token bucket's units written before the
// upgrade still count under the limit that wrote them.
func TestUpgradeFromVersion3(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	sqlDB := stdlib.OpenDB(*cfg)
	defer sqlDB.Close()
	ctx := context.Background()
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS, goose.WithTableName("sluice_goose_db_version"), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile("testdata/v3_functions.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlDB.ExecContext(ctx, string(old)); err != nil {
		t.Fatal(err)
	}

	f := &conversionFixture{t: t, clock: clocktest.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)), ctx: ctx}
	f.s = open(t, postgres.Options{URL: url, Clock: f.clock})
	if err := f.s.Ping(ctx); err == nil {
		t.Fatal("Ping at version 3 succeeded")
	}
	f.put(domain.TokenBucket, 8, 24*time.Hour)
	if got := f.checks(5, 1); got != 5 {
		t.Fatalf("old functions: %d admitted, want 5", got)
	}

	res, err := postgres.Migrate(ctx, url, postgres.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	for _, r := range res {
		applied = append(applied, r.Source.Path)
	}
	files, _ := fs.Glob(migrations.FS, "functions/*.sql")
	later, _ := fs.Glob(migrations.FS, "0000[4-9]_*.sql") // the migrations after version 3
	if len(res) != len(later)+len(files) || applied[0] != "00004_function_files.sql" {
		t.Fatalf("applied %v, want %v and every function file %v", applied, later, files)
	}
	if err := f.s.Ping(ctx); err != nil {
		t.Fatalf("Ping after migrating: %v", err)
	}
	var steps int
	if err := sqlDB.QueryRowContext(ctx, "SELECT count(*) FROM pg_proc WHERE proname = 'sluice_step'").Scan(&steps); err != nil || steps != 1 {
		t.Fatalf("%d sluice_step functions (%v), want 1: the old signature dropped", steps, err)
	}
	// The worked example across the upgrade: 5 units under 8/1d deny under 3/1d, and leave 3 under sliding_log 8/1d.
	f.put(domain.TokenBucket, 3, 24*time.Hour)
	if got := f.checks(3, 1); got != 0 {
		t.Fatalf("token_bucket 3/1d after the upgrade: %d admitted, want 0", got)
	}
	f.put(domain.SlidingLog, 8, 24*time.Hour)
	if got := f.checks(5, 1); got != 3 {
		t.Fatalf("sliding_log 8/1d after the upgrade: %d admitted, want 3", got)
	}
	if res, err := postgres.Migrate(ctx, url, postgres.MigrateOptions{}); err != nil || len(res) != 0 {
		t.Fatalf("second migrate applied %d (%v), want nothing", len(res), err)
	}
}

// A function file is applied again only when it changed (same revision, other contents) or its revision is
// newer than the database's; one the database holds at a newer revision (a newer build's, during a rolling
// upgrade) is left in place, and Ping accepts it.
func TestFunctionFilesAppliedOnlyWhenChanged(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := open(t, postgres.Options{URL: url})
	exec := func(sql string) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	migrate := func() []string {
		t.Helper()
		res, err := postgres.Migrate(ctx, url, postgres.MigrateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, r := range res {
			paths = append(paths, r.Source.Path)
		}
		return paths
	}
	if got := migrate(); len(got) != 0 {
		t.Fatalf("a migrated database: applied %v, want nothing", got)
	}
	exec("UPDATE sluice_function_files SET sha256 = 'edited' WHERE name = '21_step_token_bucket.sql'")
	exec("UPDATE sluice_function_files SET revision = 0 WHERE name = '10_arithmetic.sql'")
	exec("UPDATE sluice_function_files SET revision = revision + 1, sha256 = 'newer' WHERE name = '40_decide_batch.sql'")
	if got := fmt.Sprint(migrate()); got != "[functions/10_arithmetic.sql functions/21_step_token_bucket.sql]" {
		t.Fatalf("applied %s, want the older and the edited file only", got)
	}
	var sum string
	if err := s.Pool().QueryRow(ctx, "SELECT sha256 FROM sluice_function_files WHERE name = '40_decide_batch.sql'").Scan(&sum); err != nil || sum != "newer" {
		t.Fatalf("the newer revision was replaced: %q, %v", sum, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with a newer function file: %v", err)
	}
	exec("UPDATE sluice_function_files SET revision = 0 WHERE name = '50_policies.sql'")
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with an older function file succeeded")
	}
}

package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/sluice-dev/sluice/migrations"
)

// versionTable is goose's bookkeeping table. It has sluice's prefix so sluice can share a database with other
// applications that use goose.
const versionTable = "sluice_goose_db_version"

// migrateLockID is the session advisory lock replicas take to migrate one at a time ("sluice" in ASCII, then 1).
const migrateLockID int64 = 0x736c7569636501

// LatestVersion is the newest migration version embedded in this build.
func LatestVersion() (int64, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, name := range names {
		digits, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(digits, 10, 64)
		if !ok || err != nil {
			return 0, fmt.Errorf("postgres: migration %q does not start with a version number", name)
		}
		latest = max(latest, v)
	}
	return latest, nil
}

// MigrateOptions configure Migrate and MigrationStatus.
type MigrateOptions struct {
	// LockWait bounds the wait for another replica's migration (polled every second); ≤ 0 means 5 minutes.
	LockWait time.Duration
	Logger   *slog.Logger
}

// openMigrator opens a database/sql handle without the decision path's statement timeout (a migration may take
// longer than a check), a goose provider over the embedded migrations, and the session advisory lock replicas
// take to migrate one at a time (Migrate holds it across the migrations and the function files).
func openMigrator(url string, o MigrateOptions) (*goose.Provider, *sql.DB, lock.SessionLocker, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("postgres: database URL: %w", redactErr(err))
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["application_name"] = "sluice-migrate"
	sqlDB := stdlib.OpenDB(*cfg)
	if o.LockWait <= 0 {
		o.LockWait = 5 * time.Minute
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrateLockID), lock.WithLockTimeout(1, uint64(o.LockWait/time.Second)))
	if err != nil {
		sqlDB.Close()
		return nil, nil, nil, err
	}
	opts := []goose.ProviderOption{goose.WithTableName(versionTable), goose.WithDisableGlobalRegistry(true)}
	if o.Logger != nil {
		opts = append(opts, goose.WithSlog(o.Logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS, opts...)
	if err != nil {
		sqlDB.Close()
		return nil, nil, nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	return p, sqlDB, locker, nil
}

// Migrate applies every pending migration, then every function file that is new or changed (applyFunctions),
// holding a session advisory lock throughout, so replicas starting together migrate one after another (builds
// before the function files took the same lock, through goose, for their migrations alone). It reports what it
// applied: the migrations, then one result per function file (Source.Path "functions/NAME.sql", version 0).
func Migrate(ctx context.Context, url string, o MigrateOptions) ([]*goose.MigrationResult, error) {
	p, sqlDB, locker, err := openMigrator(url, o)
	if err != nil {
		return nil, err
	}
	defer sqlDB.Close()
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", redactErr(err))
	}
	defer conn.Close()
	if err := locker.SessionLock(ctx, conn); err != nil {
		return nil, fmt.Errorf("postgres: migrate: another replica holds the migration lock: %w", err)
	}
	defer locker.SessionUnlock(context.WithoutCancel(ctx), conn)
	res, err := p.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("postgres: migrate up: %w", err)
	}
	fres, err := applyFunctions(ctx, conn, o.Logger)
	res = append(res, fres...)
	if err != nil {
		return res, fmt.Errorf("postgres: migrate functions: %w", err)
	}
	return res, nil
}

// MigrationStatus reports every migration and whether it is applied. The function files are not listed: Migrate
// applies whichever are new or changed every time it runs, and Ping reports a database whose files are older
// than this build's.
func MigrationStatus(ctx context.Context, url string, o MigrateOptions) ([]*goose.MigrationStatus, error) {
	p, sqlDB, _, err := openMigrator(url, o)
	if err != nil {
		return nil, err
	}
	defer sqlDB.Close()
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: migration status: %w", err)
	}
	return st, nil
}

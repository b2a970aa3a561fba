// Package pgtest gives tests their own PostgreSQL databases and, for tests that stop the server, their own
// private clusters.
//
// NewDatabase creates a migrated database on the shared server (SLUICE_TEST_DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) by cloning a template database migrated once per
// schema version, and drops it when the test ends. StartCluster runs initdb and pg_ctl (as the postgres user when
// the test runs as root, since initdb refuses root) in a temporary directory on a free port; stopping it never
// touches the shared server.
//
// When PostgreSQL is not reachable (or not installed, for clusters) the test is skipped, unless CI=true, in which
// case it fails: CI runs every Postgres test.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/migrations"
)

// DefaultAdminURL is the shared server's maintenance database, used when SLUICE_TEST_DATABASE_URL is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL is the URL of a database on the shared server that tests may connect to in order to create theirs.
func AdminURL() string {
	if u := os.Getenv("SLUICE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultAdminURL
}

// InCI reports whether CI=true: Postgres tests must then run, not skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test, or fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and "+format, args...)
	}
	t.Skipf(format+" (set CI=true to make this a failure)", args...)
}

// WithDatabase returns u with its database name replaced.
func WithDatabase(u, name string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("SLUICE_TEST_DATABASE_URL must be a postgres:// URL: %w", err)
	}
	p.Path = "/" + name
	return p.String(), nil
}

var (
	templateMu   sync.Mutex
	templateName = map[string]string{} // admin URL → template database ready in this process
)

// NewDatabase creates a fresh database with every migration applied and returns its URL. It is dropped (with
// FORCE, closing leftover connections) when the test and its subtests end.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return NewDatabaseOn(t, AdminURL())
}

// NewDatabaseOn is NewDatabase on the server of adminURL (e.g. a private cluster).
func NewDatabaseOn(t testing.TB, adminURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := connect(ctx, adminURL)
	if err != nil {
		Unavailable(t, "PostgreSQL is not reachable at %s: %v", redact(adminURL), err)
	}
	defer admin.Close(context.Background())
	tmpl, err := ensureTemplate(ctx, admin, adminURL)
	if err != nil {
		t.Fatalf("pgtest: template database: %v", err)
	}
	name := "sluice_test_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(tmpl)); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() { DropDatabase(t, adminURL, name) })
	u, err := WithDatabase(adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// NewEmptyDatabase creates a database without migrations (for migration tests) and returns its URL.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	return NewEmptyDatabaseOn(t, AdminURL())
}

// NewEmptyDatabaseOn is NewEmptyDatabase on the server of adminURL.
func NewEmptyDatabaseOn(t testing.TB, adminURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := connect(ctx, adminURL)
	if err != nil {
		Unavailable(t, "PostgreSQL is not reachable at %s: %v", redact(adminURL), err)
	}
	defer admin.Close(context.Background())
	name := "sluice_test_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() { DropDatabase(t, adminURL, name) })
	u, err := WithDatabase(adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// DropDatabase drops a test database, closing its connections.
func DropDatabase(t testing.TB, adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := connect(ctx, adminURL)
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
	}
}

func connect(ctx context.Context, u string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = 3 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// templateLockID serialises template creation across test processes (go test runs packages in parallel).
const templateLockID int64 = 0x736c75696365ff

// ensureTemplate returns a template database migrated to this build's schema, creating it once per schema
// (its name carries a hash of the migration files) and server.
func ensureTemplate(ctx context.Context, admin *pgx.Conn, adminURL string) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	if name, ok := templateName[adminURL]; ok {
		return name, nil
	}
	sum, err := schemaHash()
	if err != nil {
		return "", err
	}
	name := "sluice_tmpl_" + sum
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockID); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", templateLockID)
	var isTemplate *bool
	err = admin.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&isTemplate)
	if err != nil && err != pgx.ErrNoRows {
		return "", err
	}
	if isTemplate == nil || !*isTemplate {
		// Absent, or left half-made by a process that died: (re)make it.
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			return "", err
		}
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
			return "", err
		}
		u, err := WithDatabase(adminURL, name)
		if err != nil {
			return "", err
		}
		if _, err := postgres.Migrate(ctx, u, postgres.MigrateOptions{}); err != nil {
			return "", err
		}
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
			return "", err
		}
		// Templates of older schemas are of no further use, but other checkouts testing other schemas at the same
		// time (worktrees, branches) still need theirs: keep the newest few (oids grow with creation).
		rows, err := admin.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'sluice\\_tmpl\\_%' AND datname <> $1 ORDER BY oid DESC OFFSET 5", name)
		if err != nil {
			return "", err
		}
		old, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return "", err
		}
		for _, o := range old {
			admin.Exec(ctx, "ALTER DATABASE "+ident(o)+" WITH IS_TEMPLATE false")
			admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(o)+" WITH (FORCE)")
		}
	}
	templateName[adminURL] = name
	return name, nil
}

func schemaHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func randomSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return p.Redacted()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

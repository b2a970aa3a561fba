package postgres

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"strconv"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/sluice-dev/sluice/migrations"
)

// functionsTable records which function files (migrations/functions/) a database holds: name, revision, sha256.
// Migration 00004 creates it.
const functionsTable = "sluice_function_files"

// functionFile is one embedded file of migrations/functions/.
type functionFile struct {
	name     string // base name, e.g. "40_decide_batch.sql"
	revision int    // from its first line, "-- revision: N"
	sum      string // hex sha256 of its contents
	text     string
}

var revisionLine = regexp.MustCompile(`\A-- revision: ([0-9]+)\n`)

// functionFiles returns the embedded function files in name order (the order they are applied in).
func functionFiles() ([]functionFile, error) {
	names, err := fs.Glob(migrations.FS, "functions/*.sql")
	if err != nil {
		return nil, err
	}
	files := make([]functionFile, 0, len(names))
	for _, name := range names { // fs.Glob returns names sorted
		b, err := fs.ReadFile(migrations.FS, name)
		if err != nil {
			return nil, err
		}
		m := revisionLine.FindSubmatch(b)
		if m == nil {
			return nil, fmt.Errorf("postgres: function file %s does not start with a line \"-- revision: N\"", name)
		}
		rev, err := strconv.Atoi(string(m[1]))
		if err != nil || rev < 1 {
			return nil, fmt.Errorf("postgres: function file %s: revision %q is not a positive integer", name, m[1])
		}
		sum := sha256.Sum256(b)
		files = append(files, functionFile{name: path.Base(name), revision: rev, sum: hex.EncodeToString(sum[:]), text: string(b)})
	}
	return files, nil
}

// applyFunctions applies, in one transaction, every function file the database does not hold yet, holds at an
// older revision, or holds at the same revision with other contents (a file edited without its revision raised),
// and records each. A file the database holds at a newer revision (applied by a newer build during a rolling
// upgrade) is left alone. The caller holds the migration lock; all-or-nothing, so the decision functions a
// database holds always come from one build.
func applyFunctions(ctx context.Context, conn *sql.Conn, log *slog.Logger) ([]*goose.MigrationResult, error) {
	files, err := functionFiles()
	if err != nil {
		return nil, err
	}
	held := map[string]functionFile{}
	rows, err := conn.QueryContext(ctx, "SELECT name, revision, sha256 FROM "+functionsTable)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var f functionFile
		if err := rows.Scan(&f.name, &f.revision, &f.sum); err != nil {
			rows.Close()
			return nil, err
		}
		held[f.name] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var todo []functionFile
	for _, f := range files {
		h, ok := held[f.name]
		switch {
		case !ok || h.revision < f.revision || (h.revision == f.revision && h.sum != f.sum):
			todo = append(todo, f)
		case h.revision > f.revision && log != nil:
			log.Info("postgres: the database holds a newer revision of a function file; left in place", "file", f.name, "held", h.revision, "this_build", f.revision)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res := make([]*goose.MigrationResult, 0, len(todo))
	for _, f := range todo {
		start := time.Now()
		if _, err := tx.ExecContext(ctx, f.text); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+functionsTable+" (name, revision, sha256) VALUES ($1, $2, $3) "+
			"ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, sha256 = excluded.sha256, applied_at = now()",
			f.name, f.revision, f.sum); err != nil {
			return nil, err
		}
		res = append(res, &goose.MigrationResult{
			Source:    &goose.Source{Type: goose.TypeSQL, Path: "functions/" + f.name},
			Duration:  time.Since(start),
			Direction: "up",
		})
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	if log != nil {
		for _, r := range res {
			log.Info("postgres: applied function file", "file", r.Source.Path)
		}
	}
	return res, nil
}

// functionsQuery counts the embedded function files the database holds at this build's revision or a newer one,
// alongside the newest migration version: one statement for Ping.
const functionsQuery = "SELECT (SELECT max(version_id) FROM " + versionTable + "), " +
	"(SELECT count(*) FROM " + functionsTable + " f JOIN unnest($1::text[], $2::int[]) AS u(name, revision) " +
	"ON f.name = u.name AND f.revision >= u.revision)"

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
)

// decideStatement is the statement sluice's Postgres store sends for one check (adapters/postgres/queries/
// decide.sql, query DecideBatch: every decision, single or batched, goes through sluice_decide_batch), for one
// check, with pgbench variables for its parameters. sluice passes NULL for now_us (the database clock decides) and
// lock_wait_ms; pgbench cannot bind a NULL variable, so they are NULL literals of the same type.
// TestStatementMatchesStore keeps this in step with the store's query file.
const decideStatement = `SELECT d.status::smallint[] AS status, d.allowed::boolean[] AS allowed, d.lim::bigint[] AS lim,
       d.remaining::bigint[] AS remaining, d.reset_after_us::bigint[] AS reset_after_us,
       d.retry_after_us::bigint[] AS retry_after_us
FROM sluice_decide_batch(ARRAY[:policies::text], ARRAY[:keys::bytea], ARRAY[:algs::text], ARRAY[:limits::bigint],
                         ARRAY[:windows_us::bigint], ARRAY[:res_us::bigint], ARRAY[:floors_us::bigint], ARRAY[:gens::bigint],
                         ARRAY[:costs::bigint], ARRAY[:shadows::boolean], ARRAY[:stored::boolean], :atomic::boolean,
                         NULL::bigint, NULL::integer) AS d;
`

// pgbenchScript is the custom script for a shape: uniform draws a key per transaction as the load generator does
// (decimal keys 1..keys); the hot shapes use the constant key set with -D.
func pgbenchScript(shape string, keys int) string {
	if shape == "uniform" {
		return `\set keys random(1, ` + strconv.Itoa(keys) + ")\n" + decideStatement
	}
	return decideStatement
}

func runPostgres(ctx context.Context, o options, out io.Writer, rows []row, ratios []string) ([]row, []string, error) {
	admin, err := pgx.ParseConfig(o.adminURL)
	if err != nil {
		return nil, nil, fmt.Errorf("-database-url: %w", err)
	}
	if err := requireLoopback(net.JoinHostPort(admin.Host, strconv.Itoa(int(admin.Port)))); err != nil {
		return nil, nil, fmt.Errorf("-database-url: %w", err)
	}
	if _, err := exec.LookPath(o.pgbench); err != nil {
		return nil, nil, fmt.Errorf("pgbench not found (%s): install the postgresql-client package: %w", o.pgbench, err)
	}
	dbName, dbURL, drop, err := createDatabase(ctx, o.adminURL)
	if err != nil {
		return nil, nil, err
	}
	defer drop()
	fmt.Fprintf(out, "postgres: throwaway database %s (dropped at the end)\n", dbName)
	if _, err := postgres.Migrate(ctx, dbURL, postgres.MigrateOptions{}); err != nil {
		return nil, nil, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	truncate := func() error {
		if _, err := conn.Exec(ctx, "TRUNCATE sluice_buckets CASCADE"); err != nil {
			return err
		}
		return prefillPostgres(ctx, conn, o)
	}
	for _, shape := range o.shapes {
		// Each run starts from an empty table.
		rs, r, err := rounds(o.rounds, "postgres "+fmt.Sprintf("%-8s", shape)+" sluice/pgbench",
			func(int) (row, error) {
				if err := truncate(); err != nil {
					return row{}, err
				}
				return runPgbench(ctx, o, out, dbURL, shape)
			},
			func(round int) (row, error) {
				if err := truncate(); err != nil {
					return row{}, err
				}
				profile := ""
				if round == 0 {
					profile = profilePath(o, "sluice", "postgres", shape)
				}
				return measure(ctx, o, out, "postgres", shape, "sluice", sluiceArgs(o, "postgres", dbURL), profile)
			})
		if err != nil {
			return nil, nil, err
		}
		rows, ratios = append(rows, rs...), append(ratios, r)
	}
	return rows, ratios, nil
}

// createDatabase makes sluice_bench_<random> and returns its URL and a function that drops it.
func createDatabase(ctx context.Context, adminURL string) (name, dbURL string, drop func(), err error) {
	var b [6]byte
	rand.Read(b[:])
	name = "sluice_bench_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", "", nil, fmt.Errorf("connect to %s: %w", redactURL(adminURL), err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", nil, err
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", "", nil, err
	}
	u.Path = "/" + name
	drop = func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(dctx, adminURL)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice-bench: drop %s: %v\n", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "sluice-bench: drop %s: %v\n", name, err)
		}
	}
	return name, u.String(), drop, nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+) `)

// runPgbench runs pgbench with sluice's statement at the same concurrency and duration as the load generator:
// a warm-up run, then a measured run with per-transaction logging for the percentiles.
func runPgbench(ctx context.Context, o options, out io.Writer, dbURL, shape string) (row, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return row{}, err
	}
	dir, err := os.MkdirTemp("", "sluice-bench-pgbench-")
	if err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "decide.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript(shape, o.keys)), 0o644); err != nil {
		return row{}, err
	}
	p := o.benchPolicy(o.pgWindow)
	if shape == "hot-deny" {
		p = tightPolicyOf(o)
	}
	base := []string{
		"-h", cfg.Host, "-p", strconv.Itoa(int(cfg.Port)), "-U", cfg.User, "-n", "-M", "prepared",
		"-c", strconv.Itoa(o.conns), "-j", "2", "-f", script,
		"-D", "policies=" + p.Name, "-D", "keys=hot", "-D", "algs=" + string(p.Algorithm),
		"-D", "limits=" + strconv.FormatInt(p.Limit, 10), "-D", "windows_us=" + strconv.FormatInt(p.Window.Microseconds(), 10),
		"-D", "res_us=" + strconv.FormatInt(p.Resolution.Microseconds(), 10), "-D", "floors_us=0", "-D", "gens=0",
		"-D", "costs=1", "-D", "shadows=false", "-D", "stored=false", "-D", "atomic=false",
	}
	pgOnce := func(extra ...string) ([]byte, error) {
		args := append(append(append([]string{}, base...), extra...), cfg.Database)
		cmd := exec.CommandContext(ctx, o.pgbench, args...)
		cmd.Dir = dir
		cmd.Env = os.Environ()
		if cfg.Password != "" {
			cmd.Env = append(cmd.Env, "PGPASSWORD="+cfg.Password)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("pgbench: %v\n%s%s", err, b, stderr.Bytes())
		}
		return b, nil
	}
	// A shared server may be short of connection slots for a moment (other clients, sluice's pool closing):
	// retry a few times rather than lose the run.
	pg := func(extra ...string) ([]byte, error) {
		for try := 1; ; try++ {
			b, err := pgOnce(extra...)
			if err == nil || try == 5 || !strings.Contains(err.Error(), "too many clients") {
				return b, err
			}
			fmt.Fprintf(out, "  pgbench: the server is out of connection slots; retrying in 3 s (%d/5)\n", try)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(3 * time.Second):
			}
		}
	}
	if o.warmup > 0 {
		if _, err := pg("-T", strconv.Itoa(max(1, int(o.warmup.Round(time.Second).Seconds())))); err != nil {
			return row{}, err
		}
	}
	secs := max(1, int(o.duration.Round(time.Second).Seconds()))
	stdout, err := pg("-T", strconv.Itoa(secs), "-l", "--log-prefix", filepath.Join(dir, "txn"))
	if err != nil {
		return row{}, err
	}
	m := tpsLine.FindSubmatch(stdout)
	if m == nil {
		return row{}, fmt.Errorf("pgbench: no tps line in its output:\n%s", stdout)
	}
	tps, _ := strconv.ParseFloat(string(m[1]), 64)
	lat, n, err := readPgbenchLogs(dir)
	if err != nil {
		return row{}, err
	}
	r := row{store: "postgres", shape: shape, target: "pgbench", rate: tps, p50: lat.quantile(0.5), p99: lat.quantile(0.99), allowedPct: -1}
	fmt.Fprintf(out, "%-8s %-8s %-8s %10.0f decisions/s  p50 %-9s p99 %-9s (%d transactions logged)\n",
		"postgres", shape, "pgbench", r.rate, fmtDur(r.p50), fmtDur(r.p99), n)
	return r, nil
}

// readPgbenchLogs reads pgbench's per-transaction logs (txn.<pid>[.<thread>]): the third field is the latency in
// microseconds.
func readPgbenchLogs(dir string) (*hist, int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "txn.*"))
	if err != nil {
		return nil, 0, err
	}
	h := &hist{}
	n := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			us, err := strconv.ParseInt(fields[2], 10, 64)
			if err != nil {
				continue
			}
			h.record(time.Duration(us) * time.Microsecond)
			n++
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, 0, err
		}
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("pgbench wrote no transaction log in %s", dir)
	}
	return h, n, nil
}

// prefillPostgres fills the uniform shape's keys to -fill of the bench policy's limit, as state the policy's
// algorithm would have after an hour of traffic: sliding_log as that many distinct instants over the last window
// (the state a hot API key has), sliding_window as its resolution's buckets, token_bucket and fixed_window as their
// one instant. Written with the database clock, like sluice's decisions.
func prefillPostgres(ctx context.Context, conn *pgx.Conn, o options) error {
	if o.fill <= 0 {
		return nil
	}
	p := o.benchPolicy(o.pgWindow)
	units := int64(o.fill * float64(p.Limit))
	if units < 1 {
		return nil
	}
	w, res := p.Window.Microseconds(), max(p.Resolution.Microseconds(), 1)
	entries := units // sliding_log: one unit per instant
	if p.Algorithm == domain.SlidingWindow {
		entries = min(units, w/res)
	}
	// Entries spread over the window's last 90 %, oldest first; each holds units/entries (the last the rest).
	_, err := conn.Exec(ctx, `
WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us),
keys AS (SELECT k FROM generate_series(1, $1::int) AS k)
INSERT INTO sluice_buckets (policy, key, alg, gen, ats, cums, base, a, f, c, newest_us, window_us, expires_us)
SELECT $2::text, convert_to(k::text, 'UTF8'), $3::text, 0,
       CASE WHEN $3::text IN ('sliding_log', 'sliding_window') THEN
         ARRAY(SELECT CASE WHEN $3::text = 'sliding_window' THEN ((now.us - $4::bigint * 9 / 10 + i * ($4::bigint * 9 / 10) / $6::bigint) / $7::bigint + 1) * $7::bigint
                           ELSE now.us - $4::bigint * 9 / 10 + i * ($4::bigint * 9 / 10) / $6::bigint END
               FROM generate_series(1, $6::bigint) AS i ORDER BY i)
       ELSE '{}'::bigint[] END,
       CASE WHEN $3::text IN ('sliding_log', 'sliding_window') THEN
         ARRAY(SELECT CASE WHEN i = $6::bigint THEN $5::bigint ELSE i * ($5::bigint / $6::bigint) END FROM generate_series(1, $6::bigint) AS i ORDER BY i)
       ELSE '{}'::bigint[] END,
       0,
       CASE WHEN $3::text = 'token_bucket' THEN now.us + ($5::numeric * $4::bigint / $8::bigint)::bigint ELSE now.us END,
       CASE WHEN $3::text = 'fixed_window' THEN $5::bigint ELSE 0 END,
       CASE WHEN $3::text = 'token_bucket' THEN $8::bigint ELSE 0 END,
       now.us, $4::bigint, now.us + $4::bigint
FROM keys, now`, o.keys, p.Name, string(p.Algorithm), w, units, entries, res, p.Limit)
	if err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	if p.Algorithm == domain.SlidingLog {
		// sliding_log's log lives in sluice_log_entries, one row per instant; its key row keeps the newest.
		_, err = conn.Exec(ctx, `
INSERT INTO sluice_log_entries (policy, key, at, cum)
SELECT b.policy, b.key, u.at, u.cum FROM sluice_buckets b, unnest(b.ats, b.cums) AS u(at, cum) WHERE b.policy = $1`, p.Name)
		if err == nil {
			_, err = conn.Exec(ctx, `UPDATE sluice_buckets SET a = ats[cardinality(ats)], f = cums[cardinality(cums)], c = 1,
    ats = '{}', cums = '{}' WHERE policy = $1`, p.Name)
		}
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
	}
	_, err = conn.Exec(ctx, "VACUUM ANALYZE sluice_buckets, sluice_log_entries")
	return err
}

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
)

// decideStatement is the statement sluice's Postgres store sends for one check (adapters/postgres/queries/
// decide.sql, query Decide), with pgbench variables for its parameters. sluice passes NULL for now_us (the
// database clock decides); pgbench cannot bind a NULL variable, so it is written as a NULL literal of the same
// type. TestStatementMatchesStore keeps this in step with the store's query file.
const decideStatement = `SELECT d.allowed::boolean AS allowed, d.remaining::bigint AS remaining,
       d.reset_after_us::bigint AS reset_after_us, d.retry_after_us::bigint AS retry_after_us
FROM sluice_decide(:policy::text, :key::bytea, :lim::bigint, :window_us::bigint, :cost::bigint,
                   NULL::bigint) AS d;
`

// pgbenchScript is the custom script for a shape: uniform draws a key per transaction as the load generator does
// (decimal keys 1..keys); the hot shapes use the constant key set with -D.
func pgbenchScript(shape string, keys int) string {
	if shape == "uniform" {
		return `\set key random(1, ` + strconv.Itoa(keys) + ")\n" + decideStatement
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
		_, err := conn.Exec(ctx, "TRUNCATE sluice_buckets")
		return err
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
					profile = profilePath(o, "postgres", shape)
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
	policy, lim, window := benchPolicy, int64(benchLimit), o.pgWindow
	if shape == "hot-deny" {
		policy, lim, window = tightPolicy, tightLimit, tightWindow
	}
	base := []string{
		"-h", cfg.Host, "-p", strconv.Itoa(int(cfg.Port)), "-U", cfg.User, "-n", "-M", "prepared",
		"-c", strconv.Itoa(o.conns), "-j", "2", "-f", script,
		"-D", "policy=" + policy, "-D", "key=hot", "-D", "lim=" + strconv.FormatInt(lim, 10),
		"-D", "window_us=" + strconv.FormatInt(window.Microseconds(), 10), "-D", "cost=1",
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

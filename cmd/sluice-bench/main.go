// Command sluice-bench measures sluice against a floor and against pgbench, on this machine's loopback only.
//
// In one bounded run it starts, one after the other and each in its own process (so the load generator's
// goroutines and garbage collector stay out of the server's process):
//
//   - the floor: a minimal net/http server that decodes the same JSON check body and answers from a
//     mutex-guarded map (no sluice code);
//   - sluice itself (app.Run, the code of `sluice serve`), on the memory store and/or the Postgres store;
//
// and drives each with the same closed-loop load: -conns persistent HTTP/1.1 connections, each sending its next
// POST /v1/check as soon as the previous answer is in, for -warmup (not measured) and then -duration. Shapes:
// uniform (-keys keys, uniformly at random), hot (one key), hot-deny (one key of a 100-per-second policy, so
// nearly every check is a denial). It prints decisions/s, p50 and p99 and the ratios sluice/floor.
//
// For the Postgres store it creates a throwaway database (sluice_bench_<random>) on the -database-url server
// (which must be on loopback), migrates it, runs sluice on it, then runs pgbench with the exact statement sluice's
// store sends, at the same concurrency, and prints sluice/pgbench. The database is dropped afterwards.
//
// The load generator shares the machine's cores with the server under test; it is kept cheap (pre-encoded
// requests, a minimal response reader), and the ratios are measured in the same run, so machine noise and the
// generator's cost apply to both sides. See docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/app"
	"github.com/sluice-dev/sluice/domain"
)

// The policies both servers know. bench admits (nearly) everything, so the throughput shapes measure the
// admission path; bench-tight denies nearly every check of a hot key.
const (
	benchPolicy  = "bench"
	benchLimit   = 1_000_000_000
	tightPolicy  = "bench-tight"
	tightLimit   = 100
	tightWindow  = time.Second
	defaultAdmin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

type options struct {
	duration, warmup time.Duration
	conns, keys      int
	rounds           int
	slices           int // > 0: runAgainstFloor interleaves the two servers in this many slice pairs
	shapes           []string
	stores           []string
	window           time.Duration // bench's window on the memory store
	pgWindow         time.Duration // bench's window on the Postgres store
	adminURL         string
	pgbench          string
	pgMaxConns       int
	pgLanes          int
	redisAddr        string // the Redis of -store redis (loopback)
	profileDir       string
	markdown         string
	algorithm        string  // the bench policy's algorithm
	limit            int64   // the bench policy's limit
	fill             float64 // fraction of the limit the uniform shape's keys hold before the run
}

// benchPolicy is the policy the uniform and hot shapes check.
func (o options) benchPolicy(window time.Duration) domain.Policy {
	return domain.Policy{Name: benchPolicy, Limit: o.limit, Window: window, Algorithm: domain.Algorithm(o.algorithm)}.WithDefaults()
}

// tightPolicyOf is hot-deny's policy: 100 per second, under the bench policy's algorithm.
func tightPolicyOf(o options) domain.Policy {
	return domain.Policy{Name: tightPolicy, Limit: tightLimit, Window: tightWindow, Algorithm: domain.Algorithm(o.algorithm)}.WithDefaults()
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-child" {
		if err := child(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "sluice-bench child:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var shapes, stores string
	fs := flag.NewFlagSet("sluice-bench", flag.ExitOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up per run")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections (closed loop)")
	fs.IntVar(&o.keys, "keys", 10_000, "keys of the uniform shape")
	fs.IntVar(&o.rounds, "rounds", 1, "measure each pair (floor or pgbench, and sluice) this many times, alternating which goes first, and report the median ratio")
	fs.IntVar(&o.slices, "slices", 0, "against the floor: keep both servers up and measure them in this many alternating pairs of -duration each (each after a -warmup), taking the median of the pairs' ratios, so a drift in the machine's speed between runs cancels out; 0: one run per server per round (-rounds)")
	fs.StringVar(&shapes, "shapes", "uniform,hot,hot-deny", "comma-separated: uniform, hot, hot-deny")
	fs.StringVar(&stores, "store", "memory", "comma-separated stores to run: memory, postgres, redis (sluice on Redis against the floor)")
	fs.DurationVar(&o.window, "window", time.Hour, "window of the bench policy (limit 1e9) on the memory store")
	fs.DurationVar(&o.pgWindow, "pg-window", time.Second, "window of the bench policy (limit 1e9) on the Postgres store (keeps a hot key's log bounded)")
	fs.StringVar(&o.adminURL, "database-url", defaultAdmin, "Postgres server (loopback) on which to create the throwaway database")
	fs.StringVar(&o.pgbench, "pgbench", "pgbench", "pgbench binary")
	fs.IntVar(&o.pgMaxConns, "pg-max-conns", 0, "sluice's Postgres pool size (0: sluice's default)")
	fs.IntVar(&o.pgLanes, "pg-lanes", 0, "sluice's postgres.lanes (0: sluice's default, min(4, pool size))")
	fs.StringVar(&o.redisAddr, "redis-addr", "127.0.0.1:16379", "the Redis (loopback, maxmemory-policy noeviction) of -store redis; every run uses keys of its own prefix (scripts/test.d/05-redis-up.sh starts this one)")
	fs.StringVar(&o.profileDir, "cpuprofile-dir", "", "write a CPU profile of the first round's measured phase of each server (sluice and the floor) here")
	fs.StringVar(&o.markdown, "markdown", "", "also write the results as a Markdown table to this file")
	fs.StringVar(&o.algorithm, "algorithm", "sliding_log", "the bench policies' algorithm: "+domain.AlgorithmNames())
	fs.Int64Var(&o.limit, "limit", benchLimit, "the bench policy's limit")
	fs.Float64Var(&o.fill, "fill", 0, "before each run, fill every key of the uniform shape to this fraction of the limit (0 to 1)")
	fs.Parse(os.Args[1:])
	o.shapes = splitList(shapes)
	o.stores = splitList(stores)
	if err := o.benchPolicy(o.pgWindow).Validate("-"); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench: -algorithm, -limit, -pg-window:", err)
		os.Exit(2)
	}
	if o.fill < 0 || o.fill >= 1 {
		fmt.Fprintln(os.Stderr, "sluice-bench: -fill must be from 0 to below 1")
		os.Exit(2)
	}
	if o.conns < 1 || o.keys < 1 || o.rounds < 1 || o.duration <= 0 || o.warmup < 0 || o.slices < 0 {
		fmt.Fprintln(os.Stderr, "sluice-bench: -conns, -keys, -rounds and -duration must be positive (and -slices not negative)")
		os.Exit(2)
	}
	if pool := cmp.Or(o.pgMaxConns, app.Defaults().Postgres.MaxConns); o.pgLanes < 0 || o.pgLanes > pool {
		fmt.Fprintf(os.Stderr, "sluice-bench: -pg-lanes must be 0 (sluice's default) to the pool size (%d), got %d\n", pool, o.pgLanes)
		os.Exit(2)
	}
	for _, s := range o.shapes {
		if s != "uniform" && s != "hot" && s != "hot-deny" {
			fmt.Fprintf(os.Stderr, "sluice-bench: unknown shape %q (uniform, hot, hot-deny)\n", s)
			os.Exit(2)
		}
	}
	for _, s := range o.stores {
		if s != "memory" && s != "postgres" && s != "redis" {
			fmt.Fprintf(os.Stderr, "sluice-bench: unknown store %q (memory, postgres, redis)\n", s)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// row is one line of the results table.
type row struct {
	store, shape, target string
	rate                 float64
	p50, p99             time.Duration
	allowedPct           float64
	errors               uint64
	// cpuUs is the server process's CPU time (user + system, from /proc) per decision over the measured
	// window: 0 when not measured (pgbench, whose server is Postgres, or no /proc).
	cpuUs float64
}

func run(ctx context.Context, o options, out io.Writer) error {
	fmt.Fprintf(out, "sluice-bench: %d connections, %s warm-up + %s measured per run, %d CPUs (GOMAXPROCS %d), %s\n",
		o.conns, o.warmup, o.duration, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintln(out, "servers run one at a time, each in its own process; the load generator shares the CPUs with them")
	var rows []row
	var ratios []string
	for _, store := range o.stores {
		var err error
		switch store {
		case "memory", "redis":
			rows, ratios, err = runAgainstFloor(ctx, o, out, store, rows, ratios)
		case "postgres":
			rows, ratios, err = runPostgres(ctx, o, out, rows, ratios)
		}
		if err != nil {
			return err
		}
	}
	table := formatTable(rows, ratios)
	fmt.Fprint(out, "\n"+table)
	if o.markdown != "" {
		return os.WriteFile(o.markdown, []byte(table), 0o644)
	}
	return nil
}

// shapeRequests are the pre-encoded requests of a shape; keys are decimal numbers so pgbench can make them too.
func shapeRequests(shape, host string, keys int) [][]byte {
	switch shape {
	case "uniform":
		reqs := make([][]byte, keys)
		for i := range reqs {
			reqs[i] = checkRequest(host, benchPolicy, strconv.Itoa(i+1))
		}
		return reqs
	case "hot":
		return [][]byte{checkRequest(host, benchPolicy, "hot")}
	default: // hot-deny
		return [][]byte{checkRequest(host, tightPolicy, "hot")}
	}
}

// runAgainstFloor measures sluice on store (memory, or redis at -redis-addr) against the floor, shape by shape.
func runAgainstFloor(ctx context.Context, o options, out io.Writer, store string, rows []row, ratios []string) ([]row, []string, error) {
	if o.slices > 0 {
		return runSliced(ctx, o, out, store, rows, ratios)
	}
	for _, shape := range o.shapes {
		rs, r, err := rounds(o.rounds, fmt.Sprintf("%-8s %-8s", store, shape)+" sluice/floor",
			func(round int) (row, error) {
				profile := ""
				if round == 0 {
					profile = profilePath(o, "floor", store, shape)
				}
				return measure(ctx, o, out, store, shape, "floor", floorArgs(o), profile)
			},
			func(round int) (row, error) {
				profile := ""
				if round == 0 {
					profile = profilePath(o, "sluice", store, shape)
				}
				return measure(ctx, o, out, store, shape, "sluice", sluiceArgs(o, store, ""), profile)
			})
		if err != nil {
			return nil, nil, err
		}
		rows, ratios = append(rows, rs...), append(ratios, r)
	}
	return rows, ratios, nil
}

// floorArgs are the floor child's arguments.
func floorArgs(o options) []string {
	return []string{"floor", "-limit", strconv.FormatInt(o.limit, 10), "-fill", strconv.FormatFloat(o.fill, 'g', -1, 64), "-keys", strconv.Itoa(o.keys)}
}

// runSliced measures sluice on store against the floor, shape by shape, with both servers up at once (each in its
// own process, started fresh for each shape) and the load switched between them: o.slices pairs, each one run
// (-warmup, then -duration) of each server, the one going first alternating. The ratio of a pair is taken over a
// few seconds, so the machine's speed, which drifts by 10-30 % between runs on a shared VM, is nearly the same for
// both sides of it; the line reports the median over the pairs. A server's state carries over from one slice to
// the next (the uniform keys fill up as they would in one long run), the same for both servers.
func runSliced(ctx context.Context, o options, out io.Writer, store string, rows []row, ratios []string) ([]row, []string, error) {
	for _, shape := range o.shapes {
		floor, err := startChild(ctx, floorArgs(o))
		if err != nil {
			return nil, nil, fmt.Errorf("start floor: %w", err)
		}
		sl, err := startChild(ctx, sluiceArgs(o, store, ""))
		if err != nil {
			floor.stop()
			return nil, nil, fmt.Errorf("start sluice: %w", err)
		}
		servers := [2]*server{floor, sl}
		names := [2]string{"floor", "sluice"}
		var totals [2]loadResult
		var cpu [2]time.Duration
		var rates, cpus []float64
		for i := range o.slices {
			var rate, cpuPer [2]float64
			for j := range 2 {
				k := (i + j) % 2 // pair i: the floor first when i is even, sluice first when odd
				pid := servers[k].cmd.Process.Pid
				var c0, c1 time.Duration
				spec := loadSpec{addr: servers[k].addr, conns: o.conns, warmup: o.warmup, duration: o.duration,
					requests:  shapeRequests(shape, servers[k].addr, o.keys),
					onMeasure: func() { c0 = processCPU(pid) }, onStop: func() { c1 = processCPU(pid) }}
				res, err := runLoad(spec)
				if err != nil {
					floor.stop()
					sl.stop()
					return nil, nil, fmt.Errorf("%s %s: %w", names[k], shape, err)
				}
				if res.decisions == 0 {
					floor.stop()
					sl.stop()
					return nil, nil, fmt.Errorf("%s %s: no decision completed (first error: %v)", names[k], shape, res.firstErr)
				}
				rate[k] = res.rate()
				if c1 > c0 {
					cpu[k] += c1 - c0
					cpuPer[k] = float64(c1-c0) / float64(res.decisions)
				}
				t := &totals[k]
				t.decisions, t.allowed, t.errors, t.elapsed = t.decisions+res.decisions, t.allowed+res.allowed, t.errors+res.errors, t.elapsed+res.elapsed
				t.lat.merge(&res.lat)
				if t.firstErr == nil {
					t.firstErr = res.firstErr
				}
			}
			rates = append(rates, rate[1]/rate[0])
			if cpuPer[0] > 0 && cpuPer[1] > 0 {
				cpus = append(cpus, cpuPer[1]/cpuPer[0])
			}
			fmt.Fprintf(out, "%-8s %-8s pair %2d: floor %8.0f, sluice %8.0f decisions/s (%.2f×)\n", store, shape, i+1, rate[0], rate[1], rate[1]/rate[0])
		}
		floor.stop()
		sl.stop()
		for k, srv := range servers {
			if srv.err != nil {
				return nil, nil, fmt.Errorf("%s: %w", names[k], srv.err)
			}
			t := &totals[k]
			r := row{store: store, shape: shape, target: names[k], rate: t.rate(), p50: t.lat.quantile(0.50), p99: t.lat.quantile(0.99), errors: t.errors,
				allowedPct: 100 * float64(t.allowed) / float64(t.decisions), cpuUs: float64(cpu[k]) / float64(time.Microsecond) / float64(t.decisions)}
			rows = append(rows, r)
		}
		line := fmt.Sprintf("%-8s %-8s sluice/floor: decisions/s %.2f× (median of %d interleaved pairs; per pair: %s)", store, shape, median(rates), len(rates), fmtRatios(rates))
		if len(cpus) == len(rates) {
			line += fmt.Sprintf("; server CPU per decision %.2f× (per pair: %s)", median(cpus), fmtRatios(cpus))
		}
		fmt.Fprintln(out, "- "+line)
		ratios = append(ratios, line)
	}
	return rows, ratios, nil
}

// fmtRatios writes ratios as "0.93, 1.02".
func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

// rounds measures a pair n times: the baseline (floor or pgbench) and sluice, the order swapped each round so a
// drift in the machine's speed (other tenants, thermal limits) favours neither. It returns every row and one line
// with the median of the per-round ratios (and, with several rounds, each round's decisions/s ratio).
func rounds(n int, label string, baseline, sluice func(round int) (row, error)) ([]row, string, error) {
	var rows []row
	var rates, p50s, p99s, cpus []float64
	for i := range n {
		var b, s row
		var err error
		if i%2 == 0 {
			if b, err = baseline(i); err == nil {
				s, err = sluice(i)
			}
		} else {
			if s, err = sluice(i); err == nil {
				b, err = baseline(i)
			}
		}
		if err != nil {
			return nil, "", err
		}
		rows = append(rows, b, s)
		rates = append(rates, s.rate/b.rate)
		p50s = append(p50s, ratio(s.p50, b.p50))
		p99s = append(p99s, ratio(s.p99, b.p99))
		if s.cpuUs > 0 && b.cpuUs > 0 {
			cpus = append(cpus, s.cpuUs/b.cpuUs)
		}
	}
	line := fmt.Sprintf("%s: decisions/s %.2f×, p50 %.2f×, p99 %.2f×", label, median(rates), median(p50s), median(p99s))
	if len(cpus) == n {
		line += fmt.Sprintf(", server CPU per decision %.2f×", median(cpus))
	}
	if n > 1 {
		line += fmt.Sprintf(" (median of %d rounds; decisions/s per round: %s", n, fmtRatios(rates))
		if len(cpus) == n {
			line += "; server CPU per decision per round: " + fmtRatios(cpus)
		}
		line += ")"
	}
	return rows, line, nil
}

// median of xs (the mean of the middle two for an even count); xs is left as it was.
func median(xs []float64) float64 {
	xs = slices.Sorted(slices.Values(xs))
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// profilePath is where the first round's CPU profile of target ("sluice" or "floor") on store and shape goes ("":
// no profile).
func profilePath(o options, target, store, shape string) string {
	if o.profileDir == "" {
		return ""
	}
	return filepath.Join(o.profileDir, target+"-"+store+"-"+shape+".pprof")
}

func sluiceArgs(o options, store, dbURL string) []string {
	window := o.window
	if store == "postgres" {
		window = o.pgWindow
	}
	return []string{"sluice", "-store", store, "-database-url", dbURL, "-window", window.String(),
		"-pg-max-conns", strconv.Itoa(o.pgMaxConns), "-pg-lanes", strconv.Itoa(o.pgLanes),
		"-algorithm", o.algorithm, "-limit", strconv.FormatInt(o.limit, 10), "-fill", strconv.FormatFloat(o.fill, 'g', -1, 64),
		"-keys", strconv.Itoa(o.keys), "-redis-addr", o.redisAddr}
}

// measure starts a server process, drives it with one shape and stops it.
func measure(ctx context.Context, o options, out io.Writer, store, shape, target string, args []string, profile string) (row, error) {
	srv, err := startChild(ctx, args)
	if err != nil {
		return row{}, fmt.Errorf("start %s: %w", target, err)
	}
	defer srv.stop()
	spec := loadSpec{addr: srv.addr, conns: o.conns, warmup: o.warmup, duration: o.duration, requests: shapeRequests(shape, srv.addr, o.keys)}
	var cpuStart, cpuEnd time.Duration
	pid := srv.cmd.Process.Pid
	spec.onMeasure = func() {
		cpuStart = processCPU(pid)
		if profile != "" {
			srv.command("profile " + profile)
		}
	}
	spec.onStop = func() {
		cpuEnd = processCPU(pid)
		if profile != "" {
			srv.command("stop-profile")
		}
	}
	res, err := runLoad(spec)
	if err != nil {
		return row{}, err
	}
	if srv.stop(); srv.err != nil {
		return row{}, fmt.Errorf("%s: %w", target, srv.err)
	}
	r := row{store: store, shape: shape, target: target, rate: res.rate(), p50: res.lat.quantile(0.50), p99: res.lat.quantile(0.99),
		errors: res.errors}
	if res.decisions > 0 {
		r.allowedPct = 100 * float64(res.allowed) / float64(res.decisions)
		if cpuStart > 0 && cpuEnd > cpuStart {
			r.cpuUs = float64(cpuEnd-cpuStart) / float64(time.Microsecond) / float64(res.decisions)
		}
	}
	fmt.Fprintf(out, "%-8s %-8s %-8s %10.0f decisions/s  p50 %-9s p99 %-9s allowed %5.1f%%  errors %d  server CPU %.1f µs/decision\n",
		store, shape, target, r.rate, fmtDur(r.p50), fmtDur(r.p99), r.allowedPct, r.errors, r.cpuUs)
	if res.errors > 0 {
		fmt.Fprintf(out, "  first error: %v\n", res.firstErr)
	}
	if res.decisions == 0 {
		return row{}, fmt.Errorf("%s %s: no decision completed (first error: %v)", target, shape, res.firstErr)
	}
	return r, nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "µs"
	}
}

func formatTable(rows []row, ratios []string) string {
	var b strings.Builder
	b.WriteString("| store | shape | server | decisions/s | p50 | p99 | admitted | server CPU µs/decision |\n|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		admitted := "n/a"
		if r.allowedPct >= 0 {
			admitted = strconv.FormatFloat(r.allowedPct, 'f', 1, 64) + "%"
		}
		cpu := "n/a"
		if r.cpuUs > 0 {
			cpu = strconv.FormatFloat(r.cpuUs, 'f', 1, 64)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s | %s | %s | %s |\n", r.store, r.shape, r.target, r.rate, fmtDur(r.p50), fmtDur(r.p99), admitted, cpu)
	}
	b.WriteString("\n")
	for _, s := range ratios {
		b.WriteString("- " + s + "\n")
	}
	return b.String()
}

// server is a child process serving on loopback.
type server struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	done  chan struct{}
	err   error
}

// startChild re-executes this binary as a server (floor or sluice) and waits for its address.
func startChild(ctx context.Context, args []string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"-child"}, args...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	lines := bufio.NewScanner(stdout)
	addr := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if a, ok := strings.CutPrefix(lines.Text(), "ready "); ok {
				addr <- a
			}
		}
	}()
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.addr = <-addr:
	case <-s.done:
		return nil, fmt.Errorf("exited before serving: %v", s.err)
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, errors.New("not serving after 60 s")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	if err := requireLoopback(s.addr); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) command(line string) { fmt.Fprintln(s.stdin, line) }

// stop closes the child's stdin (it drains and exits) and waits, killing it after 30 s.
func (s *server) stop() {
	s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// child is the server side: it serves on 127.0.0.1:0, prints "ready ADDR", obeys "profile PATH" and
// "stop-profile" lines on stdin, and drains and exits when stdin closes.
func child(role string, args []string) error {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	store := fs.String("store", "memory", "")
	dbURL := fs.String("database-url", "", "")
	window := fs.Duration("window", time.Hour, "")
	pgMaxConns := fs.Int("pg-max-conns", 0, "")
	pgLanes := fs.Int("pg-lanes", 0, "")
	algorithm := fs.String("algorithm", "sliding_log", "")
	limit := fs.Int64("limit", benchLimit, "")
	fill := fs.Float64("fill", 0, "")
	keys := fs.Int("keys", 0, "")
	redisAddr := fs.String("redis-addr", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopProfile func()
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			cmd, arg, _ := strings.Cut(lines.Text(), " ")
			switch cmd {
			case "profile":
				f, err := os.Create(arg)
				if err == nil && pprof.StartCPUProfile(f) == nil {
					stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
				}
			case "stop-profile":
				if stopProfile != nil {
					stopProfile()
					stopProfile = nil
				}
			}
		}
		cancel() // stdin closed: the parent is done with us (or gone)
	}()
	ready := func(addr string) { fmt.Printf("ready %s\n", addr) }
	switch role {
	case "floor":
		if *fill > 0 { // the floor's keys are filled as sluice's are, so both decide the same mix
			inner := ready
			ready = func(addr string) {
				if err := prefillHTTP(addr, *keys, int64(*fill*float64(*limit))); err != nil {
					fmt.Fprintln(os.Stderr, "sluice-bench child: prefill:", err)
				}
				inner(addr)
			}
		}
		return serveFloor(ctx, *limit, ready)
	case "sluice":
		cfg := app.Defaults()
		cfg.Listen = "127.0.0.1:0"
		cfg.Store = *store
		cfg.Log.Level = "warn"
		cfg.Postgres.URL = *dbURL
		cfg.Postgres.Lanes = *pgLanes
		if *store == "redis" {
			if err := requireLoopback(*redisAddr); err != nil {
				return err
			}
			// A prefix of its own, so a run never sees the keys of an earlier one (they expire with the window).
			cfg.Redis.Addrs, cfg.Redis.Prefix = []string{*redisAddr}, fmt.Sprintf("bench-%d-%d:", os.Getpid(), time.Now().UnixNano())
		}
		if *pgMaxConns > 0 {
			cfg.Postgres.MaxConns = *pgMaxConns
		}
		cfg.Policies = []app.PolicyConfig{
			{Name: benchPolicy, Limit: *limit, Window: app.Duration(*window), Algorithm: *algorithm},
			{Name: tightPolicy, Limit: tightLimit, Window: app.Duration(tightWindow), Algorithm: *algorithm},
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if (*store == "memory" || *store == "redis") && *fill > 0 {
			// The memory store (and a fresh Redis prefix) starts empty: fill its keys over HTTP once it serves.
			inner := ready
			ready = func(addr string) {
				if err := prefillHTTP(addr, *keys, int64(*fill*float64(*limit))); err != nil {
					fmt.Fprintln(os.Stderr, "sluice-bench child: prefill:", err)
				}
				inner(addr)
			}
		}
		return app.Run(ctx, cfg, app.Build{Version: "bench", Spec: []byte("openapi: 3.1.0\n")}, log, ready)
	}
	return fmt.Errorf("unknown role %q", role)
}

// prefillHTTP spends units of every uniform-shape key in one check each (the memory store's cost per decision
// does not depend on how many instants a log holds: its searches are binary).
func prefillHTTP(addr string, keys int, units int64) error {
	if units < 1 {
		return nil
	}
	c := &http.Client{Timeout: 10 * time.Second}
	for k := 1; k <= keys; k++ {
		body := fmt.Sprintf(`{"policy":%q,"key":"%d","cost":%d}`, benchPolicy, k, units)
		resp, err := c.Post("http://"+addr+"/v1/check", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("key %d: status %d", k, resp.StatusCode)
		}
	}
	return nil
}

func serveFloor(ctx context.Context, limit int64, ready func(string)) error {
	h := newFloorHandler(map[string]int64{benchPolicy: limit, tightPolicy: tightLimit})
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ln, err := listenLoopback()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // serving before ready: a prefill in ready sends checks to it
	ready(ln.Addr().String())
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// processCPU is the user + system CPU time pid has used (/proc/PID/stat, in clock ticks of 1/100 s on Linux); 0
// when it cannot be read.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

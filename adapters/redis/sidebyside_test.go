package redis_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/integration/serveproc"
)

// TestSideBySide is the benchmark of docs/benchmarks.md ("Redis store"): sluice on one Redis, sluice on a Redis
// Cluster, and envoyproxy/ratelimit on one Redis, each driven in turn by the same closed-loop HTTP load (-conns
// keep-alive connections, each sending its next check as soon as the answer is in) over the same keys, on this
// machine's loopback. It reports decisions/s and the CPU time per decision of the server and of Redis (from
// /proc), so the comparison holds on a machine that is busy with other work too (CPU per decision is less
// sensitive to that than a rate). The servers on one Redis are started once and driven in rounds
// (SLUICE_TEST_BENCH_REDIS_ROUNDS, default 3), each round every server in turn, the order rotated, and the ratio
// to envoyproxy/ratelimit is the median of the per-round ratios. Run only on request:
//
//	SLUICE_TEST_BENCH_REDIS=10s go test -run TestSideBySide -v -timeout 10m ./adapters/redis/
//
// envoyproxy/ratelimit is built from the pinned module version (toolchain notes) into the tools cache unless
// SLUICE_TEST_RATELIMIT_BIN names its service_cmd. Its decisions come from its HTTP /json endpoint, the same
// RateLimitRequest its gRPC service takes; both sides use fixed limits far above the load, so every check is an
// admission that writes Redis.
func TestSideBySide(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("SLUICE_TEST_BENCH_REDIS"))
	if err != nil {
		t.Skip("set SLUICE_TEST_BENCH_REDIS to a duration (e.g. 10s) to run the side-by-side benchmark")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := serveproc.Build(t, ctx, dir)
	const conns, keys = 64, 1000
	type result struct {
		name            string
		rate            float64
		serverUs, redUs float64 // CPU µs per decision
		loadUs          float64 // the load generator's CPU µs per decision
		errors          int64
	}
	var results []result
	rounds := 10
	if n, err := strconv.Atoi(os.Getenv("SLUICE_TEST_BENCH_REDIS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}

	// target is a server under test, started once; each round drives every target in turn.
	type target struct {
		name      string
		base, uri string
		body      func(int) string
		pids      []int // the server's, then its Redis servers'
	}
	var targets []target
	sluiceOn := func(name, alg string, addrs []string, redisPids []int, env ...string) target {
		cfg := writeConfig(t, dir, fmt.Sprintf("policies:\n  - {name: bench, limit: 1000000000, window: 1m, algorithm: %s}\n", alg))
		env = append(env, "SLUICE_REDIS_ADDRS="+strings.Join(addrs, ","), "SLUICE_REDIS_PREFIX="+redistest.Prefix(), "SLUICE_LOG_LEVEL=warn")
		p := startSluice(t, bin, dir, name, cfg, env...)
		p.WaitReady(t, ctx)
		t.Cleanup(func() { _ = p.Cmd.Process.Kill() })
		body := func(k int) string { return fmt.Sprintf(`{"policy":"bench","key":"user-%d"}`, k) }
		return target{name, p.Base, "/v1/check", body, append([]int{p.Cmd.Process.Pid}, redisPids...)}
	}

	single := redistest.StartServer(t)
	onSingle := []int{single.Cmd.Process.Pid}
	targets = append(targets, sluiceOn("sluice sliding_window, one Redis", "sliding_window", []string{single.Addr}, onSingle))
	targets = append(targets, sluiceOn("sluice fixed_window, one Redis", "fixed_window", []string{single.Addr}, onSingle))
	for _, n := range strings.Split(os.Getenv("SLUICE_TEST_BENCH_REDIS_LANES"), ",") {
		if n != "" {
			targets = append(targets, sluiceOn("sluice sliding_window, one Redis, lanes "+n, "sliding_window", []string{single.Addr}, onSingle, "SLUICE_REDIS_LANES="+n))
		}
	}

	// envoyproxy/ratelimit on the same Redis.
	rl := ratelimitBinary(t, ctx)
	rdir := filepath.Join(dir, "rl", "ratelimit", "config")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rdir, "bench.yaml"), []byte("domain: bench\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: minute\n      requests_per_unit: 1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, gport, dport := serveproc.FreePort(t), serveproc.FreePort(t), serveproc.FreePort(t)
	cmd := exec.Command(rl)
	cmd.Env = append(os.Environ(), "USE_STATSD=false", "REDIS_SOCKET_TYPE=tcp", "REDIS_URL="+single.Addr,
		"RUNTIME_ROOT="+filepath.Join(dir, "rl"), "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_APPDIRECTORY=config",
		"RUNTIME_WATCH_ROOT=false", "HOST=127.0.0.1", "PORT="+strconv.Itoa(port), "GRPC_HOST=127.0.0.1",
		"GRPC_PORT="+strconv.Itoa(gport), "DEBUG_HOST=127.0.0.1", "DEBUG_PORT="+strconv.Itoa(dport), "LOG_LEVEL=warn")
	logf, _ := os.Create(filepath.Join(dir, "ratelimit.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitHTTP(t, ctx, base+"/healthcheck")
	rbody := func(k int) string {
		return fmt.Sprintf(`{"domain":"bench","descriptors":[{"entries":[{"key":"user","value":"user-%d"}]}]}`, k)
	}
	const envoyName = "envoyproxy/ratelimit (fixed window), one Redis"
	targets = append(targets, target{envoyName, base, "/json", rbody, []int{cmd.Process.Pid, single.Cmd.Process.Pid}})

	// Rounds: every target once per round, the order rotated each round, so a drift in the machine's speed
	// favours none; the ratio to envoyproxy/ratelimit is taken within each round.
	perRound := make([]map[string]result, rounds)
	for round := range rounds {
		perRound[round] = map[string]result{}
		for i := range targets {
			tg := targets[(i+round)%len(targets)]
			r := drive(t, tg.base, tg.uri, tg.body, conns, keys, d, tg.pids)
			res := result{tg.name, r.rate, r.cpuUs[0], sum(r.cpuUs[1:]), r.loadUs, r.errors}
			perRound[round][tg.name] = res
			results = append(results, res)
		}
	}

	cl := redistest.StartCluster(t)
	c := sluiceOn("sluice sliding_window, 3-master cluster", "sliding_window", cl.Addrs()[:1], cl.Pids())
	r := drive(t, c.base, c.uri, c.body, conns, keys, d, c.pids)
	results = append(results, result{c.name, r.rate, r.cpuUs[0], sum(r.cpuUs[1:]), r.loadUs, r.errors})

	t.Logf("%d connections, %d keys, %s per run, %d rounds, %d CPUs (load average %s)", conns, keys, d, rounds, runtimeCPUs(), loadavg())
	t.Logf("| target | decisions/s | server CPU µs/decision | Redis CPU µs/decision | load generator CPU µs/decision | errors |")
	t.Logf("|---|---|---|---|---|---|")
	for _, r := range results {
		t.Logf("| %s | %.0f | %.1f | %.1f | %.1f | %d |", r.name, r.rate, r.serverUs, r.redUs, r.loadUs, r.errors)
	}
	for _, tg := range targets[:len(targets)-1] {
		var ratios []float64
		for _, pr := range perRound {
			ratios = append(ratios, pr[tg.name].rate/pr[envoyName].rate)
		}
		sorted := append([]float64(nil), ratios...)
		sort.Float64s(sorted)
		t.Logf("%s / envoyproxy/ratelimit: decisions/s %.2f× (median of %d rounds; per round %s)", tg.name, sorted[len(sorted)/2], rounds, fmtRatios(ratios))
	}
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

func sum(xs []float64) (s float64) {
	for _, x := range xs {
		s += x
	}
	return s
}

type driveResult struct {
	rate   float64
	cpuUs  []float64 // per pid: CPU µs per decision
	loadUs float64   // the load generator's (this test process's) CPU µs per decision
	errors int64
}

// drive sends POST path with body(k) for random keys from conns connections for d (after a 1 s warm-up), and
// measures the decisions answered (200 or 429) and the CPU the pids used meanwhile.
func drive(t *testing.T, base, path string, body func(int) string, conns, keys int, d time.Duration, pids []int) driveResult {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	var done, errs atomic.Int64
	var measuring atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", host)
			if err != nil {
				errs.Add(1)
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			reqs := make([][]byte, 64)
			for i := range reqs {
				b := body((c*7919 + i*104729) % keys)
				reqs[i] = []byte(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, host, len(b), b))
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := conn.Write(reqs[i%len(reqs)]); err != nil {
					errs.Add(1)
					return
				}
				code, err := readResponse(br)
				if err != nil {
					errs.Add(1)
					return
				}
				if measuring.Load() {
					if code == 200 || code == 429 {
						done.Add(1)
					} else {
						errs.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(time.Second)          // warm-up of a real server under real load
	pids = append(pids, os.Getpid()) // the load generator's own CPU, last
	before := cpuOf(pids)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(d) // the measured interval of a real load
	measuring.Store(false)
	elapsed := time.Since(start)
	after := cpuOf(pids)
	close(stop)
	wg.Wait()
	n := float64(done.Load())
	r := driveResult{rate: n / elapsed.Seconds(), errors: errs.Load()}
	for i := range pids {
		r.cpuUs = append(r.cpuUs, (after[i]-before[i])/n*1e6)
	}
	r.cpuUs, r.loadUs = r.cpuUs[:len(r.cpuUs)-1], r.cpuUs[len(r.cpuUs)-1]
	return r
}

// readResponse reads one HTTP/1.1 response with a Content-Length and returns its status code.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	code, _ := strconv.Atoi(f[1])
	length := 0
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if h == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if _, err := br.Discard(length); err != nil {
		return 0, err
	}
	return code, nil
}

// cpuOf reads utime+stime (seconds) of each pid from /proc.
func cpuOf(pids []int) []float64 {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		out[i] = (ut + st) / 100 // USER_HZ
	}
	return out
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func runtimeCPUs() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(b, []byte("processor\t:"))
}

// waitHTTP waits until url's host:port accepts connections.
func waitHTTP(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	host := strings.SplitN(strings.TrimPrefix(url, "http://"), "/", 2)[0]
	for {
		c, err := net.DialTimeout("tcp", host, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never answered", url)
		}
		time.Sleep(50 * time.Millisecond) // a process starting
	}
}

// ratelimitBinary returns envoyproxy/ratelimit's service_cmd: SLUICE_TEST_RATELIMIT_BIN, or built once from the
// pinned module version into the tools cache.
func ratelimitBinary(t *testing.T, ctx context.Context) string {
	t.Helper()
	if b := os.Getenv("SLUICE_TEST_RATELIMIT_BIN"); b != "" {
		return b
	}
	const version = "v1.4.1-0.20260122083618-3fb702589d36"
	cache := os.Getenv("SLUICE_TOOLS_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "sluice-tools")
	}
	dir := filepath.Join(cache, "envoy-ratelimit-"+version)
	bin := filepath.Join(dir, "service_cmd")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/envoyproxy/ratelimit/src/service_cmd@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install envoyproxy/ratelimit: %v\n%s", err, out)
	}
	return bin
}

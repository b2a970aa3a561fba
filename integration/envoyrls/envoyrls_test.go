// Package envoyrls drives sluice's Envoy RLS front end with a client sluice did not write (envoyproxy/ratelimit's
// own gRPC CLI, src/client_cmd), with the fixture configs of adapters/envoyrls/testdata, and sends the same
// requests to envoyproxy/ratelimit itself (src/service_cmd on a Redis this test starts) to compare the answers
// wherever the semantics are meant to agree. Both binaries are built from the module proxy at one pinned version
// by scripts/install-envoy-ratelimit.sh, into a cache outside the repository.
package envoyrls

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

func inCI() bool { return os.Getenv("CI") == "true" }

func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf(format+" (CI=true: this test must run)", args...)
	}
	t.Skipf(format, args...)
}

// freePorts returns n distinct free ports: all are held open until every one is chosen, since the kernel may hand
// a just-closed port out again (and envoyproxy/ratelimit binds with SO_REUSEPORT, so two of its listeners on one
// port would share it silently).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// start runs cmd until the test ends, then stops it with SIGTERM (SIGKILL after 10 s). Output goes to logPath.
func start(t *testing.T, cmd *exec.Cmd, logPath string) {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// waitServing polls the gRPC health service at addr until it says SERVING, or fails after 30 s.
func waitServing(t *testing.T, addr string, logs string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs)
			t.Fatalf("%s not serving: %v %v\n%s", addr, r, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRedis polls addr with PING until Redis answers PONG, or fails after 15 s.
func waitRedis(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis at %s did not answer: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type tools struct{ service, client, sluice string }

var fixtures = []string{"istio", "envoygateway", "contour"}

var (
	setupOnce sync.Once
	setupOut  tools
	setupErr  string
	setupSkip bool
)

// setup builds sluice from this tree and gets envoyproxy/ratelimit's binaries from the install script, once for
// every test of the package.
func setup(t *testing.T) tools {
	t.Helper()
	setupOnce.Do(func() { setupOut, setupErr, setupSkip = build() })
	switch {
	case setupSkip:
		unavailable(t, "%s", setupErr)
	case setupErr != "":
		t.Fatal(setupErr)
	}
	return setupOut
}

// build does setup's work; it reports a problem as a message, and whether it means a missing tool (skip) or a
// failure.
func build() (tools, string, bool) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return tools{}, err.Error(), false
	}
	out, err := exec.Command("bash", filepath.Join(root, "scripts/install-envoy-ratelimit.sh")).Output()
	if err != nil {
		return tools{}, fmt.Sprintf("scripts/install-envoy-ratelimit.sh: %v (it builds envoyproxy/ratelimit from the module proxy)", err), true
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := lines[len(lines)-1]
	bin := filepath.Join(binDir, "sluice")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return tools{}, fmt.Sprintf("go build: %v\n%s", err, out), false
	}
	return tools{service: filepath.Join(dir, "service_cmd"), client: filepath.Join(dir, "client_cmd"), sluice: bin}, "", false
}

// binDir holds the sluice binary the tests build (TestMain removes it).
var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "sluice-envoyrls-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// configDir copies the fixture configs into dir/ratelimit/config (envoyproxy/ratelimit's runtime layout, also
// sluice's rls.config_dir) and returns that directory.
func configDir(t *testing.T, dir string) string {
	t.Helper()
	cd := filepath.Join(dir, "ratelimit", "config")
	if err := os.MkdirAll(cd, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range fixtures {
		b, err := os.ReadFile(filepath.Join("../../adapters/envoyrls/testdata", f, "config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cd, f+".yaml"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cd
}

// startSluice runs one sluice with the RLS front end on configDir and returns the RLS address.
func startSluice(t *testing.T, bin, dir, name, cd string, extra string) string {
	t.Helper()
	ports := freePorts(t, 2)
	rls := "127.0.0.1:" + strconv.Itoa(ports[0])
	cfg := filepath.Join(dir, name+".yaml")
	y := fmt.Sprintf("listen: 127.0.0.1:%d\nlog: {level: warn}\nrls:\n  listen: %s\n  config_dir: %s\n%s", ports[1], rls, cd, extra)
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(dir, name+".log")
	start(t, exec.Command(bin, "serve", "-config", cfg), logs)
	waitServing(t, rls, logs)
	return rls
}

// startUpstream runs redis-server and envoyproxy/ratelimit's service on its own ports and returns its gRPC address.
func startUpstream(t *testing.T, service, dir string) string {
	t.Helper()
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server is not on PATH (Debian package redis-server)")
	}
	ports := freePorts(t, 4)
	rp := ports[0]
	start(t, exec.Command(redis, "--port", strconv.Itoa(rp), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"), filepath.Join(dir, "redis.log"))
	waitRedis(t, "127.0.0.1:"+strconv.Itoa(rp))
	grpcAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	cmd := exec.Command(service)
	cmd.Env = append(os.Environ(), "USE_STATSD=false", "LOG_LEVEL=warn", "REDIS_SOCKET_TYPE=tcp",
		"REDIS_URL=127.0.0.1:"+strconv.Itoa(rp), "RUNTIME_ROOT="+dir, "RUNTIME_SUBDIRECTORY=ratelimit",
		"RUNTIME_APPDIRECTORY=config", "RUNTIME_WATCH_ROOT=false", "RUNTIME_IGNOREDOTFILES=true",
		"HOST=127.0.0.1", "PORT="+strconv.Itoa(ports[2]), "GRPC_HOST=127.0.0.1", "GRPC_PORT="+strings.TrimPrefix(grpcAddr, "127.0.0.1:"),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT="+strconv.Itoa(ports[3]))
	logs := filepath.Join(dir, "ratelimit.log")
	start(t, cmd, logs)
	waitServing(t, grpcAddr, logs)
	return grpcAddr
}

// answer is what client_cmd printed, reduced to what the comparison looks at.
type answer struct {
	Overall  string
	Statuses []status
}

type status struct {
	Code      string
	Remaining uint64
	Limit     string // "requests_per_unit/UNIT" or ""
	Reset     int64  // duration_until_reset seconds, -1 when absent
}

func (a answer) String() string {
	var b strings.Builder
	b.WriteString(a.Overall)
	for _, s := range a.Statuses {
		fmt.Fprintf(&b, " [%s r=%d %s]", s.Code, s.Remaining, s.Limit)
	}
	return b.String()
}

var (
	overallRE = regexp.MustCompile(`overall_code:\s*(\w+)`)
	codeRE    = regexp.MustCompile(`^\s*code:\s*(\w+)`)
	remRE     = regexp.MustCompile(`limit_remaining:\s*(\d+)`)
	limitRE   = regexp.MustCompile(`current_limit:\s*\{([^}]*)\}`)
	rpuRE     = regexp.MustCompile(`requests_per_unit:\s*(\d+)`)
	unitRE    = regexp.MustCompile(`(?:^|[\s{])unit:\s*(\w+)`)
	resetRE   = regexp.MustCompile(`duration_until_reset:\s*\{\s*(?:seconds:\s*(\d+))?`)
)

// ask runs client_cmd against addr: one -descriptors flag per descriptor ("k=v,k2=v2").
func ask(t *testing.T, client, addr, domain string, descriptors ...string) answer {
	t.Helper()
	args := []string{"-dial_string", addr, "-domain", domain}
	for _, d := range descriptors {
		args = append(args, "-descriptors", d)
	}
	out, err := exec.Command(client, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("client_cmd %v: %v\n%s", args, err, out)
	}
	i := strings.Index(string(out), "response:")
	if i < 0 {
		t.Fatalf("client_cmd %v printed no response:\n%s", args, out)
	}
	resp := string(out[i:])
	m := overallRE.FindStringSubmatch(resp)
	if m == nil {
		t.Fatalf("no overall_code in %q", resp)
	}
	a := answer{Overall: m[1]}
	for _, chunk := range regexp.MustCompile(`statuses:\s*\{`).Split(resp, -1)[1:] {
		s := status{Reset: -1}
		if m := codeRE.FindStringSubmatch(chunk); m != nil {
			s.Code = m[1]
		}
		if m := remRE.FindStringSubmatch(chunk); m != nil {
			s.Remaining, _ = strconv.ParseUint(m[1], 10, 64)
		}
		if m := limitRE.FindStringSubmatch(chunk); m != nil {
			rpu, unit := "0", "UNKNOWN"
			if r := rpuRE.FindStringSubmatch(m[1]); r != nil {
				rpu = r[1]
			}
			if u := unitRE.FindStringSubmatch(m[1]); u != nil {
				unit = u[1]
			}
			s.Limit = rpu + "/" + unit
		}
		if m := resetRE.FindStringSubmatch(chunk); m != nil {
			s.Reset, _ = strconv.ParseInt("0"+m[1], 10, 64)
		}
		a.Statuses = append(a.Statuses, s)
	}
	return a
}

// step is one request of a comparison sequence.
type step struct {
	domain      string
	descriptors []string
	want        string // the expected answer (both servers), in answer.String form
	// sluice, when set, is sluice's answer where it differs by design (all-or-nothing, denials record nothing).
	sluice string
}

// sequences are the requests both servers must answer alike (single-descriptor requests, and multi-descriptor
// requests that are admitted, where all-or-nothing changes nothing), then the ones where sluice differs by design
// (step.sluice). Only MINUTE and HOUR limits, so a run that crosses a window boundary is detected and run again on
// fresh servers. %s is a per-run nonce for distinct keys.
var sequences = []struct {
	name  string
	steps []step
}{
	{"istio productpage", []step{
		{"ratelimit", []string{"PATH=/productpage"}, "OK [OK r=1 2/MINUTE]", ""},
		{"ratelimit", []string{"PATH=/productpage"}, "OK [OK r=0 2/MINUTE]", ""},
		{"ratelimit", []string{"PATH=/productpage"}, "OVER_LIMIT [OVER_LIMIT r=0 2/MINUTE]", ""},
		{"ratelimit", []string{"PATH=/productpage"}, "OVER_LIMIT [OVER_LIMIT r=0 2/MINUTE]", ""},
	}},
	{"istio default per path", []step{
		{"ratelimit", []string{"PATH=/reviews-%s"}, "OK [OK r=4 5/MINUTE]", ""},
		{"ratelimit", []string{"PATH=/ratings-%s"}, "OK [OK r=4 5/MINUTE]", ""},
		{"ratelimit", []string{"PATH=/reviews-%s"}, "OK [OK r=3 5/MINUTE]", ""},
	}},
	{"istio no match", []step{
		{"other", []string{"PATH=/productpage"}, "OK [OK r=0 ]", ""},
		{"ratelimit", []string{"PATH=/productpage,x=y"}, "OK [OK r=0 ]", ""},
	}},
	{"envoy gateway header exact", []step{
		{"default/eg/http", []string{route + ",rule-0-match-0=one"}, "OK [OK r=2 3/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-0-match-0=one"}, "OK [OK r=1 3/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-0-match-0=one"}, "OK [OK r=0 3/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-0-match-0=one"}, "OVER_LIMIT [OVER_LIMIT r=0 3/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-0-match-0=two"}, "OK [OK r=0 ]", ""},
	}},
	{"envoy gateway distinct and masked address", []step{
		{"default/eg/http", []string{route + ",rule-1-match-0=a-%s"}, "OK [OK r=1 2/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-1-match-0=a-%s"}, "OK [OK r=0 2/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-1-match-0=a-%s"}, "OVER_LIMIT [OVER_LIMIT r=0 2/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-1-match-0=b-%s"}, "OK [OK r=1 2/HOUR]", ""},
		{"default/eg/http", []string{route + ",rule-2-match-0=0.0.0.0/0,masked_remote_address=10.%s/32"}, "OK [OK r=3 4/MINUTE]", ""},
		{"default/eg/http", []string{route + ",rule-2-match-0=0.0.0.0/0"}, "OK [OK r=0 ]", ""},
	}},
	{"contour generic_key", []step{
		{"contour", []string{"generic_key=foo"}, "OK [OK r=1 2/MINUTE]", ""},
		{"contour", []string{"generic_key=vhost,remote_address=192.0.2.%s"}, "OK [OK r=2 3/MINUTE]", ""},
		{"contour", []string{"generic_key=vhost"}, "OK [OK r=0 ]", ""},
		{"contour", []string{"generic_key=unlimited"}, "OK [OK r=4294967295 ]", ""},
		// Two descriptors, both admitted: all-or-nothing changes nothing.
		{"contour", []string{"generic_key=foo", "generic_key=vhost,remote_address=192.0.2.%s"}, "OK [OK r=0 2/MINUTE] [OK r=1 3/MINUTE]", ""},
	}},
	// Where sluice differs by design: /productpage is exhausted (first sequence), so a request with it and a fresh
	// path is denied; envoyproxy/ratelimit still counts the fresh path, sluice draws nothing from it.
	{"all-or-nothing (differs by design)", []step{
		{"ratelimit", []string{"PATH=/fresh-%s", "PATH=/productpage"}, "OVER_LIMIT [OK r=4 5/MINUTE] [OVER_LIMIT r=0 2/MINUTE]", "OVER_LIMIT [OK r=5 5/MINUTE] [OVER_LIMIT r=0 2/MINUTE]"},
		{"ratelimit", []string{"PATH=/fresh-%s"}, "OK [OK r=3 5/MINUTE]", "OK [OK r=4 5/MINUTE]"},
	}},
}

const route = "httproute/default/http-ratelimit/rule/0/match/0=httproute/default/http-ratelimit/rule/0/match/0"

// TestAgainstEnvoyRatelimit sends every sequence to envoyproxy/ratelimit and to sluice, one request to each in
// turn, and requires the same overall code, and per descriptor the same code, limit_remaining and current_limit,
// and a duration_until_reset within a second of each other (both count epoch-aligned windows). A run that crosses
// a minute boundary is repeated once on fresh servers.
func TestAgainstEnvoyRatelimit(t *testing.T) {
	tl := setup(t)
	for attempt := 1; ; attempt++ {
		problems, crossed := compare(t, tl, strconv.Itoa(attempt))
		if crossed && attempt < 3 {
			t.Logf("attempt %d crossed a minute boundary: running again on fresh servers", attempt)
			continue
		}
		for _, p := range problems {
			t.Error(p)
		}
		return
	}
}

// compare runs every sequence on fresh servers and returns the differences, and whether the run crossed a minute
// boundary (its answers then do not count).
func compare(t *testing.T, tl tools, nonce string) (problems []string, crossed bool) {
	dir := t.TempDir()
	cd := configDir(t, dir)
	upstream := startUpstream(t, tl.service, dir)
	sluice := startSluice(t, tl.sluice, dir, "sluice-"+nonce, cd, "")
	minute := time.Now().Unix() / 60
	for _, seq := range sequences {
		for i, s := range seq.steps {
			ds := make([]string, len(s.descriptors))
			for j, d := range s.descriptors {
				ds[j] = strings.ReplaceAll(d, "%s", nonce)
			}
			t0 := time.Now()
			up := ask(t, tl.client, upstream, s.domain, ds...)
			got := ask(t, tl.client, sluice, s.domain, ds...)
			if time.Now().Unix()/60 != minute {
				// Stop at once: the next attempt then starts just after the boundary, a whole minute ahead of it.
				return nil, true
			}
			// sluice is asked later, and reports the exact remainder (floored here), envoyproxy/ratelimit whole
			// seconds from the whole second now: sluice's may be lower by the time between the two calls plus two seconds.
			slack := int64(time.Since(t0)/time.Second) + 2
			if s.sluice != "" && got.String() != s.sluice {
				problems = append(problems, fmt.Sprintf("%s #%d %v: sluice %s, want %s (differs from envoyproxy/ratelimit by design)", seq.name, i, ds, got, s.sluice))
			}
			if up.String() != s.want {
				problems = append(problems, fmt.Sprintf("%s #%d: envoyproxy/ratelimit answered %s; the fixture expects %s", seq.name, i, up, s.want))
			}
			if s.sluice == "" && got.String() != up.String() {
				problems = append(problems, fmt.Sprintf("%s #%d %v: sluice %s, envoyproxy/ratelimit %s", seq.name, i, ds, got, up))
			}
			for k := range min(len(got.Statuses), len(up.Statuses)) {
				g, u := got.Statuses[k].Reset, up.Statuses[k].Reset
				if (g < 0) != (u < 0) || g > u || u-g > slack {
					problems = append(problems, fmt.Sprintf("%s #%d descriptor %d: duration_until_reset sluice %ds, envoyproxy/ratelimit %ds", seq.name, i, k, g, u))
				}
			}
		}
	}
	return problems, time.Now().Unix()/60 != minute
}

// TestReplicasOnPostgres: three sluice replicas sharing one PostgreSQL database, each with the RLS front end on
// the same fixture configs, enforce one cap per descriptor: requests spread over the replicas, concurrently, are
// admitted exactly up to each limit. envoyproxy/ratelimit's client_cmd checks the Istio shape replica by replica.
func TestReplicasOnPostgres(t *testing.T) {
	tl := setup(t)
	for attempt := 1; ; attempt++ {
		problems, crossed := replicas(t, tl)
		if crossed && attempt < 3 {
			t.Logf("attempt %d crossed a minute boundary: running again on a fresh database", attempt)
			continue
		}
		for _, p := range problems {
			t.Error(p)
		}
		return
	}
}

func replicas(t *testing.T, tl tools) (problems []string, crossed bool) {
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	cd := configDir(t, dir)
	// A long statement timeout: this test is about exactness under contention on a shared, busy machine, not
	// about latency (30 callers queue on one row).
	extra := fmt.Sprintf("store: postgres\npostgres: {url: %q, migrate_on_start: true, statement_timeout: 30s}\n", db)
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = startSluice(t, tl.sluice, dir, "replica"+strconv.Itoa(i), cd, extra)
	}
	minute := time.Now().Unix() / 60
	// The real client, one request per replica in turn: /productpage admits 2 per minute across all three, a
	// distinct x-user-id value of the Envoy Gateway route 2 per hour.
	for i, want := range []string{"OK [OK r=1 2/MINUTE]", "OK [OK r=0 2/MINUTE]", "OVER_LIMIT [OVER_LIMIT r=0 2/MINUTE]"} {
		if got := ask(t, tl.client, addrs[i], "ratelimit", "PATH=/productpage").String(); got != want {
			problems = append(problems, fmt.Sprintf("client_cmd (Istio shape) to replica %d: %s, want %s", i, got, want))
		}
	}
	for i, want := range []string{"OK [OK r=1 2/HOUR]", "OK [OK r=0 2/HOUR]", "OVER_LIMIT [OVER_LIMIT r=0 2/HOUR]"} {
		if got := ask(t, tl.client, addrs[i], "default/eg/http", route+",rule-1-match-0=client-cmd").String(); got != want {
			problems = append(problems, fmt.Sprintf("client_cmd (Envoy Gateway shape) to replica %d: %s, want %s", i, got, want))
		}
	}
	// Concurrent load over the three replicas: for each descriptor, exactly its limit is admitted.
	conns := make([]rlsv3.RateLimitServiceClient, len(addrs))
	for i, a := range addrs {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = rlsv3.NewRateLimitServiceClient(cc)
	}
	egRoute := strings.SplitN(route, "=", 2)[0]
	cases := []struct {
		name    string
		domain  string
		entries [][2]string
		limit   int
	}{
		{"istio default /reviews", "ratelimit", [][2]string{{"PATH", "/reviews"}}, 5},
		{"envoy gateway exact header", "default/eg/http", [][2]string{{egRoute, egRoute}, {"rule-0-match-0", "one"}}, 3},
		{"envoy gateway distinct a", "default/eg/http", [][2]string{{egRoute, egRoute}, {"rule-1-match-0", "a"}}, 2},
		{"envoy gateway distinct b", "default/eg/http", [][2]string{{egRoute, egRoute}, {"rule-1-match-0", "b"}}, 2},
		{"envoy gateway masked address", "default/eg/http", [][2]string{{egRoute, egRoute}, {"rule-2-match-0", "0.0.0.0/0"}, {"masked_remote_address", "10.1.2.3/32"}}, 4},
		{"contour generic_key", "contour", [][2]string{{"generic_key", "foo"}}, 2},
	}
	const perCase = 30
	type result struct {
		c   int
		ok  bool
		err error
	}
	results := make(chan result, len(cases)*perCase)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for ci, c := range cases {
		d := &rlcommon.RateLimitDescriptor{}
		for _, e := range c.entries {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: e[0], Value: e[1]})
		}
		for j := range perCase {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				r, err := conns[(ci+j)%len(conns)].ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: c.domain, Descriptors: []*rlcommon.RateLimitDescriptor{d}})
				results <- result{c: ci, ok: err == nil && r.OverallCode == rlsv3.RateLimitResponse_OK, err: err}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)
	admitted := make([]int, len(cases))
	for r := range results {
		if r.err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", cases[r.c].name, r.err))
		}
		if r.ok {
			admitted[r.c]++
		}
	}
	for i, c := range cases {
		if admitted[i] != c.limit {
			problems = append(problems, fmt.Sprintf("%s: %d of %d admitted across 3 replicas, want exactly %d", c.name, admitted[i], perCase, c.limit))
		} else {
			t.Logf("%s: %d of %d admitted across 3 replicas (limit %d)", c.name, admitted[i], perCase, c.limit)
		}
	}
	return problems, time.Now().Unix()/60 != minute
}

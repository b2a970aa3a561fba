// Package faults proves what sluice does when things go wrong, against the real binary (built once by TestMain)
// and, for database faults, a private PostgreSQL cluster started by the test (never the shared server): the
// database killed and restarted under load, a row held locked, a pool smaller than the clients, SIGTERM under
// load, slow and hostile clients, and secrets in logs. docs/reliability.md lists each test with its figures.
//
// Every bound on time is generous (a multiple of the timeout in play): these tests prove behaviour, not speed.
// The figures they log (go test -v) are what docs/reliability.md reports.
package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var sluiceBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-faults-")
	if err != nil {
		panic(err)
	}
	sluiceBin = filepath.Join(dir, "sluice")
	cmd := exec.Command("go", "build", "-o", sluiceBin, ".")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build sluice: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one `sluice serve` process.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	base string
	log  string
	done chan struct{}
	err  error // the exit status, once done is closed
}

// writeConfig writes a config file into dir and returns its path.
func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	p := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startSluice runs `sluice serve` with the config file and env, logging to a file, and waits for /readyz.
func startSluice(t *testing.T, name, config string, env ...string) *proc {
	t.Helper()
	p := startSluiceNoWait(t, name, config, env...)
	p.waitReady(t, 30*time.Second)
	return p
}

func startSluiceNoWait(t *testing.T, name, config string, env ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	p := &proc{name: name, addr: addr, base: "http://" + addr, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(sluiceBin, "serve")
	// Only what the test sets: no SLUICE_* setting leaks in from the environment running the tests.
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "SLUICE_CONFIG=" + config, "SLUICE_LISTEN=" + addr}
	p.cmd.Env = append(base, env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(40 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	return p
}

func (p *proc) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(p.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			p.dumpLog(t)
			t.Fatalf("%s exited before it was ready: %v", p.name, p.err)
		default:
		}
		if time.Now().After(deadline) {
			p.dumpLog(t)
			t.Fatalf("%s not ready within %s", p.name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *proc) dumpLog(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(p.logText()), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("--- %s log (last %d lines) ---\n%s", p.name, len(lines), strings.Join(lines, "\n"))
}

// metrics scrapes /metrics into name{labels} → value.
func (p *proc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// outcome is one check as the client saw it.
type outcome struct {
	at       time.Time // when it was sent
	took     time.Duration
	status   int // 0: transport error
	err      string
	allowed  bool
	degraded bool
	retry    string // Retry-After header
	ptype    string // problem type, for errors
	policy   string
	key      string
	replica  int
}

type decisionBody struct {
	Allowed  bool   `json:"allowed"`
	Degraded bool   `json:"degraded"`
	Key      string `json:"key"`
	Type     string `json:"type"`
}

// check sends one POST /v1/check.
func check(ctx context.Context, c *http.Client, base, token, policy, key string) outcome {
	body, _ := json.Marshal(map[string]any{"policy": policy, "key": key})
	o := outcome{at: time.Now(), policy: policy, key: key}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/check", bytes.NewReader(body))
	if err != nil {
		o.err = err.Error()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		o.took, o.err = time.Since(o.at), err.Error()
		return o
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.took, o.status, o.retry = time.Since(o.at), resp.StatusCode, resp.Header.Get("Retry-After")
	if err != nil {
		o.err = err.Error()
		return o
	}
	var d decisionBody
	if err := json.Unmarshal(b, &d); err != nil {
		o.err = fmt.Sprintf("body %q: %v", b, err)
		return o
	}
	o.allowed, o.degraded, o.ptype = d.Allowed, d.Degraded, d.Type
	return o
}

// recorder collects outcomes from many goroutines.
type recorder struct {
	mu  sync.Mutex
	all []outcome
}

func (r *recorder) add(o outcome) {
	r.mu.Lock()
	r.all = append(r.all, o)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// load runs n clients until ctx ends, each sending checks chosen by pick (client index, sequence number) to
// replicas round robin. It returns when every client has stopped.
func load(ctx context.Context, n int, bases []string, token string, rec *recorder, pick func(client, seq int) (policy, key string)) {
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				policy, key := pick(i, seq)
				r := (i + seq) % len(bases)
				o := check(context.Background(), client, bases[r], token, policy, key)
				o.replica = r
				rec.add(o)
			}
		}()
	}
	wg.Wait()
}

// percentile of durations (p in [0, 100]).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func latencies(xs []outcome) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, o := range xs {
		out[i] = o.took
	}
	return out
}

// summary is "n=…, p50 …, p99 …, max …" for a log line.
func summary(xs []outcome) string {
	ls := latencies(xs)
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(ls), percentile(ls, 50).Round(time.Millisecond/10),
		percentile(ls, 99).Round(time.Millisecond/10), percentile(ls, 100).Round(time.Millisecond/10))
}

// statuses counts outcomes by "status/kind".
func statuses(xs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range xs {
		k := strconv.Itoa(o.status)
		switch {
		case o.status == 0:
			k = "transport-error"
		case o.status == 200 && o.degraded:
			k = "200-degraded"
		case o.status == 200 && o.allowed:
			k = "200-allowed"
		case o.status == 200:
			k = "200-denied"
		case o.ptype != "":
			k += "-" + strings.TrimPrefix(o.ptype, "https://sluice.dev/problems/")
		}
		m[k]++
	}
	return m
}

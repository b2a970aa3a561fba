package redis_test

import (
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
)

// TestReplicasOnClusterExact runs 3 real `sluice serve` processes on the shared Redis Cluster and drives hundreds
// of concurrent clients spread across them: for every (policy, key), under each algorithm, the admissions equal
// the limit exactly (the windows are long enough that nothing refills during the test).
func TestReplicasOnClusterExact(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three processes")
	}
	addrs := redistest.ClusterAddrs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := buildSluice(t, ctx, dir)
	cfg := writeConfig(t, dir, `
policies:
  - {name: log, limit: 25, window: 1h}
  - {name: single, limit: 1, window: 1h}
  - {name: bucket, limit: 40, window: 1h, algorithm: token_bucket}
  - {name: fixed, limit: 30, window: 24h, algorithm: fixed_window}
`)
	prefix := redistest.Prefix()
	var rs []*sluiceProc
	for i := range 3 {
		rs = append(rs, startSluice(t, bin, dir, fmt.Sprintf("r%d", i), cfg, "SLUICE_REDIS_ADDRS="+addrs[i], "SLUICE_REDIS_PREFIX="+prefix))
	}
	for _, r := range rs {
		r.waitReady(t, ctx)
	}
	limits := map[string]int{"log": 25, "single": 1, "bucket": 40, "fixed": 30}
	keys := []string{"10.0.0.1", "tenant:42", "user/ü", "a\x00b", "{brace}", "}x{"}
	type pair struct {
		policy, key string
	}
	var ps []pair
	for p := range limits {
		for _, k := range keys {
			ps = append(ps, pair{p, k})
		}
	}
	const clients, per = 300, 60
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	admitted := map[pair]int{}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	total := len(ps) * per
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rs[c%len(rs)]
			for n := c; n < total; n += clients {
				p := ps[n%len(ps)]
				d, err := r.check(ctx, client, p.policy, p.key, 1)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					mu.Lock()
					admitted[p]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d checks by %d clients over %d replicas on the cluster in %s", total, clients, len(rs), time.Since(start).Round(time.Millisecond))
	for _, p := range ps {
		if admitted[p] != limits[p.policy] {
			t.Errorf("%s/%q admitted %d, want exactly %d", p.policy, p.key, admitted[p], limits[p.policy])
		}
	}
	if t.Failed() {
		for _, r := range rs {
			r.dumpLog(t)
		}
	}
}

// sluiceProc is one `sluice serve` process on the Redis store.
type sluiceProc struct {
	name, base, log string
	cmd             *exec.Cmd
	done            chan struct{}
}

type decisionJSON struct {
	Allowed      bool  `json:"allowed"`
	Remaining    int64 `json:"remaining"`
	RetryAfterMs int64 `json:"retry_after_ms"`
}

func (r *sluiceProc) check(ctx context.Context, c *http.Client, policy, key string, cost int) (decisionJSON, error) {
	body, _ := json.Marshal(map[string]any{"policy": policy, "key": key, "cost": cost})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+"/v1/check", bytes.NewReader(body))
	if err != nil {
		return decisionJSON{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return decisionJSON{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return decisionJSON{}, &statusError{code: resp.StatusCode, body: string(b)}
	}
	var d decisionJSON
	if err := json.Unmarshal(b, &d); err != nil {
		return decisionJSON{}, fmt.Errorf("POST /v1/check: %w: %s", err, b)
	}
	return d, nil
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("POST /v1/check: %d %s", e.code, e.body) }

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func buildSluice(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sluice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build sluice: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startSluice(t *testing.T, bin, dir, name, cfg string, env ...string) *sluiceProc {
	t.Helper()
	port := freePort(t)
	r := &sluiceProc{name: name, base: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(dir, name+".log")}
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "serve")
	r.cmd.Env = append(os.Environ(), "SLUICE_CONFIG="+cfg, fmt.Sprintf("SLUICE_LISTEN=127.0.0.1:%d", port),
		"SLUICE_STORE=redis", "SLUICE_REDIS_TIMEOUT=5s", "SLUICE_LOG_LEVEL=info")
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
		}
		logf.Close()
	})
	return r
}

func (r *sluiceProc) waitReady(t *testing.T, ctx context.Context) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if ctx.Err() != nil {
			r.dumpLog(t)
			t.Fatalf("%s never became ready", r.name)
		}
		select {
		case <-r.done:
			r.dumpLog(t)
			t.Fatalf("%s exited before it was ready", r.name)
		case <-time.After(50 * time.Millisecond): // a process starting, not a clock
		}
	}
}

func (r *sluiceProc) dumpLog(t *testing.T) {
	b, _ := os.ReadFile(r.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	t.Logf("--- %s log (last %d lines) ---\n%s", r.name, len(lines), strings.Join(lines, "\n"))
}

package redis_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/integration/serveproc"
)

// TestReplicasOnClusterExact runs 3 real `sluice serve` processes on the shared Redis Cluster and drives hundreds
// of concurrent clients spread across them: for every (policy, key), under each algorithm, the admissions equal
// the limit exactly (the windows are long enough that nothing refills during the test).
func TestReplicasOnClusterExact(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three processes")
	}
	addrs := redistest.ClusterAddrs(t)
	replicasExact(t, "the cluster", addrs)
}

// TestReplicasOnSingleRedisExact is the same on one Redis, where each replica sends its checks through the
// coalescer's lanes (redis.lanes): a laned script call decides checks of several keys, and the three replicas'
// calls interleave on the server.
func TestReplicasOnSingleRedisExact(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three processes")
	}
	addr := redistest.SingleAddr(t)
	replicasExact(t, "one Redis", []string{addr, addr, addr})
}

// replicasExact runs one replica per seed in addrs.
func replicasExact(t *testing.T, where string, addrs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := serveproc.Build(t, ctx, dir)
	cfg := writeConfig(t, dir, `
policies:
  - {name: log, limit: 25, window: 1h}
  - {name: single, limit: 1, window: 1h}
  - {name: bucket, limit: 40, window: 1h, algorithm: token_bucket}
  - {name: fixed, limit: 30, window: 24h, algorithm: fixed_window}
`)
	prefix := redistest.Prefix()
	var rs []*serveproc.Proc
	for i := range 3 {
		rs = append(rs, startSluice(t, bin, dir, fmt.Sprintf("r%d", i), cfg, "SLUICE_REDIS_ADDRS="+addrs[i], "SLUICE_REDIS_PREFIX="+prefix))
	}
	for _, r := range rs {
		r.WaitReady(t, ctx)
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
				d, err := r.Check(ctx, client, p.policy, p.key, 1)
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
	t.Logf("%d checks by %d clients over %d replicas on %s in %s", total, clients, len(rs), where, time.Since(start).Round(time.Millisecond))
	for _, p := range ps {
		if admitted[p] != limits[p.policy] {
			t.Errorf("%s/%q admitted %d, want exactly %d", p.policy, p.key, admitted[p], limits[p.policy])
		}
	}
	if t.Failed() {
		for _, r := range rs {
			r.DumpLog(t)
		}
	}
}

// startSluice runs one `sluice serve` process on the Redis store; env adds the test's redis.* settings.
func startSluice(t *testing.T, bin, dir, name, cfg string, env ...string) *serveproc.Proc {
	t.Helper()
	return serveproc.Start(t, bin, dir, name, cfg, append([]string{"SLUICE_STORE=redis", "SLUICE_REDIS_TIMEOUT=5s"}, env...)...)
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

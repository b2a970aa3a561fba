package postgres_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/integration/serveproc"
)

// TestReplicasShareOneExactCap runs real `sluice serve` processes (separate OS processes, own ports) on one
// database and drives hundreds of concurrent clients spread across them: for every (policy, key) the admissions
// equal the limit exactly, with the replicas' clocks in agreement and skewed by minutes (the store decides with
// the database clock), and admission resumes once a window has passed.
func TestReplicasShareOneExactCap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts six processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A private cluster: six replicas and the test's own connections must not compete with other tests for the
	// shared server's connection slots.
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewEmptyDatabaseOn(t, cluster.URL()) // the replicas migrate it themselves, all at once, under the advisory lock
	dir := t.TempDir()
	start := time.Now()
	bin := serveproc.Build(t, ctx, dir)
	t.Logf("built sluice in %s", time.Since(start).Round(time.Millisecond))

	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte(`
policies:
  - {name: burst, limit: 25, window: 1h}
  - {name: hourly, limit: 60, window: 1h}
  - {name: single, limit: 1, window: 1h}
  # Shorter than the replicas' skew (7 minutes between the extremes): a store that trusted each replica's clock
  # would see another replica's units as long gone and admit them again.
  - {name: fivemin, limit: 30, window: 5m}
  - {name: short, limit: 20, window: 3s}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	offsets := []string{"0s", "0s", "0s", "-3m", "0s", "+4m"}
	replicas := make([]*serveproc.Proc, len(offsets))
	for i, off := range offsets {
		replicas[i] = startReplica(t, bin, dir, cfg, url, fmt.Sprintf("r%d(%s)", i, off), off)
	}
	start = time.Now()
	for _, r := range replicas {
		r.WaitReady(t, ctx)
	}
	t.Logf("%d replicas started, migrated the database and became ready in %s", len(replicas), time.Since(start).Round(time.Millisecond))
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 400, MaxConnsPerHost: 400}}
	defer client.CloseIdleConnections()

	type pair struct {
		policy, key string
		limit       int
	}
	pairs := func(keys []string, ps map[string]int) []pair {
		var out []pair
		for p, l := range ps {
			for _, k := range keys {
				out = append(out, pair{p, k, l})
			}
		}
		return out
	}
	// drive sends `per` checks for each pair from `clients` concurrent clients spread across rs, and returns the
	// admissions per pair.
	drive := func(t *testing.T, rs []*serveproc.Proc, ps []pair, clients, per int) map[pair]int {
		t.Helper()
		total := len(ps) * per
		var mu sync.Mutex
		admitted := map[pair]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, clients)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rs[c%len(rs)]
				<-start
				for n := c; n < total; n += clients {
					p := ps[n%len(ps)]
					d, err := r.Check(ctx, client, p.policy, p.key, 1)
					if err != nil {
						errs <- fmt.Errorf("%s: %w", r.Name, err)
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
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return admitted
	}
	exact := func(t *testing.T, what string, ps []pair, admitted map[pair]int) {
		t.Helper()
		for _, p := range ps {
			if admitted[p] != p.limit {
				t.Errorf("%s: %s/%s admitted %d, want exactly %d", what, p.policy, p.key, admitted[p], p.limit)
			}
		}
	}
	keys := []string{"10.0.0.1", "tenant:42", "user/ü", "a\x00b"}
	const clients = 320

	t.Run("ClocksAgree", func(t *testing.T) {
		ps := pairs(keys, map[string]int{"burst": 25, "hourly": 60, "single": 1})
		start := time.Now()
		admitted := drive(t, replicas[:3], ps, clients, 100) // 1,200 checks, 100 per pair
		exact(t, "clocks agree", ps, admitted)
		t.Logf("%d checks by %d clients over 3 replicas in %s", len(ps)*100, clients, time.Since(start).Round(time.Millisecond))
	})

	t.Run("ClocksSkewedByMinutes", func(t *testing.T) {
		ps := pairs([]string{"skew-1", "skew-2", "skew-3"}, map[string]int{"fivemin": 30, "burst": 25})
		admitted := drive(t, replicas[3:], ps, clients, 100)
		exact(t, "clocks -3m/0s/+4m", ps, admitted)
		// And the replicas with and without skew together, on the same keys.
		more := drive(t, replicas, ps, clients, 20)
		for _, p := range ps {
			if more[p] != 0 {
				t.Errorf("all replicas: %s/%s admitted %d more within the window", p.policy, p.key, more[p])
			}
		}
	})

	t.Run("AdmissionResumesAfterTheWindow", func(t *testing.T) {
		ps := pairs([]string{"s1", "s2"}, map[string]int{"short": 20})
		for round := 1; round <= 2; round++ {
			start := time.Now()
			admitted := drive(t, replicas, ps, clients, 80)
			took := time.Since(start)
			if took >= 3*time.Second {
				t.Fatalf("round %d took %s, longer than the 3s window: the count below would not be one window's", round, took)
			}
			exact(t, fmt.Sprintf("round %d", round), ps, admitted)
			if round == 2 {
				break
			}
			// Wait (polling with peeks, which record nothing) until every unit has left the window.
			for _, p := range ps {
				for {
					d, err := replicas[0].Check(ctx, client, p.policy, p.key, 0)
					if err != nil {
						t.Fatal(err)
					}
					if d.Remaining == int64(p.limit-1) {
						break
					}
					if ctx.Err() != nil {
						t.Fatal("the window never passed")
					}
					time.Sleep(min(time.Duration(d.RetryAfterMs+1)*time.Millisecond, 250*time.Millisecond))
				}
			}
		}
	})
	if t.Failed() {
		for _, r := range replicas {
			r.DumpLog(t)
		}
	}
}

// startReplica runs one `sluice serve` process on the database url, its clock shifted by offset.
func startReplica(t *testing.T, bin, dir, cfg, url, name, offset string) *serveproc.Proc {
	t.Helper()
	return serveproc.Start(t, bin, dir, name, cfg,
		"SLUICE_STORE=postgres",
		"SLUICE_DATABASE_URL="+url,
		"SLUICE_MIGRATE_ON_START=true",
		"SLUICE_CLOCK_OFFSET="+offset,
		// Generous for a 2-core CI machine running six replicas, the database and 320 clients at once; the
		// failure-mode tests use the default 250ms.
		"SLUICE_POSTGRES_STATEMENT_TIMEOUT=5s",
		// Six replicas share the test server (max_connections 100 by default) with other tests' databases.
		"SLUICE_POSTGRES_MAX_CONNS=6",
	)
}

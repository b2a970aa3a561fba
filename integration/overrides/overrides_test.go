// Package overrides is the across-replicas test of issue 24's overrides on real `sluice serve` processes: on the
// memory store, overrides made over the API; on PostgreSQL and on a Redis Cluster (two replicas each), a config
// file's overrides of a policy's limit, the API refusing an API policy's overrides with a problem naming `policy`.
// Concurrent clients spend a key through random replicas: the units admitted are exactly the limit of the
// override that applies (an hour's window: nothing leaves it during the test), and every decision names it.
//
// With -short, or without PostgreSQL or redis-server, a store's subtest is skipped, unless CI=true: then it runs,
// or fails.
package overrides

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/integration/serveproc"
)

const config = `policies:
  - name: tiers
    limit: 5
    window: 1h
    overrides:
      - {match: "gold:*", limit: 12}
      - {match: "gold:vip", limit: 3}
`

func TestOverridesAcrossReplicas(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("builds the binary and starts five processes")
	}
	dir := t.TempDir()
	bctx, bcancel := context.WithTimeout(context.Background(), 8*time.Minute)
	bin := serveproc.Build(t, bctx, dir)
	bcancel()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Run("memory", func(t *testing.T) {
		r := serveproc.Start(t, bin, t.TempDir(), "r0", cfg, "SLUICE_STORE=memory")
		r.WaitReady(t, ctx)
		rs := []*serveproc.Proc{r}
		spend(t, ctx, client, rs, "tiers", "gold:a", 12, "gold:*")
		spend(t, ctx, client, rs, "tiers", "gold:vip", 3, "gold:vip")
		spend(t, ctx, client, rs, "tiers", "plain", 5, "")
		if _, err := r.PutPolicy(ctx, client, "api", serveproc.PolicySpec{Limit: 2, Window: "1h"}); err != nil {
			t.Fatal(err)
		}
		put := func(match string, body any) {
			t.Helper()
			code, b, err := r.Send(ctx, client, http.MethodPut, "/v1/policies/api/overrides/"+url.PathEscape(match), body)
			if err != nil || (code != 200 && code != 201) {
				t.Fatalf("PUT override %s: %d %s %v", match, code, b, err)
			}
		}
		put("t:*", map[string]any{"limit": 9})
		spend(t, ctx, client, rs, "api", "t:1", 9, "t:*")
		// Lowered below what the key spent: it binds at the next decision, the key's history kept.
		put("t:*", map[string]any{"limit": 4})
		spend(t, ctx, client, rs, "api", "t:1", 0, "t:*")
		spend(t, ctx, client, rs, "api", "t:2", 4, "t:*")
		// The config policy's overrides are read-only over the API.
		if code, b, _ := r.Send(ctx, client, http.MethodPut, "/v1/policies/tiers/overrides/x", map[string]any{"limit": 1}); code != 409 {
			t.Fatalf("PUT a config policy's override: %d %s, want 409", code, b)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		db := pgtest.NewDatabase(t)
		d := t.TempDir()
		env := []string{"SLUICE_STORE=postgres", "SLUICE_DATABASE_URL=" + db, "SLUICE_POSTGRES_STATEMENT_TIMEOUT=5s", "SLUICE_POSTGRES_MAX_CONNS=8"}
		shared(t, ctx, client, []*serveproc.Proc{serveproc.Start(t, bin, d, "r0", cfg, env...), serveproc.Start(t, bin, d, "r1", cfg, env...)})
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t)
		d := t.TempDir()
		env := []string{"SLUICE_STORE=redis", "SLUICE_REDIS_ADDRS=" + strings.Join(c.Addrs(), ","), "SLUICE_REDIS_TIMEOUT=5s"}
		shared(t, ctx, client, []*serveproc.Proc{serveproc.Start(t, bin, d, "r0", cfg, env...), serveproc.Start(t, bin, d, "r1", cfg, env...)})
	})
}

// shared is the shared-store half: the config file's overrides across both replicas, an API policy's refused.
func shared(t *testing.T, ctx context.Context, client *http.Client, rs []*serveproc.Proc) {
	for _, r := range rs {
		r.WaitReady(t, ctx)
	}
	spend(t, ctx, client, rs, "tiers", "gold:a", 12, "gold:*")
	spend(t, ctx, client, rs, "tiers", "gold:vip", 3, "gold:vip")
	spend(t, ctx, client, rs, "tiers", "plain", 5, "")
	if _, err := rs[0].PutPolicy(ctx, client, "api", serveproc.PolicySpec{Limit: 2, Window: "1h"}); err != nil {
		t.Fatal(err)
	}
	code, b, err := rs[0].Send(ctx, client, http.MethodPut, "/v1/policies/api/overrides/x", map[string]any{"limit": 9})
	var problem struct {
		Errors []struct {
			Field string `json:"field"`
		} `json:"errors"`
	}
	_ = json.Unmarshal(b, &problem)
	if err != nil || code != 400 || len(problem.Errors) != 1 || problem.Errors[0].Field != "policy" {
		t.Fatalf("an API policy's override on a shared store: %d %s %v, want 400 naming policy", code, b, err)
	}
}

// spend sends 3 × limit + 6 cost-1 checks of key from 12 clients through random replicas and requires exactly want
// admitted, every decision naming the override match (or none).
func spend(t *testing.T, ctx context.Context, client *http.Client, rs []*serveproc.Proc, policy, key string, want int, match string) {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	tries := 3*max(want, 4) + 6
	var next atomic.Int64
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 24))
			for next.Add(1) <= int64(tries) {
				r := rs[rng.IntN(len(rs))]
				d, err := r.Check(ctx, client, policy, key, 1)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", r.Name, err)
					return
				}
				if d.Override != match {
					errs <- fmt.Errorf("%s: %s decided under override %q, want %q", r.Name, key, d.Override, match)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, r := range rs {
			r.DumpLog(t)
		}
		t.Fatal(err)
	}
	if n := admitted.Load(); n != int64(want) {
		t.Fatalf("%s/%s: %d admitted in %d tries across %d replicas, want exactly %d", policy, key, n, tries, len(rs), want)
	}
}

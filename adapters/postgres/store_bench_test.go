package postgres_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkDecide is the store's decision path against the local database (SLUICE_TEST_DATABASE_URL, default
// 127.0.0.1:5432; skipped when unreachable), from 64 goroutines over a 16-connection pool: uniform over 10,000
// keys and one hot key, each plain and through the coalescer (per key, and 16 lanes as `sluice serve` wires it).
// The policy admits everything (limit 1e9) with a 1 s window, so a hot key's log stays bounded.
func BenchmarkDecide(b *testing.B) {
	for _, keys := range []int{10_000, 1} {
		for _, mode := range []string{"plain", "coalesce-keys", "coalesce-lanes"} {
			name := "uniform-10000"
			if keys == 1 {
				name = "hot"
			}
			b.Run(name+"/"+mode, func(b *testing.B) {
				s := open(b, postgres.Options{MaxConns: 16, StatementTimeout: 5 * time.Second})
				var store domain.BucketStore = s
				switch mode {
				case "coalesce-keys":
					store = coalesce.New(s, coalesce.Options{})
				case "coalesce-lanes":
					store = coalesce.New(s, coalesce.Options{Lanes: 16})
				}
				rs := make([]domain.BucketRequest, keys)
				for i := range rs {
					rs[i] = domain.BucketRequest{Policy: "bench", Key: strconv.Itoa(i + 1), Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1_000_000_000, Window: time.Second}, Cost: 1}
				}
				ctx := context.Background()
				var seed atomic.Uint64
				b.SetParallelism(32) // 64 goroutines on 2 CPUs
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					x := seed.Add(0x9e3779b97f4a7c15)
					for pb.Next() {
						x ^= x << 13
						x ^= x >> 7
						x ^= x << 17
						if _, err := store.Decide(ctx, rs[x%uint64(len(rs))]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// benchLanes is the coalescer's lane count in BenchmarkHolds: app.DefaultLanes, what `sluice serve` wires with a
// pool of 16 connections (postgres.lanes 0).
const benchLanes = 4

// BenchmarkHolds compares holds with checks as `sluice serve` runs them: through the coalescer's lanes
// (coalesce.New with benchLanes lanes, as app/postgres.go wires it), from 64 goroutines over a 16-connection pool.
// Each shape (algorithm; uniform over 10,000 keys, or one hot key) runs checks (one Decide of cost 1) and pairs
// (an acquire of 2 units and its settle to 1: two operations, one after the other) in the same run, taking turns in
// slices of 250 ms, b.N × 5 ms in all, and reports checks/s, pairs/s and their ratio pair/check (checks/s ÷
// pairs/s; the target is ≤ 2): read those, not ns/op, which is only the slices' length. Windows
// are 1 h and limits high (1e9), so nothing is denied; a hold's deadline is the window, so a hot key's settled
// records stay until domain.MaxSettledKept trims them, as in production.
func BenchmarkHolds(b *testing.B) {
	for _, alg := range []domain.Algorithm{domain.TokenBucket, domain.SlidingLog} {
		for _, keys := range []int{10_000, 1} {
			name := "uniform-10000"
			if keys == 1 {
				name = "hot"
			}
			b.Run(string(alg)+"/"+name, func(b *testing.B) {
				s := open(b, postgres.Options{MaxConns: 16, StatementTimeout: 5 * time.Second})
				store := coalesce.New(s, coalesce.Options{Lanes: benchLanes})
				rule := domain.Rule{Algorithm: alg, Limit: 1_000_000_000, Window: time.Hour}
				rs := make([]domain.BucketRequest, keys)
				for i := range rs {
					rs[i] = domain.BucketRequest{Policy: "bench", Key: strconv.Itoa(i + 1), Rule: rule, Cost: 1}
				}
				ctx := context.Background()
				var seed, ids atomic.Uint64
				b.ReportAllocs()
				// run runs op from 64 goroutines for d and returns the ops completed and the time they took (until
				// the last one in flight when d ran out completed).
				run := func(d time.Duration, op func(r domain.BucketRequest) error) (int64, time.Duration) {
					var n atomic.Int64
					start := time.Now()
					end := start.Add(d)
					var wg sync.WaitGroup
					for range 64 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							x := seed.Add(0x9e3779b97f4a7c15)
							for time.Now().Before(end) {
								x ^= x << 13
								x ^= x >> 7
								x ^= x << 17
								if err := op(rs[x%uint64(len(rs))]); err != nil {
									b.Error(err)
									return
								}
								n.Add(1)
							}
						}()
					}
					wg.Wait()
					return n.Load(), time.Since(start)
				}
				check := func(r domain.BucketRequest) error {
					_, err := store.Decide(ctx, r)
					return err
				}
				pair := func(r domain.BucketRequest) error {
					id := strconv.FormatUint(ids.Add(1), 36)
					r.Cost = 2
					hd, err := store.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpAcquire, ID: id})
					if err != nil || !hd.Allowed || hd.Status != domain.HoldOK {
						return fmt.Errorf("acquire: %+v %v", hd, err)
					}
					r.Cost = 1
					if hd, err := store.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpSettle, ID: id}); err != nil || hd.Status != domain.HoldOK {
						return fmt.Errorf("settle: %+v %v", hd, err)
					}
					return nil
				}
				run(100*time.Millisecond, check) // the pool's connections
				b.ResetTimer()
				// Checks and pairs take turns in slices of 250 ms, so a change in the machine's load (other
				// processes on its 2 CPUs) weighs on both alike.
				var nc, np int64
				var tc, tp time.Duration
				for left := time.Duration(b.N) * 5 * time.Millisecond; left > 0; left -= 500 * time.Millisecond {
					n, t := run(min(left/2, 250*time.Millisecond), check)
					nc, tc = nc+n, tc+t
					n, t = run(min(left/2, 250*time.Millisecond), pair)
					np, tp = np+n, tp+t
				}
				checks, pairs := float64(nc)/tc.Seconds(), float64(np)/tp.Seconds()
				b.ReportMetric(checks, "checks/s")
				b.ReportMetric(pairs, "pairs/s")
				b.ReportMetric(checks/pairs, "pair/check")
			})
		}
	}
}

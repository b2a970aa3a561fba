package redis_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkHolds is the cost of holds beside plain checks, both sent as `sluice serve` sends them: on the single
// test Redis through the coalescer's lanes that app/redis.go puts in front of the store (app.DefaultRedisLanes 2,
// redisMaxBatch 64: checks, and hold ops, of several keys share a script call), on the test cluster straight to
// the store (a cluster is not laned). Per algorithm, 16 goroutines send checks (window algorithms; cost 2) and
// acquire+settle pairs (acquire 2, then settle to 1 on the window algorithms, release on concurrency), taking turns
// in slices of 250 ms so that a change in the machine's load weighs on both alike, on one hot key and uniformly
// over 1,000 keys, 1 h windows, limits high enough never to deny. The checks are of another policy than the pairs,
// so they are plain checks of keys without hold records. It reports µs per check and per pair (16 in flight: the
// inverse of their rates) and pair/check. docs/benchmarks.md quotes it.
//
//	go test -run '^$' -bench BenchmarkHolds -benchtime 2s ./adapters/redis/
func BenchmarkHolds(b *testing.B) {
	ctx := context.Background()
	for _, target := range []struct {
		name string
		open func(b *testing.B) domain.BucketStore
	}{
		{"single", func(b *testing.B) domain.BucketStore {
			s := open(b, []string{redistest.SingleAddr(b)}, nil, redis.Options{Timeout: 5 * time.Second})
			return coalesce.New(s, coalesce.Options{Lanes: 2, MaxBatch: 64})
		}},
		{"cluster", func(b *testing.B) domain.BucketStore {
			return open(b, redistest.ClusterAddrs(b), nil, redis.Options{Timeout: 5 * time.Second})
		}},
	} {
		b.Run(target.name, func(b *testing.B) {
			s := target.open(b)
			var seq atomic.Int64
			for _, a := range domain.Algorithms {
				r := rule(a, 1<<40, time.Hour)
				for _, spread := range []struct {
					name string
					keys int64
				}{{"hot", 1}, {"uniform", 1000}} {
					b.Run(string(a)+"/"+spread.name, func(b *testing.B) {
						key := func(n int64) string { return "u" + strconv.FormatInt(n%spread.keys, 10) }
						// run runs op from 16 goroutines for d and returns the ops completed and the time they took
						// (until the last one in flight when d ran out completed).
						run := func(d time.Duration, op func(n int64) error) (int64, time.Duration) {
							var done atomic.Int64
							start := time.Now()
							end := start.Add(d)
							var wg sync.WaitGroup
							for range 16 {
								wg.Add(1)
								go func() {
									defer wg.Done()
									for time.Now().Before(end) {
										if err := op(seq.Add(1)); err != nil {
											b.Error(err)
											return
										}
										done.Add(1)
									}
								}()
							}
							wg.Wait()
							return done.Load(), time.Since(start)
						}
						check := func(n int64) error {
							_, err := s.Decide(ctx, domain.BucketRequest{Policy: "hc-" + string(a), Key: key(n), Rule: r, Cost: 2})
							return err
						}
						pair := func(n int64) error {
							q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "hb-" + string(a), Key: key(n), Rule: r, Cost: 2},
								Op: domain.OpAcquire, ID: "h" + strconv.FormatInt(n, 10)}
							if hd, err := s.Hold(ctx, q); err != nil || !hd.Allowed || hd.Status != domain.HoldOK {
								return fmt.Errorf("acquire: %+v %v", hd, err)
							}
							q.Op, q.Cost = domain.OpSettle, 1
							if a.HoldsOnly() {
								q.Cost = 0
							}
							if hd, err := s.Hold(ctx, q); err != nil || hd.Status != domain.HoldOK {
								return fmt.Errorf("settle: %+v %v", hd, err)
							}
							return nil
						}
						run(100*time.Millisecond, pair) // keys holding records, as in steady state
						b.ResetTimer()
						var nc, np int64
						var tc, tp time.Duration
						for left := time.Duration(b.N) * 5 * time.Millisecond; left > 0; left -= 500 * time.Millisecond {
							if !a.HoldsOnly() {
								n, t := run(min(left/2, 250*time.Millisecond), check)
								nc, tc = nc+n, tc+t
							}
							n, t := run(min(left/2, 250*time.Millisecond), pair)
							np, tp = np+n, tp+t
						}
						pairUS := tp.Seconds() * 1e6 / float64(np)
						b.ReportMetric(pairUS, "µs/pair")
						if nc > 0 {
							checkUS := tc.Seconds() * 1e6 / float64(nc)
							b.ReportMetric(checkUS, "µs/check")
							b.ReportMetric(pairUS/checkUS, "pair/check")
						}
					})
				}
			}
		})
	}
}

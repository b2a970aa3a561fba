package redis_test

import (
	"context"
	"strconv"
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
// redisMaxBatch 64: checks, and hold ops when the coalescer carries them, of several keys share a script call),
// on the test cluster straight to the store (a cluster is not laned). Per algorithm, one check per op (window
// algorithms) against one acquire+settle pair per op (settle to half the amount on the window algorithms, a
// release on concurrency), on one hot key and uniformly over 1,000 keys, 1 h windows, limits high enough never to
// deny; the pair's line reports pair/check, its ns/op over the check's measured just before it in the same run.
// docs/benchmarks.md quotes it.
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
					run := func(b *testing.B, f func(key string, n int64) error) float64 {
						b.SetParallelism(8)
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								n := seq.Add(1)
								if err := f("u"+strconv.FormatInt(n%spread.keys, 10), n); err != nil {
									b.Error(err)
									return
								}
							}
						})
						return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
					}
					var check float64 // ns per check, measured just before the pairs
					if !a.HoldsOnly() {
						b.Run(string(a)+"/check/"+spread.name, func(b *testing.B) {
							check = run(b, func(key string, _ int64) error {
								_, err := s.Decide(ctx, domain.BucketRequest{Policy: "hb-" + string(a), Key: key, Rule: r, Cost: 2})
								return err
							})
						})
					}
					b.Run(string(a)+"/pair/"+spread.name, func(b *testing.B) {
						pair := run(b, func(key string, n int64) error {
							q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "hb-" + string(a), Key: key, Rule: r, Cost: 2},
								Op: domain.OpAcquire, ID: "h" + strconv.FormatInt(n, 10)}
							if _, err := s.Hold(ctx, q); err != nil {
								return err
							}
							q.Op, q.Cost = domain.OpSettle, 1
							if a.HoldsOnly() {
								q.Cost = 0
							}
							_, err := s.Hold(ctx, q)
							return err
						})
						if check > 0 {
							b.ReportMetric(pair/check, "pair/check")
						}
					})
				}
			}
		})
	}
}

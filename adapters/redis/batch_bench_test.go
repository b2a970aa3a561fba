package redis_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkClusterMultiCheck is the cost of an atomic two-limit multi-check on the cluster: a burst and a daily
// limit of one key (one slot: one script), against two keys in different slots (reserve slot by slot), and a
// single check for scale. docs/benchmarks.md quotes it.
//
//	go test -run '^$' -bench BenchmarkClusterMultiCheck -benchtime 3s ./adapters/redis/
func BenchmarkClusterMultiCheck(b *testing.B) {
	s := open(b, redistest.ClusterAddrs(b)[:1], nil, redis.Options{Timeout: 5 * time.Second})
	burst := domain.Rule{Algorithm: domain.SlidingWindow, Limit: 1 << 40, Window: time.Second, Resolution: 100 * time.Millisecond}
	daily := domain.Rule{Algorithm: domain.SlidingWindow, Limit: 1 << 40, Window: 24 * time.Hour, Resolution: time.Hour}
	ctx := context.Background()
	var n atomic.Int64
	run := func(b *testing.B, f func(k string) error) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := f("u" + strconv.FormatInt(n.Add(1)%1000, 10)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("single", func(b *testing.B) {
		run(b, func(k string) error {
			_, err := s.Decide(ctx, domain.BucketRequest{Policy: "burst", Key: k, Rule: burst, Cost: 1})
			return err
		})
	})
	b.Run("one-slot", func(b *testing.B) {
		run(b, func(k string) error {
			_, err := s.DecideBatch(ctx, []domain.BucketRequest{
				{Policy: "burst", Key: k, Rule: burst, Cost: 1}, {Policy: "daily", Key: k, Rule: daily, Cost: 1}}, true)
			return err
		})
	})
	b.Run("cross-slot", func(b *testing.B) {
		run(b, func(k string) error {
			_, err := s.DecideBatch(ctx, []domain.BucketRequest{
				{Policy: "burst", Key: k, Rule: burst, Cost: 1}, {Policy: "daily", Key: k + "/tenant", Rule: daily, Cost: 1}}, true)
			return err
		})
	})
}

// BenchmarkDecide is one check per call on the single test Redis, per algorithm (1,000 keys, 1-minute window,
// admissions). The server's own cost is in `INFO commandstats` (cmdstat_evalsha usec_per_call).
//
//	go test -run '^$' -bench BenchmarkDecide -benchtime 2s ./adapters/redis/
func BenchmarkDecide(b *testing.B) {
	s := open(b, []string{redistest.SingleAddr(b)}, nil, redis.Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	for _, a := range domain.WindowAlgorithms {
		b.Run(string(a), func(b *testing.B) {
			r := rule(a, 1<<40, time.Minute)
			var n atomic.Int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := "u" + strconv.FormatInt(n.Add(1)%1000, 10)
					if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "bench", Key: k, Rule: r, Cost: 1}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

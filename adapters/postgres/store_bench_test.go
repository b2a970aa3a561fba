package postgres_test

import (
	"context"
	"strconv"
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

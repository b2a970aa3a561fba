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

// BenchmarkHolds compares holds with checks on the same key patterns (uniform over 10,000 keys, and one hot key)
// and the same setup as BenchmarkDecide (64 goroutines, a 16-connection pool): "check" is one Decide of cost 1,
// "acquire-settle" one acquire of 2 units and its settle to 1 (two statements; each op is a pair). Windows are
// 1 h and limits high (1e9), so nothing is denied; a hold's deadline is the window, so a hot key's settled
// records stay until domain.MaxHolds and an acquire then drops them (Bucket.dropClosed), as in production.
func BenchmarkHolds(b *testing.B) {
	for _, alg := range []domain.Algorithm{domain.TokenBucket, domain.SlidingLog} {
		for _, keys := range []int{10_000, 1} {
			for _, mode := range []string{"check", "acquire-settle"} {
				name := "uniform-10000"
				if keys == 1 {
					name = "hot"
				}
				b.Run(string(alg)+"/"+name+"/"+mode, func(b *testing.B) {
					s := open(b, postgres.Options{MaxConns: 16, StatementTimeout: 5 * time.Second})
					rule := domain.Rule{Algorithm: alg, Limit: 1_000_000_000, Window: time.Hour}
					rs := make([]domain.BucketRequest, keys)
					for i := range rs {
						rs[i] = domain.BucketRequest{Policy: "bench", Key: strconv.Itoa(i + 1), Rule: rule, Cost: 1}
					}
					ctx := context.Background()
					var seed, ids atomic.Uint64
					b.SetParallelism(32)
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						x := seed.Add(0x9e3779b97f4a7c15)
						for pb.Next() {
							x ^= x << 13
							x ^= x >> 7
							x ^= x << 17
							r := rs[x%uint64(len(rs))]
							if mode == "check" {
								if _, err := s.Decide(ctx, r); err != nil {
									b.Error(err)
									return
								}
								continue
							}
							id := strconv.FormatUint(ids.Add(1), 36)
							r.Cost = 2
							hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpAcquire, ID: id})
							if err != nil || !hd.Allowed || hd.Status != domain.HoldOK {
								b.Errorf("acquire: %+v %v", hd, err)
								return
							}
							r.Cost = 1
							if hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpSettle, ID: id}); err != nil || hd.Status != domain.HoldOK {
								b.Errorf("settle: %+v %v", hd, err)
								return
							}
						}
					})
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
				})
			}
		}
	}
}

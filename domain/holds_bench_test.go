package domain_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkHolds sets a hold (acquire, then settle for less: the reserve → settle pair of an LLM call) beside a
// check of the same policy and keys, on the memory store, in the same run: 1 h windows, a limit no run reaches,
// keys hot (one) and uniform (10,000). docs/benchmarks.md records the ratio pair/check (the target: at most 2).
func BenchmarkHolds(b *testing.B) {
	for _, alg := range []domain.Algorithm{domain.SlidingWindow, domain.Concurrency} {
		for _, keys := range []int{1, 10_000} {
			shape := "hot"
			if keys > 1 {
				shape = "uniform-" + strconv.Itoa(keys)
			}
			clock := &stepClock{step: 10 * time.Microsecond}
			svc, err := domain.NewService([]domain.Policy{{Name: "bench", Limit: 1 << 50, Window: time.Hour, Algorithm: alg}},
				memory.NewPolicies(clock), memory.New(clock, memory.Options{}), domain.NopObserver{}, clock)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			names := make([]string, keys)
			for i := range names {
				names[i] = "user:" + strconv.Itoa(i)
			}
			key := func(i int) string { return names[i%keys] }
			ids := make([]string, 1<<16) // reused far apart: a hot key keeps 16 settled records
			for i := range ids {
				ids[i] = "req-" + strconv.Itoa(i)
			}
			if alg != domain.Concurrency {
				b.Run(string(alg)+"/check/"+shape, func(b *testing.B) {
					i := 0
					for b.Loop() {
						if res, err := svc.Check(ctx, domain.CheckRequest{Policy: "bench", Key: key(i), Cost: 100}); err != nil || !res.Allowed {
							b.Fatal(res, err)
						}
						i++
					}
				})
			}
			b.Run(string(alg)+"/acquire+settle/"+shape, func(b *testing.B) {
				i := 0
				for b.Loop() {
					id := ids[i%len(ids)]
					res, err := svc.Acquire(ctx, domain.AcquireRequest{Policy: "bench", Key: key(i), ID: id, Amount: 100})
					if err != nil || !res.Allowed {
						b.Fatal(res, err)
					}
					if _, err := svc.Settle(ctx, domain.HoldRef{Policy: "bench", Key: key(i), ID: id}, 40*int64(1-boolToInt(alg == domain.Concurrency))); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

func boolToInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

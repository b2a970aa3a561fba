package domain_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
)

// stepClock advances by step on every reading, so the benchmarks reach a steady state: entries leave the window
// as fast as they enter it and every ring keeps its size. (With a wall clock and a window longer than the run,
// the logs only grow, and the ring doublings show up as allocations.)
type stepClock struct {
	n    atomic.Int64
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	return time.Unix(1_000_000_000, 0).Add(time.Duration(c.n.Add(1)) * c.step)
}

// BenchmarkServiceCheck is the whole decision path below HTTP: validation, policy lookup, the memory store's
// shard lock and map, the exact sliding log, shadow/failure handling, in a steady state (see stepClock).
func BenchmarkServiceCheck(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys int
	}{{"uniform-10000", 10_000}, {"hot", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			svc, reqs := benchService(b, bc.keys)
			ctx := context.Background()
			// Warm-up: every key exists and its ring has reached its steady size.
			for i := 0; i < 200_000; i++ {
				svc.Check(ctx, reqs[i%len(reqs)])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				res, err := svc.Check(ctx, reqs[i%len(reqs)])
				if err != nil || !res.Allowed {
					b.Fatal(res, err)
				}
				i++
			}
		})
	}
}

// BenchmarkServiceCheckParallel is BenchmarkServiceCheck from GOMAXPROCS goroutines at once.
func BenchmarkServiceCheckParallel(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys int
	}{{"uniform-10000", 10_000}, {"hot", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			svc, reqs := benchService(b, bc.keys)
			ctx := context.Background()
			for i := 0; i < 200_000; i++ {
				svc.Check(ctx, reqs[i%len(reqs)])
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(time.Now().UnixNano())
				for pb.Next() {
					i = i*1103515245 + 12345
					if _, err := svc.Check(ctx, reqs[uint(i>>8)%uint(len(reqs))]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func benchService(b testing.TB, keys int) (*domain.Service, []domain.CheckRequest) {
	b.Helper()
	// Three clock readings per check (the store's instant, and the start and end of the store call for the
	// latency metric); a window of 30,000 readings keeps ~10,000 instants live over all keys, and a key of the
	// uniform shape ~1.
	clock := &stepClock{step: 100 * time.Microsecond}
	svc, err := domain.NewService([]domain.Policy{{Name: "bench", Limit: 1_000_000_000, Window: 3 * time.Second}},
		memory.NewPolicies(clock), memory.New(clock, memory.Options{}), domain.NopObserver{}, clock)
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]domain.CheckRequest, keys)
	for i := range reqs {
		reqs[i] = domain.CheckRequest{Policy: "bench", Key: "user:" + strconv.Itoa(i), Cost: 1}
	}
	return svc, reqs
}

// TestServiceCheckAllocatesNothing: after warm-up, an admitted check through the whole domain path over the memory
// store allocates nothing (the 0-allocations target of docs/benchmarks.md, held as a test so it cannot regress
// unnoticed; allocation counts, unlike timings, are deterministic).
func TestServiceCheckAllocatesNothing(t *testing.T) {
	svc, reqs := benchService(t, 100)
	ctx := context.Background()
	for i := 0; i < 50_000; i++ {
		svc.Check(ctx, reqs[i%len(reqs)])
	}
	i := 0
	allocs := testing.AllocsPerRun(10_000, func() {
		if res, err := svc.Check(ctx, reqs[i%len(reqs)]); err != nil || !res.Allowed {
			t.Fatal(res, err)
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("Service.Check allocates %.2f times per call after warm-up, want 0", allocs)
	}
}

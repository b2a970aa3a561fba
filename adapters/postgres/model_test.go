package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// The SQL functions reproduce domain/slidinglog.go bit for bit: random sequences of checks and batches (atomic or
// not, repeated keys, peeks, shadow checks, limits raised and lowered) get the same decisions from the Postgres
// store as from the memory store, which runs the Go algorithm.
//
// Each policy keeps one window here. When a window grows, the stores may differ: units that had left the old
// window count again under the new one if they are still in the log, and the Go log drops them on any access
// while the Postgres row drops them only when it is written (a denial or a peek writes nothing).
func TestSameDecisionsAsTheGoAlgorithm(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	pg := open(t, postgres.Options{Clock: clock})
	mem := memory.New(clock, memory.Options{})
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { sameDecisions(t, seed, clock, pg, mem) })
	}
}

func sameDecisions(t *testing.T, seed uint64, clock *clocktest.Clock, pg, mem domain.BucketStore) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 2))
	windows := []time.Duration{time.Second, 3 * time.Second, 10 * time.Second}
	random := func() domain.BucketRequest {
		limit := int64(1 + rng.IntN(8))
		p := rng.IntN(len(windows))
		return domain.BucketRequest{
			Policy: fmt.Sprint("s", seed, "p", p),
			Key:    fmt.Sprint("k", rng.IntN(3)),
			Rule:   domain.Rule{Algorithm: domain.SlidingLog, Limit: limit, Window: windows[p]},
			Cost:   rng.Int64N(limit + 1),
			Shadow: rng.IntN(4) == 0,
		}
	}
	for step := range 600 {
		clock.Advance(time.Duration(rng.IntN(700)) * time.Millisecond)
		if rng.IntN(3) > 0 {
			r := random()
			want, err1 := mem.Decide(ctx, r)
			got, err2 := pg.Decide(ctx, r)
			if err1 != nil || err2 != nil || got != want {
				t.Fatalf("step %d: Decide(%+v)\n postgres %+v %v\n     go %+v %v", step, r, got, err2, want, err1)
			}
			continue
		}
		rs := make([]domain.BucketRequest, 1+rng.IntN(4))
		for i := range rs {
			rs[i] = random()
			if i > 0 && rng.IntN(2) == 0 { // the same key again, with its policy's limit and window
				prev := rs[rng.IntN(i)]
				rs[i].Policy, rs[i].Key, rs[i].Limit, rs[i].Window = prev.Policy, prev.Key, prev.Limit, prev.Window
				rs[i].Cost = rng.Int64N(prev.Limit + 1)
			}
		}
		atomic := rng.IntN(2) == 0
		want, err1 := mem.DecideBatch(ctx, rs, atomic)
		got, err2 := pg.DecideBatch(ctx, rs, atomic)
		if err1 != nil || err2 != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("step %d: DecideBatch(%+v, atomic %v)\n postgres %+v %v\n     go %+v %v", step, rs, atomic, got, err2, want, err1)
		}
	}
}

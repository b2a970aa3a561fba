package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// OpBatcher is what a store offers the coalescer's lanes to carry hold operations beside checks
// (adapters/coalesce): ops applied in order, each atomically on its key exactly as Decide (domain.OpCheck) or
// Hold would apply it, each seeing what the ones before it recorded, the batch as a whole not atomic. One op's
// own outcome (a denial, an unknown hold, a stale generation, an invalid rule) is its result, never the batch's
// error. Every store offers it (the memory store applies a batch one op at a time); a store without it skips these
// tests, saying so.
type OpBatcher interface {
	ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error)
}

var batchOpTests = []struct {
	name string
	fn   func(*testing.T, NewStore)
}{
	{"OpBatchMatchesTheDomainStep", testOpBatchModel},
	{"OpBatchConcurrencyRace", testOpBatchRace},
}

func opBatcher(t *testing.T, s domain.BucketStore) OpBatcher {
	t.Helper()
	b, ok := s.(OpBatcher)
	if !ok {
		t.Skipf("%T applies no mixed batches of checks and holds (storetest.OpBatcher)", s)
	}
	return b
}

// testOpBatchModel sends random batches (1 to 12 ops, at one instant) of checks, peeks, acquires, settles,
// renewals and anonymous releases on two keys of every algorithm, with limits changed and the policy re-created
// on the way (and, under concurrency, now and then a check the store must refuse on its own), and requires every answer to equal domain.Bucket.ApplyHold's applied
// in the batch's order.
func testOpBatchModel(t *testing.T, newStore NewStore) {
	for _, alg := range domain.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			s, clock, ctx := setup(t, newStore)
			ob := opBatcher(t, s)
			rng := rand.New(rand.NewPCG(uint64(len(alg)), 24))
			p := domain.Policy{Name: "batched", Limit: 6, Window: 4 * time.Second, Algorithm: alg}.WithDefaults()
			ref := map[string]*domain.Bucket{}
			for step := 0; step < 120; step++ {
				clock.Advance(time.Duration(rng.IntN(700)) * time.Millisecond)
				now := clock.Now().UnixMicro()
				switch rng.IntN(15) {
				case 0:
					p.Limit = int64(1 + rng.IntN(9))
				case 1:
					p.Generation++ // deleted and re-created
				}
				ops := make([]domain.BucketHold, 1+rng.IntN(12))
				for i := range ops {
					key := fmt.Sprint("k", rng.IntN(2))
					id := fmt.Sprint("h", rng.IntN(5))
					ttl := time.Duration(rng.IntN(6)) * time.Second
					switch op := rng.IntN(14); {
					case op < 4:
						cost := int64(rng.IntN(int(min(p.Limit, 4)) + 1))
						if alg.HoldsOnly() && rng.IntN(4) > 0 {
							cost = 0 // a peek; now and then a refused check (StatusInvalidRule) rides along
						}
						ops[i] = holdOp(p, key, domain.OpCheck, "", cost, 0)
					case op < 8:
						ops[i] = holdOp(p, key, domain.OpAcquire, id, int64(1+rng.IntN(int(p.Limit))), ttl)
					case op < 11:
						ops[i] = holdOp(p, key, domain.OpSettle, id, int64(rng.IntN(int(2*p.Limit)+1)), 0)
					case op < 13:
						ops[i] = holdOp(p, key, domain.OpRenew, id, 0, ttl)
					default:
						ops[i] = holdOp(p, key, domain.OpReleaseAnonymous, "", int64(1+rng.IntN(3)), 0)
					}
					if ops[i].Op == domain.OpAcquire && rng.IntN(4) == 0 {
						ops[i].ID = fmt.Sprint("\x00anon", step, "-", i) // an anonymous hold's shape, but known
					}
				}
				got, err := ob.ApplyBatch(ctx, ops)
				if err != nil {
					t.Fatalf("step %d: ApplyBatch(%d ops): %v", step, len(ops), err)
				}
				if len(got) != len(ops) {
					t.Fatalf("step %d: %d results for %d ops", step, len(got), len(ops))
				}
				for i, q := range ops {
					b := ref[q.Key]
					if b == nil {
						b = &domain.Bucket{}
						ref[q.Key] = b
					}
					if w := b.ApplyHold(now, q); got[i] != w {
						t.Fatalf("step %d op %d/%d (%d on %s, id %q, amount %d):\n got %+v\nwant %+v",
							step, i, len(ops), q.Op, q.Key, q.ID, q.Cost, got[i], w)
					}
				}
			}
		})
	}
}

// testOpBatchRace: holders race for one concurrency key through batches that also carry other holders' releases
// and peeks; counted in while holding as testConcurrencyRace counts, never more than the limit, all units back.
func testOpBatchRace(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	ob := opBatcher(t, s)
	p := domain.Policy{Name: "streams", Limit: 4, Window: time.Hour, Algorithm: domain.Concurrency}.WithDefaults()
	const workers, tries = 16, 12
	var in, most, admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				id := fmt.Sprintf("w%d-%d", w, i)
				peek := holdOp(p, "tenant", domain.OpCheck, "", 0, 0)
				hds, err := ob.ApplyBatch(ctx, []domain.BucketHold{peek, holdOp(p, "tenant", domain.OpAcquire, id, 1, 0), peek})
				if err != nil {
					errs <- err
					return
				}
				if !hds[1].Allowed {
					continue
				}
				admitted.Add(1)
				countIn(&in, &most)
				in.Add(-1)
				hds, err = ob.ApplyBatch(ctx, []domain.BucketHold{holdOp(p, "other", domain.OpCheck, "", 0, 0),
					holdOp(p, "tenant", domain.OpSettle, id, 0, 0)})
				if err != nil || hds[1].Status != domain.HoldOK {
					errs <- fmt.Errorf("release %s: %+v %v", id, hds, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	requireHeldAtMostTheLimit(t, ctx, s, p, "tenant", most.Load(), admitted.Load())
}

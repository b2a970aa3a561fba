package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// TestApplyBatchRulesChangeWithinABatch: ApplyBatch's ops each carry their own rule, and one batch (one script
// call) may hold ops of one key under several (a policy changed between two requests a lane gathered: another
// limit, a re-created generation, a stale one). Every answer must equal domain.Bucket's ApplyHold in the batch's
// order: a peek, a denial or a refused op must leave the key as it found it for the ops after it in the call
// (decide.lua writes each key once, at the end of the call). Algorithms and windows changing from op to op are
// left out: sent one op per call they already differ from the domain now and then, on main before batches too
// (a settle's peek on a log after a change of algorithm), which is the step's matter, not the batch's.
func TestApplyBatchRulesChangeWithinABatch(t *testing.T) {
	for name, addrs := range map[string]func(testing.TB) []string{
		"single":  func(t testing.TB) []string { return []string{redistest.SingleAddr(t)} },
		"cluster": func(t testing.TB) []string { return redistest.ClusterAddrs(t)[:1] },
	} {
		for _, alg := range domain.Algorithms {
			t.Run(name+"/"+string(alg), func(t *testing.T) {
				clock := clocktest.New(epoch)
				s := open(t, addrs(t), clock, redis.Options{ExpirySlack: time.Hour})
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(uint64(len(alg)), 2327))
				ref := map[string]*domain.Bucket{}
				gen := int64(1)
				for step := 0; step < 400; step++ {
					clock.Advance(time.Duration(rng.IntN(900)) * time.Millisecond)
					now := clock.Now().UnixMicro()
					ops := make([]domain.BucketHold, 1+rng.IntN(10))
					for i := range ops {
						if rng.IntN(12) == 0 {
							gen++ // re-created mid-batch
						}
						g := gen
						if rng.IntN(10) == 0 {
							g-- // resolved before the re-creation: stale
						}
						p := domain.Policy{Name: "mixed", Limit: int64(2 + rng.IntN(6)), Window: 4 * time.Second, Algorithm: alg,
							Generation: g}.WithDefaults()
						r := domain.BucketRequest{Policy: p.Name, Key: fmt.Sprint("k", rng.IntN(2)), Rule: p.Rule()}
						id := fmt.Sprint("h", rng.IntN(4))
						ttl := time.Duration(rng.IntN(4)) * time.Second
						switch k := rng.IntN(12); {
						case k < 4:
							r.Cost = int64(rng.IntN(int(p.Limit) + 1))
							if alg.HoldsOnly() && rng.IntN(3) > 0 {
								r.Cost = 0
							}
							ops[i] = domain.BucketHold{BucketRequest: r, Op: domain.OpCheck}
						case k < 7:
							r.Cost = 1 + int64(rng.IntN(int(p.Limit)))
							ops[i] = domain.BucketHold{BucketRequest: r, Op: domain.OpAcquire, ID: id, TTL: ttl}
						case k < 10:
							r.Cost = int64(rng.IntN(int(2*p.Limit) + 1))
							ops[i] = domain.BucketHold{BucketRequest: r, Op: domain.OpSettle, ID: id}
						case k < 11:
							ops[i] = domain.BucketHold{BucketRequest: r, Op: domain.OpRenew, ID: id, TTL: ttl}
						default:
							r.Cost = 1 + int64(rng.IntN(3))
							ops[i] = domain.BucketHold{BucketRequest: r, Op: domain.OpReleaseAnonymous}
						}
						if ops[i].Op == domain.OpAcquire && rng.IntN(3) == 0 {
							ops[i].ID = fmt.Sprint("\x00anon", step, "-", i)
						}
					}
					got, err := s.ApplyBatch(ctx, ops)
					if err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
					for i, q := range ops {
						b := ref[q.Key]
						if b == nil {
							b = &domain.Bucket{}
							ref[q.Key] = b
						}
						if want := b.ApplyHold(now, q); got[i] != want {
							t.Fatalf("step %d op %d/%d (%d on %s, id %q, amount %d, %s limit %d window %s gen %d):\n got %+v\nwant %+v",
								step, i, len(ops), q.Op, q.Key, q.ID, q.Cost, q.Algorithm, q.Limit, q.Window, q.Generation, got[i], want)
						}
					}
				}
			})
		}
	}
}

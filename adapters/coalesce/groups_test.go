package coalesce

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// groupsStore is a GroupBatcher over the memory store: each group decided by the store's own DecideBatch, in order
// (each group atomic on its own, which is what the coalescer relies on; unlike Postgres, other calls may interleave
// between groups). With busy set, the next bounded call gives up, recording nothing. With yield, each call yields
// the processor a few times, as a round trip would, so callers pile up behind it. It counts the groups it was sent.
type groupsStore struct {
	domain.BucketStore
	yield  bool
	busy   atomic.Bool
	groups atomic.Int64
	shared atomic.Int64 // calls with more than one group
}

func (g *groupsStore) DecideBatchBounded(ctx context.Context, rs []domain.BucketRequest) ([]domain.Decision, bool, error) {
	if g.busy.Swap(false) {
		return nil, true, nil
	}
	ds, err := g.DecideBatch(ctx, rs, false)
	return ds, false, err
}

func (g *groupsStore) DecideGroupsBounded(ctx context.Context, rs []domain.BucketRequest, ends []int, atomic []bool) ([]domain.Decision, bool, error) {
	if g.busy.Swap(false) {
		return nil, true, nil
	}
	for range 3 * btoi(g.yield) {
		runtime.Gosched()
	}
	g.groups.Add(int64(len(ends)))
	if len(ends) > 1 {
		g.shared.Add(1)
	}
	var out []domain.Decision
	from := 0
	for i, end := range ends {
		ds, err := g.DecideBatch(ctx, rs[from:end], atomic[i])
		if err != nil {
			return nil, false, err
		}
		out = append(out, ds...)
		from = end
	}
	return out, false, nil
}

var epoch = time.Unix(1_700_000_000, 0)

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestConformanceGroupLanes runs the conformance suite with atomic batches riding the lanes (small batches, so
// atomic batches and checks mix and split): each member must get exactly its own decisions.
func TestConformanceGroupLanes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return New(&groupsStore{BucketStore: memory.New(clock, memory.Options{MaxKeys: 10_000})}, Options{Lanes: 2, MaxBatch: 4})
	})
}

// An atomic batch whose lane call gave up (busy) is sent again straight to the store: decided once, recorded once.
func TestBusyAtomicBatchIsSentStraight(t *testing.T) {
	g := &groupsStore{BucketStore: memory.New(clocktest.New(epoch), memory.Options{MaxKeys: 100})}
	s := New(g, Options{Lanes: 1})
	g.busy.Store(true)
	ds, err := s.DecideBatch(context.Background(), []domain.BucketRequest{req("a", 2, 1), req("b", 2, 2)}, true)
	if err != nil || len(ds) != 2 || !ds[0].Allowed || !ds[1].Allowed {
		t.Fatalf("atomic batch after a busy lane call: %+v, %v", ds, err)
	}
	if s.Busy() != 1 || g.groups.Load() != 0 {
		t.Fatalf("busy %d, groups decided through the lane %d: want 1 and 0 (sent straight)", s.Busy(), g.groups.Load())
	}
	for key, want := range map[string]int64{"a": 1, "b": 2} {
		if got := recorded(t, g, key, 2); got != want {
			t.Errorf("%s holds %d units, want %d", key, got, want)
		}
	}
	// Denied as a whole: b is full, so a records nothing either.
	ds, err = s.DecideBatch(context.Background(), []domain.BucketRequest{req("a", 2, 1), req("b", 2, 1)}, true)
	if err != nil || !ds[0].Allowed || ds[1].Allowed {
		t.Fatalf("atomic batch over a full key: %+v, %v (want a admitted as evaluated, b denied)", ds, err)
	}
	if got := recorded(t, g, "a", 2); got != 1 {
		t.Errorf("a holds %d units after a denied atomic batch, want 1", got)
	}
	if g.groups.Load() != 1 {
		t.Errorf("groups decided through the lane: %d, want 1", g.groups.Load())
	}
}

// Many goroutines' atomic pairs and single checks through one lane share calls, and each pair stays
// all-or-nothing (the same accounting as the Postgres test, over the memory store).
func TestAtomicBatchesShareLaneCalls(t *testing.T) {
	g := &groupsStore{BucketStore: memory.New(clocktest.New(epoch), memory.Options{MaxKeys: 100}), yield: true}
	s := New(g, Options{Lanes: 1})
	const keys, limit, workers, tries = 3, 40, 8, 30
	admitted := make([][keys]int64, workers)
	done := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range tries {
				a, b := (w+i)%keys, (w+i+1)%keys
				if i%4 == 3 {
					d, err := s.Decide(context.Background(), req(string(rune('k'+a)), limit, 1))
					if err != nil {
						done <- err
						return
					}
					if d.Allowed {
						admitted[w][a]++
					}
					continue
				}
				ds, err := s.DecideBatch(context.Background(), []domain.BucketRequest{req(string(rune('k'+a)), limit, 1), req(string(rune('k'+b)), limit, 1)}, true)
				if err != nil {
					done <- err
					return
				}
				if ds[0].Allowed && ds[1].Allowed {
					admitted[w][a]++
					admitted[w][b]++
				}
			}
			done <- nil
		}()
	}
	for range workers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys {
		var want int64
		for w := range workers {
			want += admitted[w][k]
		}
		if got := recorded(t, g, string(rune('k'+k)), limit); got != want || got > limit {
			t.Errorf("key %d holds %d units, the admitted pairs and checks took %d (limit %d)", k, got, want, limit)
		}
	}
	if g.shared.Load() == 0 {
		t.Fatal("no lane call carried more than one group")
	}
}

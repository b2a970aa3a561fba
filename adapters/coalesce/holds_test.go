package coalesce

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// Hold operations through the queues (OpBatcher, BoundedOpBatcher).

// slowOps is slow that also applies mixed batches, counting them and the hold operations in them.
type slowOps struct {
	slow
	opBatches, opsBatched, holdsBatched atomic.Int64
}

func (s *slowOps) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	s.opBatches.Add(1)
	s.opsBatched.Add(int64(len(ops)))
	for _, q := range ops {
		if q.Op != domain.OpCheck {
			s.holdsBatched.Add(1)
		}
	}
	for range 3 {
		runtime.Gosched()
	}
	return s.BucketStore.(OpBatcher).ApplyBatch(ctx, ops)
}

func concurrencyOp(key string, op domain.HoldOp, id string, amount int64) domain.BucketHold {
	return domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "streams", Key: key,
		Rule: domain.Rule{Algorithm: domain.Concurrency, Limit: 3, Window: time.Hour}, Cost: amount}, Op: op, ID: id}
}

// holdRace runs workers that acquire one unit of a concurrency key (limit 3), count themselves in while holding
// it, and release it, checks of a sliding log key interleaved; it fails if more than the limit were ever held or
// if a unit is not back at the end.
func holdRace(t *testing.T, s *Store, workers, tries int) {
	t.Helper()
	ctx := context.Background()
	var in, most, admitted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				if _, err := s.Decide(ctx, req(fmt.Sprint("k", i%3), 1<<40, 1)); err != nil {
					t.Error(err)
					return
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				hd, err := s.Hold(ctx, concurrencyOp("hot", domain.OpAcquire, id, 1))
				if err != nil {
					t.Error(err)
					return
				}
				if !hd.Allowed {
					continue
				}
				admitted.Add(1)
				n := in.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				runtime.Gosched()
				in.Add(-1)
				if hd, err := s.Hold(ctx, concurrencyOp("hot", domain.OpSettle, id, 0)); err != nil || hd.Status != domain.HoldOK {
					t.Errorf("release %s: %+v %v", id, hd, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if most.Load() > 3 {
		t.Fatalf("%d held at once, limit 3", most.Load())
	}
	if admitted.Load() < 3 {
		t.Fatalf("only %d acquisitions admitted: the test proves little", admitted.Load())
	}
	hd, err := s.Hold(ctx, concurrencyOp("hot", domain.OpCheck, "", 0))
	if err != nil || hd.Remaining != 2 {
		t.Fatalf("after every release a peek reports %+v %v, want remaining 2", hd, err)
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// TestHoldsRideTheQueues: over a store that applies mixed batches, holders of a hot concurrency key race through
// the queues (how many operations share a batch is up to the scheduler: TestHoldsQueueBehindTheCallInFlight
// arranges it), and the limit holds exactly.
func TestHoldsRideTheQueues(t *testing.T) {
	for _, lanes := range []int{0, 2} {
		t.Run(fmt.Sprint("lanes=", lanes), func(t *testing.T) {
			inner := &slowOps{slow: slow{BucketStore: memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{})}}
			s := New(inner, Options{MaxBatch: 16, Lanes: lanes})
			holdRace(t, s, 48, 20)
			if got := inner.batches.Load() + inner.opBatches.Load(); got != s.Batches() {
				t.Fatalf("batch calls: store saw %d, coalescer counted %d", got, s.Batches())
			}
			t.Logf("%d mixed batches held %d operations, %d of them hold operations", inner.opBatches.Load(),
				inner.opsBatched.Load(), inner.holdsBatched.Load())
		})
	}
}

// gateOps is gate that applies mixed batches: Hold and ApplyBatch block until the test lets them go too.
type gateOps struct {
	*gate
	opBatches [][]domain.BucketHold
}

func (g *gateOps) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	g.entered <- q.BucketRequest
	<-g.release
	return g.BucketStore.Hold(ctx, q)
}

func (g *gateOps) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	g.mu.Lock()
	g.opBatches = append(g.opBatches, ops)
	g.mu.Unlock()
	g.entered <- ops[0].BucketRequest
	<-g.release
	return g.BucketStore.(OpBatcher).ApplyBatch(ctx, ops)
}

// TestHoldsQueueBehindTheCallInFlight: acquires arriving while the lane's call is in flight wait in its queue and
// go out together as one ApplyBatch, in arrival order: the first three of a limit of 3 admitted, the fourth denied.
func TestHoldsQueueBehindTheCallInFlight(t *testing.T) {
	g := &gateOps{gate: newGate()}
	s := New(g, Options{Lanes: 1, MaxBatch: 8})
	ctx := context.Background()
	first := start(s, ctx, req("k", 5, 1))
	<-g.entered
	answers := make([]chan domain.HoldDecision, 4)
	for i := range answers {
		answers[i] = make(chan domain.HoldDecision, 1)
		go func() {
			hd, err := s.Hold(ctx, concurrencyOp("hot", domain.OpAcquire, fmt.Sprint("h", i), 1))
			if err != nil {
				t.Error(err)
			}
			answers[i] <- hd
		}()
		waitQueued(t, s, "k", i+1) // one lane: every key queues behind the check in flight, in arrival order
	}
	g.release <- struct{}{}
	<-g.entered
	g.release <- struct{}{}
	if r := <-first; r.err != nil || !r.d.Allowed {
		t.Fatalf("the check in flight: %+v", r)
	}
	for i, ch := range answers {
		hd := <-ch
		if want := i < 3; hd.Allowed != want || hd.Status != domain.HoldOK {
			t.Fatalf("acquire %d: %+v, want allowed %v", i, hd, want)
		}
	}
	if len(g.opBatches) != 1 || len(g.opBatches[0]) != 4 || s.Batches() != 1 || s.Coalesced() != 4 {
		t.Fatalf("ApplyBatch calls %v, Batches %d, Coalesced %d; want one batch of the 4 acquires", g.opBatches, s.Batches(), s.Coalesced())
	}
	for i, q := range g.opBatches[0] {
		if q.Op != domain.OpAcquire || q.ID != fmt.Sprint("h", i) {
			t.Fatalf("batch op %d: %d %q, want the acquires in arrival order", i, q.Op, q.ID)
		}
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// rowLockOps is rowLocks that applies mixed batches: ApplyBatch (and Hold) wait for a locked key's release,
// ApplyBatchBounded gives up at once, recording nothing, when any of its keys is locked.
type rowLockOps struct{ *rowLocks }

func holdKeys(ops []domain.BucketHold) []domain.BucketRequest {
	rs := make([]domain.BucketRequest, len(ops))
	for i := range ops {
		rs[i] = ops[i].BucketRequest
	}
	return rs
}

func (l rowLockOps) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	if err := l.wait(ctx, holdKeys([]domain.BucketHold{q})); err != nil {
		return domain.HoldDecision{}, err
	}
	return l.BucketStore.Hold(ctx, q)
}

func (l rowLockOps) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	if err := l.wait(ctx, holdKeys(ops)); err != nil {
		return nil, err
	}
	return l.BucketStore.(OpBatcher).ApplyBatch(ctx, ops)
}

func (l rowLockOps) ApplyBatchBounded(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, bool, error) {
	l.bounded.Add(1)
	for _, q := range ops {
		if l.lockOf(q.Key) != nil {
			return nil, true, nil
		}
	}
	hds, err := l.BucketStore.(OpBatcher).ApplyBatch(ctx, ops)
	return hds, false, err
}

// TestBoundedHoldsKeepLimitsExact: the conformance suite (holds included) through lanes over a store that bounds
// lock waits for mixed batches too, and a hot concurrency key racing while keys are locked and released at
// random, so lane calls carrying holds keep giving up and their operations keep being re-sent per key: nothing is
// recorded twice, nothing is lost.
func TestBoundedHoldsKeepLimitsExact(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		l := newRowLocks()
		l.BucketStore = memory.New(clock, memory.Options{MaxKeys: 10_000})
		return New(rowLockOps{l}, Options{Lanes: 2, MaxBatch: 8})
	})
	t.Run("HotHoldsUnderLockChurn", func(t *testing.T) {
		l := newRowLocks()
		s := New(rowLockOps{l}, Options{Lanes: 2, MaxBatch: 8})
		if s.ops == nil || s.boundedOps == nil {
			t.Fatal("a store with ApplyBatch and ApplyBatchBounded must carry holds in its lanes")
		}
		stop := churnLocks(l, func(i int) string {
			if i%2 == 1 {
				return fmt.Sprint("k", i%3)
			}
			return "hot"
		})
		holdRace(t, s, 32, 20)
		stop()
		t.Logf("%d bounded calls, %d gave up on a locked row", l.bounded.Load(), s.Busy())
	})
}

// boundedChecksOnly bounds lock waits for checks but not for mixed batches.
type boundedChecksOnly struct{ *rowLocks }

func (l boundedChecksOnly) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	return rowLockOps(l).Hold(ctx, q)
}

func (l boundedChecksOnly) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	return rowLockOps(l).ApplyBatch(ctx, ops)
}

// TestUnboundedHoldsStayOutOfBoundedLanes: in lane mode over a store that bounds lock waits only for checks, a
// hold goes straight to the store (a hold waiting on a locked row must not stall its lane), and a key that stays
// locked holds up only its own hold.
func TestUnboundedHoldsStayOutOfBoundedLanes(t *testing.T) {
	l := newRowLocks()
	s := New(boundedChecksOnly{l}, Options{Lanes: 1})
	if s.ops != nil {
		t.Fatal("holds ride the lanes of a store that cannot bound their lock waits")
	}
	release := l.lock("locked")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held := make(chan error, 1)
	go func() {
		_, err := s.Hold(ctx, concurrencyOp("locked", domain.OpAcquire, "a", 1))
		held <- err
	}()
	<-l.waiting
	for i := range 50 { // the one lane is free: checks of other keys are decided meanwhile
		if d, err := s.Decide(ctx, req(fmt.Sprint("free-", i), 5, 1)); err != nil || !d.Allowed {
			t.Fatalf("check of an unlocked key while a hold waits on a locked row: %+v %v", d, err)
		}
	}
	select {
	case err := <-held:
		t.Fatalf("the hold of a locked key returned before its release: %v", err)
	default:
	}
	release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

package coalesce

import (
	"context"
	"errors"
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

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return New(memory.New(clock, memory.Options{MaxKeys: 10_000}), Options{})
	})
}

func TestConformanceLanes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return New(memory.New(clock, memory.Options{MaxKeys: 10_000}), Options{Lanes: 3, MaxBatch: 8})
	})
}

func TestConformanceBatchesOfOne(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return New(memory.New(clock, memory.Options{MaxKeys: 10_000}), Options{MaxBatch: 1})
	})
}

// slow is a store whose calls yield the processor a few times, as a round trip would, so that concurrent checks
// of one key pile up behind the one in flight. It counts the calls.
type slow struct {
	domain.BucketStore
	decides, batches, batched atomic.Int64
}

func (s *slow) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	s.decides.Add(1)
	for range 3 {
		runtime.Gosched()
	}
	return s.BucketStore.Decide(ctx, r)
}

func (s *slow) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if atomic {
		panic("the coalescer must send non-atomic batches")
	}
	s.batches.Add(1)
	s.batched.Add(int64(len(rs)))
	for range 3 {
		runtime.Gosched()
	}
	return s.BucketStore.DecideBatch(ctx, rs, atomic)
}

func req(key string, limit, cost int64) domain.BucketRequest {
	return domain.BucketRequest{Policy: "p", Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: limit, Window: time.Hour}, Cost: cost}
}

// TestHotKeyExact: many goroutines on one key admit exactly limit, and the checks did go out in batches.
func TestHotKeyExact(t *testing.T) {
	for _, lanes := range []int{0, 4} {
		t.Run(fmt.Sprint("lanes=", lanes), func(t *testing.T) { testHotKeyExact(t, lanes) })
	}
}

func testHotKeyExact(t *testing.T, lanes int) {
	inner := &slow{BucketStore: memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{})}
	s := New(inner, Options{MaxBatch: 16, Lanes: lanes})
	const limit, workers, tries = 500, 64, 20
	var admitted atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tries {
				d, err := s.Decide(ctx, req("hot", limit, 1))
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("%d workers × %d tries admitted %d, want exactly %d", workers, tries, got, limit)
	}
	if total := inner.decides.Load() + inner.batched.Load(); total != workers*tries {
		t.Fatalf("the store saw %d checks, want %d", total, workers*tries)
	}
	if inner.batches.Load() == 0 || inner.batches.Load() != s.Batches() {
		t.Fatalf("DecideBatch calls: store saw %d, coalescer counted %d; want > 0 and equal", inner.batches.Load(), s.Batches())
	}
	t.Logf("%d checks: %d single calls, %d batches holding %d checks (%.1f per batch)", workers*tries,
		inner.decides.Load(), inner.batches.Load(), inner.batched.Load(), float64(inner.batched.Load())/float64(inner.batches.Load()))
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// gate is a store whose calls block until the test lets them go, so tests can arrange who waits behind whom.
type gate struct {
	domain.BucketStore
	entered chan domain.BucketRequest // one send per call entering (the first request of a batch)
	release chan struct{}             // one receive per call leaving
	mu      sync.Mutex
	batches [][]domain.BucketRequest
	ctxs    []context.Context
}

func newGate() *gate {
	return &gate{
		BucketStore: memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{}),
		entered:     make(chan domain.BucketRequest, 100),
		release:     make(chan struct{}),
	}
}

func (g *gate) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	g.entered <- r
	<-g.release
	return g.BucketStore.Decide(ctx, r)
}

func (g *gate) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	g.mu.Lock()
	g.batches = append(g.batches, rs)
	g.ctxs = append(g.ctxs, ctx)
	g.mu.Unlock()
	g.entered <- rs[0]
	<-g.release
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return g.BucketStore.DecideBatch(ctx, rs, atomic)
}

// queued reports the checks waiting (not cancelled) behind the call in flight for key.
func queued(s *Store, key string) int {
	k, sh := s.queueOf("p", key, false)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	if q := sh.m[k]; q != nil {
		for _, b := range q.pending {
			n += b.live
		}
	}
	return n
}

func idleKeys(s *Store) []bucketKey {
	var out []bucketKey
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k := range sh.m {
			out = append(out, k)
		}
		sh.mu.Unlock()
	}
	return out
}

func waitQueued(t *testing.T, s *Store, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for queued(s, key) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queued = %d, want %d", queued(s, key), n)
		}
		runtime.Gosched()
	}
}

type result struct {
	d   domain.Decision
	err error
}

func start(s *Store, ctx context.Context, r domain.BucketRequest) chan result {
	ch := make(chan result, 1)
	go func() {
		d, err := s.Decide(ctx, r)
		ch <- result{d, err}
	}()
	return ch
}

// TestBatchesFormInOrder: checks queued behind a call in flight go out as ceil(n/MaxBatch) batches, in arrival
// order, each check seeing the units of the ones before it.
func TestBatchesFormInOrder(t *testing.T) {
	g := newGate()
	s := New(g, Options{MaxBatch: 4})
	const limit = 7
	first := start(s, context.Background(), req("k", limit, 1))
	<-g.entered
	var waiters []chan result
	for i := range 10 {
		waiters = append(waiters, start(s, context.Background(), req("k", limit, 1)))
		waitQueued(t, s, "k", i+1) // one at a time, so arrival order is known
	}
	g.release <- struct{}{} // the single call returns; then batches of 4, 4 and 2 go out one after another
	for range 3 {
		<-g.entered
		g.release <- struct{}{}
	}
	if r := <-first; r.err != nil || !r.d.Allowed || r.d.Remaining != limit-1 {
		t.Fatalf("first: %+v", r)
	}
	for i, ch := range waiters {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		wantAllowed := i+2 <= limit
		if r.d.Allowed != wantAllowed {
			t.Fatalf("waiter %d: allowed %v, want %v", i, r.d.Allowed, wantAllowed)
		}
		if wantAllowed && r.d.Remaining != limit-int64(i)-2 {
			t.Fatalf("waiter %d: remaining %d, want %d", i, r.d.Remaining, limit-int64(i)-2)
		}
	}
	var sizes []int
	for _, b := range g.batches {
		sizes = append(sizes, len(b))
	}
	if fmt.Sprint(sizes) != "[4 4 2]" || s.Batches() != 3 || s.Coalesced() != 10 {
		t.Fatalf("batch sizes %v, Batches %d, Coalesced %d; want [4 4 2], 3, 10", sizes, s.Batches(), s.Coalesced())
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// TestLanesBatchDifferentKeys: in lane mode, checks of different keys of one lane share a batch.
func TestLanesBatchDifferentKeys(t *testing.T) {
	g := newGate()
	s := New(g, Options{Lanes: 1})
	first := start(s, context.Background(), req("a", 5, 1))
	<-g.entered
	var ws []chan result
	for i, k := range []string{"b", "c", "a"} {
		ws = append(ws, start(s, context.Background(), req(k, 5, 1)))
		waitQueued(t, s, "a", i+1)
	}
	g.release <- struct{}{}
	<-first
	<-g.entered
	g.release <- struct{}{}
	for i, want := range []int64{4, 4, 3} {
		if r := <-ws[i]; r.err != nil || r.d.Remaining != want {
			t.Fatalf("waiter %d: %+v, want remaining %d", i, r, want)
		}
	}
	if len(g.batches) != 1 || len(g.batches[0]) != 3 {
		t.Fatalf("batches %v, want one of three keys", g.batches)
	}
}

// TestOtherKeysPassThrough: a call in flight for one key never delays another key.
func TestOtherKeysPassThrough(t *testing.T) {
	g := newGate()
	s := New(g, Options{})
	a := start(s, context.Background(), req("a", 5, 1))
	<-g.entered
	b := start(s, context.Background(), req("b", 5, 1))
	if r := <-g.entered; r.Key != "b" {
		t.Fatalf("entered %q, want b", r.Key)
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	for _, ch := range []chan result{a, b} {
		if r := <-ch; r.err != nil || !r.d.Allowed {
			t.Fatalf("%+v", r)
		}
	}
	if s.Batches() != 0 {
		t.Fatalf("Batches = %d, want 0", s.Batches())
	}
}

// TestCancelBeforeSend: a member cancelled while queued leaves the batch (nothing recorded for it), even when it
// led the batch; the others are still sent.
func TestCancelBeforeSend(t *testing.T) {
	g := newGate()
	s := New(g, Options{})
	first := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	ctx1, cancel1 := context.WithCancel(context.Background())
	leader := start(s, ctx1, req("k", 10, 3)) // leads the queued batch
	waitQueued(t, s, "k", 1)
	second := start(s, context.Background(), req("k", 10, 1))
	waitQueued(t, s, "k", 2)
	cancel1()
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled leader: %+v, want context.Canceled", r)
	}
	waitQueued(t, s, "k", 1)
	g.release <- struct{}{}
	<-g.entered
	g.release <- struct{}{}
	if r := <-first; r.err != nil || r.d.Remaining != 9 {
		t.Fatalf("first: %+v", r)
	}
	if r := <-second; r.err != nil || r.d.Remaining != 8 {
		t.Fatalf("second: %+v (the cancelled check of cost 3 must not be recorded)", r)
	}
	if len(g.batches) != 1 || len(g.batches[0]) != 1 {
		t.Fatalf("batches %v, want one batch of one", g.batches)
	}
}

// TestCancelWholeBatchPassesTurn: a queued batch whose members all leave gives its turn to the next batch.
func TestCancelWholeBatchPassesTurn(t *testing.T) {
	g := newGate()
	s := New(g, Options{MaxBatch: 1})
	first := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	ctx1, cancel1 := context.WithCancel(context.Background())
	gone := start(s, ctx1, req("k", 10, 1))
	waitQueued(t, s, "k", 1)
	kept := start(s, context.Background(), req("k", 10, 1))
	waitQueued(t, s, "k", 2)
	cancel1()
	<-gone
	g.release <- struct{}{}
	<-first
	<-g.entered // the second batch is sent
	g.release <- struct{}{}
	if r := <-kept; r.err != nil || r.d.Remaining != 8 {
		t.Fatalf("kept: %+v", r)
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// TestCancelAfterSend: once sent, a cancelled member returns at once while the others still get decisions; the
// batch's context ends only when every member has given up.
func TestCancelAfterSend(t *testing.T) {
	g := newGate()
	s := New(g, Options{})
	first := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	ctxL, cancelL := context.WithCancel(context.Background())
	ctxF, cancelF := context.WithCancel(context.Background())
	leader := start(s, ctxL, req("k", 10, 1))
	waitQueued(t, s, "k", 1)
	follower := start(s, ctxF, req("k", 10, 1))
	waitQueued(t, s, "k", 2)
	g.release <- struct{}{}
	<-first
	<-g.entered // the batch of two is in flight
	bctx := g.ctxs[0]
	cancelF()
	if r := <-follower; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("follower: %+v, want context.Canceled", r)
	}
	if bctx.Err() != nil {
		t.Fatal("one member's cancellation cancelled the batch")
	}
	cancelL()
	deadline := time.Now().Add(10 * time.Second)
	for bctx.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the batch's context did not end after every member gave up")
		}
		runtime.Gosched()
	}
	g.release <- struct{}{}
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leader: %+v, want context.Canceled", r)
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
}

// TestCancelledMemberKeepsOthersDecisions: the leader's cancellation while its batch is in flight does not fail
// the other members.
func TestLeaderCancelAfterSendKeepsOthers(t *testing.T) {
	g := newGate()
	s := New(g, Options{})
	first := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	ctxL, cancelL := context.WithCancel(context.Background())
	leader := start(s, ctxL, req("k", 10, 1))
	waitQueued(t, s, "k", 1)
	follower := start(s, context.Background(), req("k", 10, 1))
	waitQueued(t, s, "k", 2)
	g.release <- struct{}{}
	<-first
	<-g.entered
	cancelL()
	g.release <- struct{}{}
	if r := <-follower; r.err != nil || r.d.Remaining != 7 {
		t.Fatalf("follower: %+v", r)
	}
	if r := <-leader; r.err != nil || r.d.Remaining != 8 {
		t.Fatalf("leader (its check was decided): %+v", r)
	}
}

// TestStoreErrorReachesEveryMember: a failed batch fails each of its members, and the key is usable afterwards.
func TestStoreErrorReachesEveryMember(t *testing.T) {
	g := newGate()
	fail := &failing{gate: g}
	s := New(fail, Options{})
	first := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	var ws []chan result
	for i := range 3 {
		ws = append(ws, start(s, context.Background(), req("k", 10, 1)))
		waitQueued(t, s, "k", i+1)
	}
	g.release <- struct{}{}
	<-first
	for _, ch := range ws {
		if r := <-ch; !errors.Is(r.err, errBoom) {
			t.Fatalf("%+v, want errBoom", r)
		}
	}
	next := start(s, context.Background(), req("k", 10, 1))
	<-g.entered
	g.release <- struct{}{}
	if r := <-next; r.err != nil || r.d.Remaining != 8 {
		t.Fatalf("after the failed batch: %+v", r)
	}
}

var errBoom = errors.New("boom")

type failing struct{ *gate }

func (f *failing) DecideBatch(context.Context, []domain.BucketRequest, bool) ([]domain.Decision, error) {
	return nil, errBoom
}

// TestMixedKeysExact: many goroutines over a few keys (some hot, some not) admit exactly limit per key.
func TestMixedKeysExact(t *testing.T) {
	for _, lanes := range []int{0, 2} {
		t.Run(fmt.Sprint("lanes=", lanes), func(t *testing.T) { testMixedKeysExact(t, lanes) })
	}
}

func testMixedKeysExact(t *testing.T, lanes int) {
	inner := &slow{BucketStore: memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{})}
	s := New(inner, Options{MaxBatch: 8, Lanes: lanes})
	const limit, workers, tries, keys = 40, 32, 30, 5
	requireExactPerKey(t, admitPerKey(t, s, workers, tries, keys, limit), limit)
}

// admitPerKey runs workers goroutines, each sending tries checks of cost 1 spread over keys k0..k<keys-1> (worker
// w's i-th check goes to key (w+i) % keys), and returns how many each key admitted.
func admitPerKey(t *testing.T, s *Store, workers, tries, keys int, limit int64) []int64 {
	t.Helper()
	admitted := make([]atomic.Int64, keys)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				k := (w + i) % keys
				d, err := s.Decide(context.Background(), req(fmt.Sprint("k", k), limit, 1))
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	got := make([]int64, keys)
	for k := range admitted {
		got[k] = admitted[k].Load()
	}
	return got
}

// requireExactPerKey fails unless every key admitted exactly limit.
func requireExactPerKey(t *testing.T, admitted []int64, limit int64) {
	t.Helper()
	for k, got := range admitted {
		if got != limit {
			t.Errorf("key k%d admitted %d, want exactly %d", k, got, limit)
		}
	}
}

// rowLocks is a store whose rows can be held locked, as another database session would: Decide and DecideBatch
// wait for a locked key's release (or their context), and DecideBatchBounded gives up at once, recording
// nothing, when any of its keys is locked (the short lock wait of the Postgres store, shortened to zero).
type rowLocks struct {
	domain.BucketStore
	mu      sync.Mutex
	locked  map[string]chan struct{} // closed when released
	waiting chan string              // one send per call that starts waiting on a locked key
	bounded atomic.Int64
}

func newRowLocks() *rowLocks {
	return &rowLocks{
		BucketStore: memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{}),
		locked:      map[string]chan struct{}{},
		waiting:     make(chan string, 100),
	}
}

func (l *rowLocks) lock(key string) func() {
	ch := make(chan struct{})
	l.mu.Lock()
	l.locked[key] = ch
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.locked, key)
		l.mu.Unlock()
		close(ch)
	}
}

func (l *rowLocks) lockOf(key string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.locked[key]
}

func (l *rowLocks) wait(ctx context.Context, rs []domain.BucketRequest) error {
	for _, r := range rs {
		if ch := l.lockOf(r.Key); ch != nil {
			l.waiting <- r.Key
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

func (l *rowLocks) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	if err := l.wait(ctx, []domain.BucketRequest{r}); err != nil {
		return domain.Decision{}, err
	}
	return l.BucketStore.Decide(ctx, r)
}

func (l *rowLocks) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if err := l.wait(ctx, rs); err != nil {
		return nil, err
	}
	return l.BucketStore.DecideBatch(ctx, rs, atomic)
}

func (l *rowLocks) DecideBatchBounded(ctx context.Context, rs []domain.BucketRequest) ([]domain.Decision, bool, error) {
	l.bounded.Add(1)
	for _, r := range rs {
		if l.lockOf(r.Key) != nil {
			return nil, true, nil
		}
	}
	ds, err := l.BucketStore.DecideBatch(ctx, rs, false)
	return ds, false, err
}

// TestLockedKeyDoesNotStallItsLane: in lane mode over a store that can bound lock waits, a key whose row stays
// locked waits in its own queue, while every other key of its lane (here, every key: one lane) is decided
// meanwhile, none failing; once the row is released the locked key's checks are decided, and exactly.
func TestLockedKeyDoesNotStallItsLane(t *testing.T) {
	l := newRowLocks()
	s := New(l, Options{Lanes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := l.lock("locked")

	const lockedChecks, others, limit = 5, 200, 3
	var lockedRes []chan result
	for range lockedChecks {
		lockedRes = append(lockedRes, start(s, ctx, req("locked", limit, 1)))
	}
	<-l.waiting // a check of the locked key waits on the row, outside the lane
	// Checks of other keys, concurrently, in the lane the locked key hashes to.
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for i := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := s.Decide(ctx, req(fmt.Sprint("free-", i%20), limit, 1))
			if err != nil {
				t.Errorf("check of an unlocked key while another is locked: %v", err)
			}
			if d.Allowed {
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 20*limit {
		t.Fatalf("unlocked keys admitted %d, want %d (20 keys × limit %d)", got, 20*limit, limit)
	}
	for i, ch := range lockedRes {
		select {
		case r := <-ch:
			t.Fatalf("locked key's check %d answered while its row is locked: %+v", i, r)
		default:
		}
	}
	if s.Busy() == 0 {
		t.Fatal("no lane call gave up on the locked row")
	}

	release()
	n := 0
	for _, ch := range lockedRes {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.d.Allowed {
			n++
		}
	}
	if n != limit {
		t.Fatalf("the locked key admitted %d of %d checks after its release, want exactly %d", n, lockedChecks, limit)
	}
	if len(idleKeys(s)) != 0 {
		t.Fatalf("queues left behind: %v", idleKeys(s))
	}
	t.Logf("%d lane calls, %d gave up on the locked row", l.bounded.Load(), s.Busy())
}

// TestBoundedBatchesKeepLimitsExact: the conformance suite and a racing hot key through lanes over a store that
// bounds lock waits, with keys locked and released at random meanwhile, so that lane calls keep giving up and their
// checks keep being re-sent per key: nothing is recorded twice, nothing is lost.
func TestBoundedBatchesKeepLimitsExact(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		l := newRowLocks()
		l.BucketStore = memory.New(clock, memory.Options{MaxKeys: 10_000})
		return New(l, Options{Lanes: 2, MaxBatch: 8})
	})
	t.Run("HotKeysUnderLockChurn", func(t *testing.T) {
		l := newRowLocks()
		s := New(l, Options{Lanes: 2, MaxBatch: 8})
		const limit, workers, tries, keys = 40, 32, 30, 4
		stop := churnLocks(l, func(i int) string { return fmt.Sprint("k", i%keys) })
		admitted := admitPerKey(t, s, workers, tries, keys, limit)
		stop()
		requireExactPerKey(t, admitted, limit)
		t.Logf("%d lane calls, %d gave up on a locked row", l.bounded.Load(), s.Busy())
	})
}

// churnLocks locks and releases l's rows key(0), key(1), ... one after another until stop is called (it returns
// once the churn has ended), draining the waiters' reports meanwhile.
func churnLocks(l *rowLocks, key func(int) string) (stop func()) {
	done := make(chan struct{})
	go func() { // drain: waiters report here, nobody needs the signal
		for {
			select {
			case <-l.waiting:
			case <-done:
				return
			}
		}
	}()
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			release := l.lock(key(i))
			runtime.Gosched()
			release()
		}
	}()
	return func() {
		close(done)
		churn.Wait()
	}
}

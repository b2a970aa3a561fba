// Package memory is the in-memory BucketStore and PolicyStore: exact, fast, and for one replica only (its state
// is per process).
//
// Keys are spread over power-of-two shards, each a map under its own mutex, so checks of different keys rarely
// contend. The store is bounded by max_keys: keys whose window is empty are dropped (on access, and by sweeps),
// and when every slot holds a live key a new key gets domain.ErrStoreFull rather than evicting a live one, since
// eviction would reset that key's counter and over-admit. The Limiter turns that error into the policy's
// failure_mode, and FullRejections counts it.
//
// No policy can take another's room: one policy holds at most half of max_keys (Options.PolicyShare), and a
// shadow check's new key at most a tenth (Options.ShadowShare: shadow policies never deny, and anyone with a
// check token can make them track keys). A new key past its policy's share is refused as when the store is full
// (domain.ErrStoreFull, counted by FullRejections), and only that policy's checks of new keys see it: the other
// policies' keys still have their room.
package memory

import (
	"context"
	"hash/maphash"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// Options configure a Store.
type Options struct {
	// MaxKeys bounds live (policy, key) pairs; ≤ 0 means 1,000,000.
	MaxKeys int
	// Shards is rounded up to a power of two; ≤ 0 picks 16 per CPU.
	Shards int
	// PolicyShare is the fraction of MaxKeys one policy's keys may hold; ≤ 0 or > 1 means 1/2.
	PolicyShare float64
	// ShadowShare bounds a policy's keys, as PolicyShare does, when a shadow check adds one; ≤ 0 or > 1 means
	// 1/10.
	ShadowShare float64
}

// Store implements domain.BucketStore. Safe for concurrent use.
type Store struct {
	clock   domain.Clock
	start   time.Time // read once; later instants are start plus the monotonic time elapsed
	seed    maphash.Seed
	shards  []shard
	mask    uint64
	maxKeys int64
	keys    atomic.Int64
	full    atomic.Int64
	// pol is the API policies' store (Policies), when made: stored checks are held to its generations.
	pol atomic.Pointer[Policies]
	// perPolicy counts each policy's live keys (policy name → *atomic.Int64), against policyMax and shadowMax.
	perPolicy sync.Map
	policyMax int64
	shadowMax int64
	// lastFullSweep (unix µs of the store clock) limits whole-store sweeps when full to one per second, so a
	// store full of live keys does not sweep on every new key.
	lastFullSweep atomic.Int64
}

type bucketKey struct{ policy, key string }

// bucket is one key's state and the window it was last decided with (for sweeping).
type bucket struct {
	state  domain.Bucket
	window time.Duration
}

type shard struct {
	mu sync.Mutex
	m  map[bucketKey]*bucket
	_  [40]byte // keep hot shards on separate cache lines
}

var _ domain.BucketStore = (*Store)(nil)

// New returns an empty store reading time from clock.
func New(clock domain.Clock, o Options) *Store {
	if o.MaxKeys <= 0 {
		o.MaxKeys = 1_000_000
	}
	if o.Shards <= 0 {
		o.Shards = 16 * runtime.GOMAXPROCS(0)
	}
	n := 1
	for n < o.Shards {
		n <<= 1
	}
	if o.PolicyShare <= 0 || o.PolicyShare > 1 {
		o.PolicyShare = 0.5
	}
	if o.ShadowShare <= 0 || o.ShadowShare > 1 {
		o.ShadowShare = 0.1
	}
	s := &Store{clock: clock, start: clock.Now(), seed: maphash.MakeSeed(), shards: make([]shard, n), mask: uint64(n - 1), maxKeys: int64(o.MaxKeys),
		policyMax: max(1, int64(float64(o.MaxKeys)*o.PolicyShare)), shadowMax: max(1, int64(float64(o.MaxKeys)*o.ShadowShare))}
	for i := range s.shards {
		s.shards[i].m = make(map[bucketKey]*bucket)
	}
	s.lastFullSweep.Store(-1 << 62)
	return s
}

func (s *Store) shardIndex(policy, key string) int {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(policy)
	h.WriteByte(0) // policy names never hold NUL, so (policy, key) pairs cannot collide
	h.WriteString(key)
	return int(h.Sum64() & s.mask)
}

// Policies returns the PolicyStore of this store's API policies, on the store's clock (the floors of changed
// policies are instants of that clock). The store decides every check of an API policy (BucketRequest.Stored)
// against it: a check whose policy generation is no longer the one in force (deleted, or deleted and re-created,
// after the check resolved it) is refused as StatusPolicyNotFound and records nothing, so it can never count a
// deleted generation afresh on a key its DropPolicy already emptied.
func (s *Store) Policies() *Policies {
	p := newPolicies(s.now)
	s.pol.Store(p)
	return p
}

// Keys reports the live (policy, key) pairs held, for the memory-keys gauge.
func (s *Store) Keys() int64 { return s.keys.Load() }

// FullRejections counts checks refused because the store was full of live keys.
func (s *Store) FullRejections() int64 { return s.full.Load() }

// MaxKeys reports the bound.
func (s *Store) MaxKeys() int64 { return s.maxKeys }

// now is the store's instant in unix microseconds (the unit of every algorithm's step). It is measured from start
// with Time.Sub, which uses the monotonic clock when the Clock provides one, so a wall-clock step (NTP) cannot
// move a window.
func (s *Store) now() int64 {
	return (s.start.UnixNano() + int64(s.clock.Now().Sub(s.start))) / int64(time.Microsecond)
}

// Decide implements domain.BucketStore.
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	if err := ctx.Err(); err != nil {
		return domain.Decision{}, err
	}
	sh := &s.shards[s.shardIndex(r.Policy, r.Key)]
	now := s.now()
	sh.mu.Lock()
	d, err := s.decideLocked(sh, now, r, nil)
	sh.mu.Unlock()
	if err == domain.ErrStoreFull && s.sweepWhenFull(now) {
		sh.mu.Lock()
		d, err = s.decideLocked(sh, now, r, nil)
		sh.mu.Unlock()
	}
	return d, err
}

// decideLocked decides r on a locked shard. When marks is not nil, the bucket's mark before the decision is
// appended to it, for rollback.
func (s *Store) decideLocked(sh *shard, now int64, r domain.BucketRequest, undo *[]undoEntry) (domain.Decision, error) {
	if r.Stored {
		if pol := s.pol.Load(); pol != nil {
			if g, ok := pol.generation(r.Policy); !ok || g != r.Generation {
				return domain.Decision{Status: domain.StatusPolicyNotFound, Limit: r.Limit}, nil
			}
		}
	}
	k := bucketKey{r.Policy, r.Key}
	b := sh.m[k]
	if b == nil {
		var empty domain.Bucket
		if r.Cost == 0 {
			return empty.Decide(now, r.Rule, 0), nil // a peek of an unknown key stores nothing
		}
		if s.keys.Load() >= s.maxKeys || !s.admitKey(r) {
			s.full.Add(1)
			return domain.Decision{}, domain.ErrStoreFull
		}
		b = &bucket{}
		sh.m[k] = b
		s.keys.Add(1)
	}
	if undo != nil && !marked(*undo, b) { // one mark per key and batch: rolling back to it undoes every check
		*undo = append(*undo, undoEntry{sh: sh, k: k, b: b, mark: b.state.Mark()})
	}
	b.window = r.Window
	d := b.state.Decide(now, r.Rule, r.Cost)
	if b.state.Len() == 0 && undo == nil {
		delete(sh.m, k) // nothing left in the window: drop the key
		s.dropped(k.policy, 1)
	}
	return d, nil
}

// Hold implements domain.BucketStore: the hold's step (domain.Bucket.ApplyHold) under the key's shard lock, as Decide's
// (an OpCheck is Decide's). A settle or renewal of a key the store does not hold finds no hold and stores nothing.
func (s *Store) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	if err := ctx.Err(); err != nil {
		return domain.HoldDecision{}, err
	}
	if q.Op == domain.OpCheck {
		d, err := s.Decide(ctx, q.BucketRequest)
		return domain.HoldDecision{Decision: d}, err
	}
	sh := &s.shards[s.shardIndex(q.Policy, q.Key)]
	now := s.now()
	sh.mu.Lock()
	hd, err := s.holdLocked(sh, now, q)
	sh.mu.Unlock()
	if err == domain.ErrStoreFull && s.sweepWhenFull(now) {
		sh.mu.Lock()
		hd, err = s.holdLocked(sh, now, q)
		sh.mu.Unlock()
	}
	return hd, err
}

func (s *Store) holdLocked(sh *shard, now int64, q domain.BucketHold) (domain.HoldDecision, error) {
	if q.Stored {
		if pol := s.pol.Load(); pol != nil {
			if g, ok := pol.generation(q.Policy); !ok || g != q.Generation {
				return domain.HoldDecision{Decision: domain.Decision{Status: domain.StatusPolicyNotFound, Limit: q.Limit}}, nil
			}
		}
	}
	k := bucketKey{q.Policy, q.Key}
	b := sh.m[k]
	if b == nil {
		var empty domain.Bucket
		if q.Op != domain.OpAcquire {
			return empty.ApplyHold(now, q), nil
		}
		if s.keys.Load() >= s.maxKeys || !s.admitKey(q.BucketRequest) {
			s.full.Add(1)
			return domain.HoldDecision{}, domain.ErrStoreFull
		}
		b = &bucket{}
		sh.m[k] = b
		s.keys.Add(1)
	}
	b.window = q.Window
	hd := b.state.ApplyHold(now, q)
	if b.state.Len() == 0 {
		delete(sh.m, k) // nothing left: a denied acquire of a new key, or the last hold gone
		s.dropped(k.policy, 1)
	}
	return hd, nil
}

// admitKey takes a slot of r's policy's share for a new key, or reports that the policy holds its share
// already (Options.PolicyShare, or ShadowShare for a shadow check).
func (s *Store) admitKey(r domain.BucketRequest) bool {
	c, ok := s.perPolicy.Load(r.Policy)
	if !ok {
		c, _ = s.perPolicy.LoadOrStore(r.Policy, new(atomic.Int64))
	}
	n := c.(*atomic.Int64)
	limit := s.policyMax
	if r.Shadow {
		limit = s.shadowMax
	}
	if n.Add(1) > limit {
		n.Add(-1)
		return false
	}
	return true
}

// dropped gives back n keys of policy's share and of the store.
func (s *Store) dropped(policy string, n int64) {
	s.keys.Add(-n)
	if c, ok := s.perPolicy.Load(policy); ok {
		c.(*atomic.Int64).Add(-n)
	}
}

// PolicyKeys reports how many live keys policy holds.
func (s *Store) PolicyKeys(policy string) int64 {
	if c, ok := s.perPolicy.Load(policy); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// marked reports whether undo holds a mark of b already.
func marked(undo []undoEntry, b *bucket) bool {
	for _, u := range undo {
		if u.b == b {
			return true
		}
	}
	return false
}

type undoEntry struct {
	sh   *shard
	k    bucketKey
	b    *bucket
	mark domain.Mark
}

// DecideBatch implements domain.BucketStore. The shards involved are locked in ascending index order, which is
// the fixed order that rules out deadlock between concurrent batches.
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	idx := make([]int, len(rs))
	locks := make([]int, 0, len(rs))
	for i, r := range rs {
		idx[i] = s.shardIndex(r.Policy, r.Key)
		locks = append(locks, idx[i])
	}
	sort.Ints(locks)
	locks = compact(locks)
	now := s.now()
	for attempt := 0; ; attempt++ {
		ds, err := s.batchLocked(rs, idx, locks, now, atomic)
		if err == domain.ErrStoreFull && attempt == 0 && s.sweepWhenFull(now) {
			continue
		}
		return ds, err
	}
}

func (s *Store) batchLocked(rs []domain.BucketRequest, idx, locks []int, now int64, atomic bool) ([]domain.Decision, error) {
	for _, i := range locks {
		s.shards[i].mu.Lock()
	}
	defer func() {
		for _, i := range locks {
			s.shards[i].mu.Unlock()
		}
	}()
	ds := make([]domain.Decision, len(rs))
	undo := make([]undoEntry, 0, len(rs))
	commit := true
	var err error
	for i, r := range rs {
		ds[i], err = s.decideLocked(&s.shards[idx[i]], now, r, &undo)
		if err != nil {
			commit = false
			break
		}
		if !ds[i].Allowed && !r.Shadow && atomic {
			commit = false
		}
	}
	for j := len(undo) - 1; j >= 0; j-- {
		if commit {
			undo[j].b.state.Release()
		} else {
			undo[j].b.state.Rollback(undo[j].mark)
		}
	}
	// Drop keys left empty (new keys of a rolled-back batch, peeks, expired logs).
	for _, u := range undo {
		if b := u.sh.m[u.k]; b == u.b && b.state.Len() == 0 {
			delete(u.sh.m, u.k)
			s.dropped(u.k.policy, 1)
		}
	}
	if err != nil {
		return nil, err
	}
	return ds, nil
}

func compact(xs []int) []int {
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// Reset implements domain.BucketStore.
func (s *Store) Reset(ctx context.Context, policy, key string) error {
	sh := &s.shards[s.shardIndex(policy, key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := bucketKey{policy, key}
	if _, ok := sh.m[k]; ok {
		delete(sh.m, k)
		s.dropped(policy, 1)
	}
	return nil
}

// DropPolicy implements domain.BucketStore. It walks every shard: policies are deleted rarely.
func (s *Store) DropPolicy(ctx context.Context, policy string) error {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k := range sh.m {
			if k.policy == policy {
				delete(sh.m, k)
				s.dropped(policy, 1)
			}
		}
		sh.mu.Unlock()
	}
	return nil
}

// Ping implements domain.BucketStore: memory always answers.
func (s *Store) Ping(context.Context) error { return nil }

// Sweep drops every key whose window is empty and reports how many it dropped. It takes one shard lock at a time.
func (s *Store) Sweep() int {
	now := s.now()
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, b := range sh.m {
			if b.state.Empty(now, b.window) {
				delete(sh.m, k)
				s.dropped(k.policy, 1)
				dropped++
			}
		}
		sh.mu.Unlock()
	}
	return dropped
}

// sweepWhenFull sweeps the whole store at most once per second of store time and reports whether it freed a slot.
func (s *Store) sweepWhenFull(now int64) bool {
	last := s.lastFullSweep.Load()
	if now-last < int64(time.Second/time.Microsecond) || !s.lastFullSweep.CompareAndSwap(last, now) {
		return false
	}
	return s.Sweep() > 0
}

// RunSweeper sweeps every interval until ctx ends. The app runs it; tests call Sweep directly.
func (s *Store) RunSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// ApplyBatch applies checks (domain.OpCheck) and hold operations one after another, each under its key's lock as
// Decide and Hold apply them. The memory store has no round trip to save; it offers the batch so the conformance
// suite's mixed batches (storetest.OpBatcher, what the coalescer's lanes send a laned store) run on every store.
func (s *Store) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	out := make([]domain.HoldDecision, len(ops))
	for i, q := range ops {
		var err error
		if out[i], err = s.Hold(ctx, q); err != nil {
			return nil, err
		}
	}
	return out, nil
}

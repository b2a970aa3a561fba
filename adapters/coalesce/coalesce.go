// Package coalesce is a domain.BucketStore decorator that coalesces concurrent checks of one (policy, key).
//
// A store whose decisions cost a round trip (Postgres) serialises the checks of one hot key on that key's row
// lock: N concurrent checks are N round trips, one after another. The decorator lets only one call per
// (policy, key) be in flight. Checks that arrive while it is in flight queue up, and when it returns they are
// sent together as ONE non-atomic DecideBatch, which applies them in arrival order, each seeing the units
// recorded by the ones before it: the outcome is exactly that of running them one after another, so the
// limit holds exactly as before, but a hot key costs one round trip per batch instead of one per check.
//
// There are no timers: a check that finds its key idle is sent at once, alone, with no added latency; batching
// happens only while a call is in flight (leader/follower). The first check to join a queued batch leads it:
// it sends the batch when the in-flight call returns, and every member gets its own decision. Batches hold at
// most MaxBatch checks; more waiters form further batches, sent one after another.
//
// Cancellation: a member whose context ends before its batch is sent leaves the batch (nothing is recorded for
// it; if it was the leader another member takes over). Once the batch is sent, a member whose context ends
// returns at once with the context's error; its check may still be recorded, as with any call cancelled while
// its statement runs. The batch itself runs under a context that ends only when every member has given up, so
// one caller's cancellation never fails the others.
//
// With Options.Lanes set, the same happens per lane rather than per key: keys are hashed onto a fixed number of
// lanes, at most one call per lane is in flight, and a batch may hold checks of several keys. On Postgres that
// puts several decisions in one round trip and one transaction (one commit), which is what makes a busy replica
// cheaper per decision than one statement per check; a hot key is still coalesced, since its checks share a lane.
//
// A lane couples unrelated keys: while one call is in flight the lane's other checks wait for it, and a batch
// succeeds or fails as a whole. So a key whose row stays locked by another session (a long transaction, or heavy
// contention from other replicas) would stall every key of its lane up to the statement timeout, and fail the
// unrelated checks batched with it. When the wrapped store can bound that wait (BoundedBatcher, implemented by
// the Postgres store), lanes send every call that way; a call that gives up recorded nothing, frees the lane at
// once, and its checks are re-sent per key (as in key mode: one call per key in flight, waiting as long as the
// store allows). A locked key then costs the others of its lane at most the short lock wait and a second round
// trip, never a failure.
//
// Hold operations (acquire, settle, renew, release) ride the same queues when the wrapped store applies mixed
// batches (OpBatcher; in lane mode with a bounded store, BoundedOpBatcher): a batch holding any hold operation is
// sent as one ApplyBatch, in arrival order, each operation atomic on its key as Hold applies it, so a pair of
// hold operations costs a share of a round trip and a commit as checks do. A store without them gets each hold
// straight through (its own call, outside the queues). A batch of checks alone is still one DecideBatch.
//
// Atomic batches (DecideBatch with atomic set: every Envoy RLS request, an atomic /v1/checks) ride the lanes too
// when the wrapped store can decide several callers' batches in one call (GroupBatcher, implemented by the Postgres
// store; lane mode over a BoundedBatcher only). An atomic batch of one check is a check. A larger one queues on the
// lane of its first check, as one member, and a lane's batch that holds any is sent as one DecideGroupsBounded: the
// lane's single checks as one non-atomic group, then each atomic batch as its own group, each all-or-nothing on
// its own exactly as DecideBatch(atomic) decides it alone, locking in one key order across the whole call. That
// call is one transaction: when it fails (a statement timeout, a killed backend) nothing was recorded for any
// member and every member gets the error; when it gives up on a locked row (busy), its single checks are re-sent
// per key and each atomic batch straight to the store's DecideBatch. Hold operations and atomic batches never share
// a batch (a batch holding either takes the other's members into the next one). Elsewhere (key mode, Redis,
// memory) an atomic batch passes straight through to the wrapped store, as does every non-atomic DecideBatch.
//
// Reset, DropPolicy and Ping pass straight through to the wrapped store.
package coalesce

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/sluice-dev/sluice/domain"
)

// DefaultMaxBatch bounds the checks sent in one DecideBatch when Options.MaxBatch is not set.
const DefaultMaxBatch = 256

const shardCount = 64

// Options configure a Store.
type Options struct {
	// MaxBatch bounds the checks sent in one DecideBatch; ≤ 0 means DefaultMaxBatch.
	MaxBatch int
	// Lanes, when > 0, coalesces by lane instead of by key: (policy, key) pairs are hashed onto Lanes lanes, at
	// most one call per lane is in flight, and checks arriving meanwhile (of any key of that lane) go out
	// together as one DecideBatch. Every check of one key still maps to one lane, so a hot key is coalesced as
	// in key mode; in addition, checks of different keys share round trips (and, on Postgres, transactions),
	// and the store sees at most Lanes concurrent calls. At most the store's connection pool size; fewer lanes
	// make bigger batches (fewer round trips and commits per check), more use more of the database's cores
	// (app picks min(4, pool size) unless postgres.lanes says otherwise).
	Lanes int
}

// BoundedBatcher is what lane mode needs from a store to keep one locked key from stalling its lane (see the
// package doc): a non-atomic DecideBatch that gives up, recording nothing and reporting busy, when a row stays
// locked by another session beyond a short wait.
type BoundedBatcher interface {
	DecideBatchBounded(ctx context.Context, rs []domain.BucketRequest) (ds []domain.Decision, busy bool, err error)
}

// OpBatcher is what carrying hold operations in the queues needs from a store: checks (domain.OpCheck) and hold
// operations applied in order, each atomically on its key exactly as Decide or Hold would apply it, each seeing
// what the ones before it recorded; the batch as a whole is not atomic, and one operation's own outcome (a
// denial, an unknown hold, a stale generation) is its result, never the batch's error.
type OpBatcher interface {
	ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error)
}

// BoundedOpBatcher is OpBatcher's ApplyBatch bounded as BoundedBatcher bounds DecideBatch: it gives up, recording
// nothing and reporting busy, when a row stays locked by another session beyond a short wait. In lane mode over a
// BoundedBatcher, hold operations ride the lanes only when the store offers this too (else one locked key could
// stall its lane through a hold).
type BoundedOpBatcher interface {
	ApplyBatchBounded(ctx context.Context, ops []domain.BucketHold) (hds []domain.HoldDecision, busy bool, err error)
}

// GroupBatcher is what carrying atomic batches in the lanes needs from a store: several callers' batches decided
// in one call and one transaction. rs holds the groups' checks one after another, ends[g] is the index one past
// group g's last check (rising, the last one len(rs)), atomic[g] says whether group g is atomic; each group is
// decided exactly as DecideBatch(rs[group], atomic[g]) would decide it alone, in group order, with its rows locked
// in one fixed order across the whole call, and the decisions come back concatenated. Bounded as BoundedBatcher:
// busy (no error) means a row stayed locked by another session beyond a short wait; busy or an error means nothing
// was recorded for any group.
type GroupBatcher interface {
	DecideGroupsBounded(ctx context.Context, rs []domain.BucketRequest, ends []int, atomic []bool) (ds []domain.Decision, busy bool, err error)
}

// Store wraps a domain.BucketStore. Safe for concurrent use.
type Store struct {
	domain.BucketStore
	maxBatch int
	lanes    uint64
	bounded  BoundedBatcher // in lane mode, when the store implements it
	// ops applies mixed batches (nil: holds pass straight through); boundedOps in lane mode over a bounded store.
	ops        OpBatcher
	boundedOps BoundedOpBatcher
	groups     GroupBatcher // atomic batches ride the lanes (lane mode over a bounded store that implements it)
	seed       maphash.Seed
	shards     [shardCount]shard

	batches   atomic.Int64
	coalesced atomic.Int64
	busy      atomic.Int64
}

var _ domain.BucketStore = (*Store)(nil)

// bucketKey names a queue: a (policy, key), or in lane mode a lane (policy and key empty).
type bucketKey struct {
	policy, key string
	lane        int
}

type shard struct {
	mu sync.Mutex
	m  map[bucketKey]*queue
	_  [48]byte
}

// queue is the state of one (policy, key) while a call for it is in flight: the batches waiting their turn,
// oldest first. A key with no call in flight has no queue.
type queue struct {
	pending []*batch
}

// batch is a group of operations of one queue (a key, or a lane) that will be sent as one batch (sendBatch).
type batch struct {
	members []*waiter
	size    int     // checks and hold operations of its members (an atomic batch counts its checks)
	holds   bool    // a member is a hold operation: sent as one ApplyBatch
	groups  bool    // a member is an atomic batch: sent as one DecideGroupsBounded
	live    int     // members still wanting a decision (not cancelled before the send)
	leader  *waiter // the live member that sends the batch
	ready   bool    // the previous call returned: the leader may send
	sent    bool
	// After the send: members still waiting; when it reaches 0 the batch's context is cancelled.
	waiting int
	cancel  context.CancelFunc
}

type waiter struct {
	op        domain.BucketHold      // a check (domain.OpCheck) or a hold operation, unless group is set
	group     []domain.BucketRequest // an atomic batch of two checks or more (GroupBatcher)
	ds        []domain.Decision      // group's decisions
	cancelled bool                   // left before the send
	done      bool                   // hd (a group's ds) and err are set, or busy
	busy      bool                   // the lane's call gave up on a locked row: nothing recorded, send again per key
	hd        domain.HoldDecision
	err       error
	// wake carries one signal: "you lead, send now" or "your decision is in" (done says which).
	wake chan struct{}
}

// New wraps store.
func New(store domain.BucketStore, o Options) *Store {
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	s := &Store{BucketStore: store, maxBatch: o.MaxBatch, lanes: uint64(max(o.Lanes, 0)), seed: maphash.MakeSeed()}
	if bb, ok := store.(BoundedBatcher); ok && s.lanes > 0 {
		s.bounded = bb
	}
	if ob, ok := store.(OpBatcher); ok {
		bo, boundedOK := store.(BoundedOpBatcher)
		if s.bounded == nil || boundedOK {
			s.ops, s.boundedOps = ob, bo
		}
	}
	if gb, ok := store.(GroupBatcher); ok && s.bounded != nil {
		s.groups = gb
	}
	for i := range s.shards {
		s.shards[i].m = make(map[bucketKey]*queue)
	}
	return s
}

// Batches reports how many batch calls (DecideBatch, ApplyBatch or DecideGroupsBounded) the decorator sent on behalf
// of coalesced operations.
func (s *Store) Batches() int64 { return s.batches.Load() }

// Coalesced reports how many checks, hold operations and atomic batches were sent inside those batches.
func (s *Store) Coalesced() int64 { return s.coalesced.Load() }

// Busy reports how many lane calls gave up on a row locked by another session, their checks then re-sent per key.
func (s *Store) Busy() int64 { return s.busy.Load() }

// queueOf returns the queue name of (policy, key) and its shard: its lane in lane mode, unless perKey.
func (s *Store) queueOf(policy, key string, perKey bool) (bucketKey, *shard) {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(policy)
	h.WriteByte(0)
	h.WriteString(key)
	sum := h.Sum64()
	if s.lanes > 0 && !perKey {
		lane := sum % s.lanes
		return bucketKey{lane: int(lane)}, &s.shards[lane%shardCount]
	}
	return bucketKey{policy: policy, key: key}, &s.shards[sum%shardCount]
}

// Decide implements domain.BucketStore: the check is sent at once when no call for its key is in flight, and
// otherwise joins the next batch for that key.
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	hd, err := s.apply(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpCheck})
	return hd.Decision, err
}

// Hold implements domain.BucketStore: through the queues as a check goes when the store applies mixed batches,
// else straight to the store.
func (s *Store) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	if s.ops == nil {
		return s.BucketStore.Hold(ctx, q)
	}
	return s.apply(ctx, q)
}

// DecideBatch implements domain.BucketStore. In lane mode over a GroupBatcher an atomic batch rides the lanes (see
// the package doc): one check as Decide sends it (an atomic batch of one check records exactly what Decide
// records), more as one member of its first check's lane, re-sent straight to the wrapped store's DecideBatch if
// the lane's call gave up on a locked row. Otherwise, and for every non-atomic batch, it passes straight through.
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if s.groups == nil || !atomic || len(rs) == 0 {
		return s.BucketStore.DecideBatch(ctx, rs, atomic)
	}
	if len(rs) == 1 {
		d, err := s.Decide(ctx, rs[0])
		if err != nil {
			return nil, err
		}
		return []domain.Decision{d}, nil
	}
	_, ds, busy, err := s.run(ctx, domain.BucketHold{}, rs, false)
	if busy {
		return s.BucketStore.DecideBatch(ctx, rs, true)
	}
	return ds, err
}

// apply runs op through its lane's queue and, if that lane's call gave up on a locked row (recording nothing),
// again through its key's own queue.
func (s *Store) apply(ctx context.Context, op domain.BucketHold) (domain.HoldDecision, error) {
	hd, _, busy, err := s.run(ctx, op, nil, false)
	if busy {
		hd, _, _, err = s.run(ctx, op, nil, true)
	}
	return hd, err
}

// run runs op, or the atomic batch group when it is not nil (only in lane mode over a GroupBatcher), through its
// lane's queue (a group's: its first check's) or, with perKey (or in key mode), its key's. busy is true only for a
// lane call that gave up on a locked row (see BoundedBatcher); nothing was recorded for op or group then.
func (s *Store) run(ctx context.Context, op domain.BucketHold, group []domain.BucketRequest, perKey bool) (domain.HoldDecision, []domain.Decision, bool, error) {
	if err := ctx.Err(); err != nil {
		return domain.HoldDecision{}, nil, false, err
	}
	size := 1
	if group != nil {
		op.BucketRequest, size = group[0], len(group)
	}
	k, sh := s.queueOf(op.Policy, op.Key, perKey)
	bounded := s.bounded != nil && !perKey
	sh.mu.Lock()
	q, inFlight := sh.m[k]
	if !inFlight {
		q = &queue{}
		sh.m[k] = q
		sh.mu.Unlock()
		var hd domain.HoldDecision
		var ds []domain.Decision
		var busy bool
		var err error
		switch {
		case group != nil:
			_, dss, b, e := s.sendGroups(ctx, []*waiter{{group: group}})
			if busy, err = b, e; err == nil && !busy {
				ds = dss[0]
			}
		case bounded && op.Op == domain.OpCheck:
			// The common path of a lane over Postgres: a batch of one check, sent as checks always were.
			var ds []domain.Decision
			if ds, busy, err = s.sendChecks(ctx, []domain.BucketRequest{op.BucketRequest}, true); err == nil && !busy {
				hd.Decision = ds[0]
			}
		case bounded:
			var hds []domain.HoldDecision
			if hds, busy, err = s.sendBatch(ctx, []domain.BucketHold{op}, true); err == nil && !busy {
				hd = hds[0]
			}
		case op.Op == domain.OpCheck:
			hd.Decision, err = s.BucketStore.Decide(ctx, op.BucketRequest)
		default:
			hd, err = s.BucketStore.Hold(ctx, op)
		}
		sh.mu.Lock()
		s.advanceLocked(sh, k, q)
		sh.mu.Unlock()
		return hd, ds, busy, err
	}
	hold := group == nil && op.Op != domain.OpCheck
	var b *batch
	if n := len(q.pending); n > 0 {
		last := q.pending[n-1]
		if last.size+size <= s.maxBatch && !(hold && last.groups) && !(group != nil && last.holds) {
			b = last
		}
	}
	if b == nil {
		b = &batch{}
		q.pending = append(q.pending, b)
	}
	b.size += size
	b.holds = b.holds || hold
	b.groups = b.groups || group != nil
	w := &waiter{op: op, group: group, wake: make(chan struct{}, 1)}
	b.members = append(b.members, w)
	b.live++
	if b.leader == nil {
		b.leader = w
	}
	sh.mu.Unlock()

	select {
	case <-w.wake:
	case <-ctx.Done():
		sh.mu.Lock()
		if w.done { // the decision came in meanwhile
			sh.mu.Unlock()
			return w.hd, w.ds, w.busy, w.err
		}
		if !b.sent { // leave the batch (handing over the lead if it was ours, even if we were just woken)
			s.leaveLocked(sh, k, q, b, w)
			sh.mu.Unlock()
			return domain.HoldDecision{}, nil, false, ctx.Err()
		}
		// Sent: give up on the decision; the last member to give up cancels the batch.
		b.waiting--
		if b.waiting == 0 {
			b.cancel()
		}
		sh.mu.Unlock()
		return domain.HoldDecision{}, nil, false, ctx.Err()
	}
	sh.mu.Lock()
	if w.done {
		sh.mu.Unlock()
		return w.hd, w.ds, w.busy, w.err
	}
	// Woken to lead: the previous call returned and this batch is next.
	return s.send(ctx, sh, k, q, b, w, bounded)
}

// leaveLocked removes w, cancelled before its batch was sent. If w led the batch, another live member takes
// over (and is woken at once if the batch's turn has already come); a batch left with no member passes its turn
// on.
func (s *Store) leaveLocked(sh *shard, k bucketKey, q *queue, b *batch, w *waiter) {
	w.cancelled = true
	b.live--
	if b.leader != w {
		return
	}
	b.leader = nil
	for _, m := range b.members {
		if !m.cancelled {
			b.leader = m
			break
		}
	}
	if !b.ready {
		return
	}
	if b.leader != nil {
		b.leader.wake <- struct{}{}
		return
	}
	// This batch had the turn and nobody is left to use it.
	s.advanceLocked(sh, k, q)
}

// send sends b, led by w, as one batch (sendGroups when it holds an atomic batch, else sendBatch) and hands each
// member its decision, or tells every member it is busy. Called with sh.mu held; it releases it.
func (s *Store) send(ctx context.Context, sh *shard, k bucketKey, q *queue, b *batch, w *waiter, bounded bool) (domain.HoldDecision, []domain.Decision, bool, error) {
	b.sent = true
	members := make([]*waiter, 0, b.live)
	ops := make([]domain.BucketHold, 0, b.live)
	for _, m := range b.members {
		if !m.cancelled {
			members = append(members, m)
			ops = append(ops, m.op)
		}
	}
	b.waiting = len(members)
	// The batch outlives any one member's cancellation: it ends when every member has given up (a member whose
	// context ends decrements waiting; so does the leader, through AfterFunc, since it is busy sending).
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	sh.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		sh.mu.Lock()
		if !w.done {
			b.waiting--
			if b.waiting == 0 {
				cancel()
			}
		}
		sh.mu.Unlock()
	})

	var hds []domain.HoldDecision
	var dss [][]domain.Decision
	var busy bool
	var err error
	if b.groups {
		hds, dss, busy, err = s.sendGroups(bctx, members)
	} else {
		hds, busy, err = s.sendBatch(bctx, ops, bounded)
	}
	stop()
	cancel()
	s.batches.Add(1)
	s.coalesced.Add(int64(len(ops)))

	sh.mu.Lock()
	for i, m := range members {
		m.done = true
		switch {
		case busy:
			m.busy = true
		case err != nil:
			m.err = err
		case m.group != nil:
			m.ds = dss[i]
		default:
			m.hd = hds[i]
		}
		if m != w {
			m.wake <- struct{}{}
		}
	}
	s.advanceLocked(sh, k, q)
	sh.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		return domain.HoldDecision{}, nil, false, ctx.Err()
	}
	return w.hd, w.ds, w.busy, w.err
}

// sendGroups sends ws (checks and atomic batches, no hold operation) as one DecideGroupsBounded: the checks as one
// non-atomic group first, then each atomic batch as its own group. Unless busy (counted in Busy), a nil error
// comes with each member's decision: hds[i] for a check, dss[i] for an atomic batch.
func (s *Store) sendGroups(ctx context.Context, ws []*waiter) ([]domain.HoldDecision, [][]domain.Decision, bool, error) {
	var rs []domain.BucketRequest
	var ends []int
	var atomic []bool
	for _, w := range ws {
		if w.group == nil {
			rs = append(rs, w.op.BucketRequest)
		}
	}
	if len(rs) > 0 {
		ends, atomic = append(ends, len(rs)), append(atomic, false)
	}
	for _, w := range ws {
		if w.group != nil {
			rs = append(rs, w.group...)
			ends, atomic = append(ends, len(rs)), append(atomic, true)
		}
	}
	ds, busy, err := s.groups.DecideGroupsBounded(ctx, rs, ends, atomic)
	if busy && err == nil {
		s.busy.Add(1)
		return nil, nil, true, nil
	}
	if err == nil && len(ds) != len(rs) {
		err = errShortBatch
	}
	if err != nil {
		return nil, nil, false, err
	}
	hds := make([]domain.HoldDecision, len(ws))
	dss := make([][]domain.Decision, len(ws))
	i := 0
	for j, w := range ws {
		if w.group == nil {
			hds[j].Decision = ds[i]
			i++
		}
	}
	for j, w := range ws {
		if w.group != nil {
			dss[j] = ds[i : i+len(w.group) : i+len(w.group)]
			i += len(w.group)
		}
	}
	return hds, dss, false, nil
}

// sendBatch sends ops as one non-atomic batch: checks alone as one DecideBatch (DecideBatchBounded when bounded),
// a batch with any hold operation as one ApplyBatch (ApplyBatchBounded). Unless busy (a bounded call gave up,
// recording nothing: counted in Busy), a nil error comes with one decision per operation.
func (s *Store) sendBatch(ctx context.Context, ops []domain.BucketHold, bounded bool) ([]domain.HoldDecision, bool, error) {
	checks := true
	for i := range ops {
		checks = checks && ops[i].Op == domain.OpCheck
	}
	var hds []domain.HoldDecision
	var busy bool
	var err error
	switch {
	case !checks && bounded:
		hds, busy, err = s.boundedOps.ApplyBatchBounded(ctx, ops)
	case !checks:
		hds, err = s.ops.ApplyBatch(ctx, ops)
	default:
		reqs := make([]domain.BucketRequest, len(ops))
		for i := range ops {
			reqs[i] = ops[i].BucketRequest
		}
		ds, busy, err := s.sendChecks(ctx, reqs, bounded) // counts busy itself
		if err != nil || busy {
			return nil, busy, err
		}
		hds = make([]domain.HoldDecision, len(ds))
		for i := range ds {
			hds[i].Decision = ds[i]
		}
		return hds, false, nil
	}
	if busy && err == nil {
		s.busy.Add(1)
		return nil, true, nil
	}
	if err == nil && len(hds) != len(ops) {
		err = errShortBatch
	}
	return hds, false, err
}

// sendChecks sends checks as one non-atomic DecideBatch (DecideBatchBounded when bounded). Unless busy (counted
// in Busy), a nil error comes with one decision per check.
func (s *Store) sendChecks(ctx context.Context, reqs []domain.BucketRequest, bounded bool) ([]domain.Decision, bool, error) {
	var ds []domain.Decision
	var err error
	if bounded {
		var busy bool
		if ds, busy, err = s.bounded.DecideBatchBounded(ctx, reqs); busy && err == nil {
			s.busy.Add(1)
			return nil, true, nil
		}
	} else {
		ds, err = s.BucketStore.DecideBatch(ctx, reqs, false)
	}
	if err == nil && len(ds) != len(reqs) {
		err = errShortBatch
	}
	return ds, false, err
}

// advanceLocked is called when the in-flight call for k returned: the next batch with a live member gets the
// turn (its leader is woken to send it), or the key goes idle.
func (s *Store) advanceLocked(sh *shard, k bucketKey, q *queue) {
	for len(q.pending) > 0 {
		b := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		if b.live == 0 {
			continue
		}
		b.ready = true
		b.leader.wake <- struct{}{}
		return
	}
	delete(sh.m, k)
}

type shortBatchError struct{}

func (shortBatchError) Error() string {
	return "coalesce: the store returned fewer decisions than operations"
}

var errShortBatch error = shortBatchError{}

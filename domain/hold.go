package domain

import (
	"math"
	"time"
)

// Holds (shared/design.md, "Holds"; issue 23): the domain's pure step, on a Bucket, for every algorithm. Stores
// run it through Bucket.ApplyHold (the memory store under its key's lock; the Postgres and Redis steps follow it
// as they follow Decide), tested against a brute-force model (hold_test.go) and fuzzed (FuzzHolds).
//
//   - Acquire is decided exactly like a check of cost amount; if admitted, the units are recorded as any check's
//     (under concurrency: by the record alone) and a hold record remembers them (id, amount, the instant the
//     algorithm recorded them, the refund deadline). A retried Acquire with the same id returns the same hold and
//     records nothing; with another amount it is a conflict.
//   - Settle replaces the hold's amount by the actual one, at the hold's own instant, through the algorithm's
//     adjust: less gives the difference back as if the hold had been for that amount from the start (a log's
//     entry at the hold's instant shrinks, a token bucket's tat moves back by the difference's emission time but
//     never further than the least lag an admission found since the acquire, where the two histories meet, a
//     fixed window's count goes down while the hold's window is current); more records the excess even past the
//     limit (reported as Overdraft, the units over the limit after it). Settling again with the same amount
//     changes nothing; with another amount it is a conflict. Release is Settle 0.
//   - Past the refund deadline (Expires) a settle still records any excess but gives nothing back: a smaller
//     amount is a conflict that says so (HoldExpired), and the hold stays charged in full.
//   - Under concurrency the record is the units: a settle to actual > 0 changes what the hold holds and leaves it
//     open (renewable, releasable); a release (0) ends it; past its deadline the units are back already, so any
//     settle is HoldExpired and changes nothing.
//   - A hold whose units a change of policy converted (another algorithm, or a token bucket's rate: the record's
//     instant no longer names them) gives nothing back either (HoldConverted); an excess is recorded at now under
//     the rule in force. A hold of another generation is unknown: the deleted policy's units are gone with it.
//   - Renew moves the refund deadline to now + min(ttl, window) while it has not passed (a settled hold has
//     nothing left to renew: a conflict).
//
// A record is kept while it can still matter, and dropped after: until its deadline and until its units stop
// counting (instant + window, or at once when a change of window or algorithm put the floor past its instant), for
// a settle that reports an excess late; a settled one only until its deadline (a retried settle within it answers
// the same), and only while it is among the key's MaxSettledKept last settled ones. Whether a record is dropped
// depends on the instant and the rule in force alone, never on which operations ran before (pruneHolds). At most
// MaxHolds records per key: an Acquire that finds MaxHolds first drops the records that no longer count (settled
// ones, and concurrency holds past their deadline: a retried settle of one then answers HoldUnknown and records
// nothing), and if still full is refused (HoldsFull) and records nothing.

// MaxHolds bounds the hold records of one (policy, key). A settled hold's record lives until its deadline (for a
// retried settle), an unsettled one until both its deadline and its units' window have passed (for a late excess),
// so the bound is on the holds a key has open or recently closed.
const MaxHolds = 1024

// MaxSettledKept bounds the settled records of one (policy, key): settling one more drops the settled record that
// comes first in the key's list (acquisition order), so a retried settle is answered as a replay while its record
// is among the last MaxSettledKept settled (and its deadline has not passed), and as unknown after (it records
// nothing either way). An open hold's record is never dropped for it.
const MaxSettledKept = 16

// Hold is one hold as a caller sees it.
type Hold struct {
	ID string
	// Amount is what the hold charges now: the amount acquired until settled, then the settled amount.
	Amount int64
	// At is the instant (unix µs) the algorithm recorded the units at; Expires is the refund deadline.
	At, Expires int64
	Settled     bool
}

// HoldStatus says what became of a hold operation that was not a plain success.
type HoldStatus uint8

const (
	// HoldOK: the operation was carried out (an Acquire's Decision says whether it was admitted: a denial
	// records no hold).
	HoldOK HoldStatus = iota
	// HoldReplayed: an Acquire with an id already held (same amount) or a Settle repeating the settled amount:
	// the hold as it is, nothing recorded.
	HoldReplayed
	// HoldUnknown: no hold has this id on the key (never acquired, another generation, or its record dropped).
	HoldUnknown
	// HoldConflict: the id is held with another amount (Acquire), or was settled with another amount (Settle).
	HoldConflict
	// HoldExpired: the refund deadline has passed: a smaller amount gives nothing back, a renewal is refused.
	HoldExpired
	// HoldConverted: a change of algorithm or rate converted the hold's units; a smaller amount gives nothing back.
	HoldConverted
	// HoldsFull: the key holds MaxHolds records; the Acquire recorded nothing.
	HoldsFull
)

// holdBook is a key's hold records, in acquisition order, and when pruneHolds may next drop one: no record of
// generation gen can be gone under a window of window µs and a floor of floor before next (a bound: it may come
// earlier than needed).
type holdBook struct {
	recs                     []holdRecord
	gen, window, floor, next int64
}

// pruneAt is when pruneHolds's rule drops h under r (its generation current).
func pruneAt(h *holdRecord, r Rule) int64 {
	if h.Settled || h.At <= r.Floor {
		return h.Expires
	}
	return max(h.At+int64(r.Window/time.Microsecond), h.Expires)
}

// settledBy notes that a record settled, with deadline expires: it may go from then on.
func (k *holdBook) settledBy(expires int64) { k.next = min(k.next, expires) }

// records is b's hold records (nil when none).
func (b *Bucket) records() []holdRecord {
	if b.holds == nil {
		return nil
	}
	return b.holds.recs
}

// holdRecord is one hold in a Bucket.
type holdRecord struct {
	Hold
	sum      uint32    // idSum(ID): compared before the id itself
	reserved int64     // the amount acquired
	gen      int64     // the generation that recorded it
	alg      Algorithm // the algorithm that recorded it
	c, w     int64     // token_bucket: the rate that recorded it
	// token_bucket: mq + mr/c µs bounds what a refund can still move tat back: the least lag (tat - t, at least
	// 0) any admission since the acquire found (adjustTokenBucket). Starts past any window.
	mq, mr int64
}

// Acquire decides a hold of amount (≥ 1) units at now under r with the given id and refund ttl (0 or more than
// the window: the window) and, when admitted, records it. The Decision is Decide's (for a replayed id, a peek's).
func (b *Bucket) Acquire(now int64, r Rule, id string, amount int64, ttl time.Duration) (Decision, Hold, HoldStatus) {
	if b.stale(r) {
		return Decision{Status: StatusPolicyNotFound, Limit: r.Limit}, Hold{}, HoldUnknown
	}
	if h := b.pruneFind(now, r, id); h != nil {
		d := b.Decide(now, r, 0)
		if h.reserved != amount {
			return d, h.Hold, HoldConflict
		}
		return d, h.Hold, HoldReplayed
	}
	if len(b.records()) >= MaxHolds {
		b.dropClosed(now)
		if len(b.records()) >= MaxHolds {
			return b.Decide(now, r, 0), Hold{}, HoldsFull
		}
	}
	d := b.decide(now, r, amount, true)
	if !d.Allowed || d.Status != StatusOK {
		return d, Hold{}, HoldOK
	}
	window := int64(r.Window / time.Microsecond)
	if ttl <= 0 || int64(ttl/time.Microsecond) > window {
		ttl = r.Window
	}
	at := now
	if r.Algorithm == SlidingWindow {
		at = ceilTo(now, int64(r.Resolution/time.Microsecond))
	}
	h := holdRecord{Hold: Hold{ID: id, Amount: amount, At: at, Expires: now + int64(ttl/time.Microsecond)},
		sum: idSum(id), reserved: amount, gen: r.Generation, alg: r.Algorithm}
	if r.Algorithm == TokenBucket {
		h.c, h.w, h.mq = r.Limit, window, maxTatLead
	}
	if b.holds == nil {
		b.holds = &holdBook{gen: r.Generation, window: window, floor: r.Floor, next: pruneAt(&h, r)}
	}
	b.holds.recs = append(b.holds.recs, h)
	b.holds.next = min(b.holds.next, pruneAt(&h, r))
	if row := algorithmRowOf(r.Algorithm); row.holdsOnly {
		// The step decided before the hold existed: every unit is back at the latest deadline, now maybe this one.
		d.ResetAfter = max(d.ResetAfter, micros(h.Expires-now))
	}
	return d, h.Hold, HoldOK
}

// Settle makes the hold id charge actual (≥ 0) units at now under r (see the package comment) and returns the
// hold as settled and the overdraft: the units the key holds over r's limit after the settle (0 when within).
func (b *Bucket) Settle(now int64, r Rule, id string, actual int64) (Hold, int64, HoldStatus) {
	h, st := b.settle(now, r, id, actual)
	if st != HoldOK && st != HoldReplayed {
		return h, 0, st
	}
	return h, b.overdraft(now, r), st
}

// settle is Settle without the overdraft, which ApplyHold works out only when its peek finds the key full.
func (b *Bucket) settle(now int64, r Rule, id string, actual int64) (Hold, HoldStatus) {
	if b.stale(r) {
		return Hold{}, HoldUnknown
	}
	h := b.pruneFind(now, r, id)
	if h == nil {
		return Hold{}, HoldUnknown
	}
	if r.Algorithm.HoldsOnly() && b.holdCurrent(h) {
		return b.settleHeld(now, h, actual)
	}
	if h.Settled {
		if h.Amount == actual {
			return h.Hold, HoldReplayed
		}
		return h.Hold, HoldConflict
	}
	delta := actual - h.Amount
	converted := !b.holdCurrent(h)
	switch {
	case delta < 0 && converted:
		return h.Hold, HoldConverted
	case delta < 0 && now >= h.Expires:
		return h.Hold, HoldExpired
	case delta != 0 && converted:
		// The units were converted: the excess is recorded at now under the rule in force (b holds r's state
		// when the hold's generation is current; an empty state starts one).
		b.forceRecord(now, r, delta)
	case delta != 0:
		algorithmRowOf(h.alg).adjust(b, now, r, h, delta)
	}
	h.Amount, h.Settled = actual, true
	b.holds.settledBy(h.Expires)
	out := h.Hold
	b.trimSettled()
	return out, HoldOK
}

// settleHeld is settle under concurrency: the record is the units.
func (b *Bucket) settleHeld(now int64, h *holdRecord, actual int64) (Hold, HoldStatus) {
	switch {
	case h.Settled && actual == 0:
		return h.Hold, HoldReplayed
	case h.Settled:
		return h.Hold, HoldConflict
	case now >= h.Expires:
		return h.Hold, HoldExpired
	}
	h.Amount, h.Settled = actual, actual == 0
	if h.Settled {
		b.holds.settledBy(h.Expires)
	}
	out := h.Hold
	b.trimSettled()
	return out, HoldOK
}

// trimSettled keeps the MaxSettledKept settled records that come last in the key's list (acquisition order) and
// drops the others: a settled record only answers a retried settle, and keeping each until its deadline (an hour
// under a 1 h window) would make every operation of a busy key walk thousands of them. A busy key settles one
// record at a time, so this usually drops one: the list closes over it in place.
func (b *Bucket) trimSettled() {
	if b.holds == nil {
		return
	}
	recs := b.holds.recs
	n := 0
	for i := range recs {
		if recs[i].Settled {
			n++
		}
	}
	for ; n > MaxSettledKept; n-- {
		for i := range recs {
			if recs[i].Settled {
				copy(recs[i:], recs[i+1:])
				recs[len(recs)-1] = holdRecord{}
				recs = recs[:len(recs)-1]
				break
			}
		}
	}
	b.holds.recs = recs
}

// dropClosed drops the records that no longer count: settled ones, and concurrency holds past their deadline.
func (b *Bucket) dropClosed(now int64) {
	if b.holds == nil {
		return
	}
	kept := b.holds.recs[:0]
	for _, h := range b.holds.recs {
		if !h.Settled && !(h.alg == Concurrency && now >= h.Expires) {
			kept = append(kept, h)
		}
	}
	clear(b.holds.recs[len(kept):])
	b.holds.recs = kept
	if len(kept) == 0 {
		b.holds = nil
	}
}

// Renew moves the hold's refund deadline to now + min(ttl, window) (0: the window), while it has not passed.
func (b *Bucket) Renew(now int64, r Rule, id string, ttl time.Duration) (Hold, HoldStatus) {
	if b.stale(r) {
		return Hold{}, HoldUnknown
	}
	h := b.pruneFind(now, r, id)
	switch {
	case h == nil:
		return Hold{}, HoldUnknown
	case h.Settled:
		return h.Hold, HoldConflict
	case now >= h.Expires:
		return h.Hold, HoldExpired
	}
	if ttl <= 0 || ttl > r.Window {
		ttl = r.Window
	}
	h.Expires = now + int64(ttl/time.Microsecond)
	b.holds.next = min(b.holds.next, pruneAt(h, r)) // a shorter ttl may bring it nearer
	return h.Hold, HoldOK
}

// Holds returns the key's hold records of r's generation still kept at now.
func (b *Bucket) Holds(now int64, r Rule) []Hold {
	if b.stale(r) {
		return nil
	}
	b.pruneHolds(now, r)
	out := make([]Hold, 0, len(b.records()))
	for _, h := range b.records() {
		out = append(out, h.Hold)
	}
	return out
}

// stale: r is of an older generation than the state (its policy was deleted and re-created since the caller
// resolved it): nothing is decided or pruned, as Decide refuses such a check.
func (b *Bucket) stale(r Rule) bool { return b.alg != "" && b.gen > r.Generation }

// pruneFind prunes the records (pruneHolds) and returns the one of r's generation with the given id, if kept.
func (b *Bucket) pruneFind(now int64, r Rule, id string) *holdRecord {
	b.pruneHolds(now, r)
	if b.holds == nil {
		return nil
	}
	// Latest first: a settle or renewal usually names a recent acquisition. pruneHolds left only r's generation.
	sum, recs := idSum(id), b.holds.recs
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].sum == sum && recs[i].ID == id {
			return &recs[i]
		}
	}
	return nil
}

// idSum is a hold id's FNV-1a hash: a key's records are searched by it before their ids are compared.
func idSum(id string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return h
}

// holdCurrent: the state still holds h's units where h recorded them (same generation, algorithm and, for a
// token bucket, rate).
func (b *Bucket) holdCurrent(h *holdRecord) bool {
	if b.alg != h.alg || b.gen != h.gen {
		return false
	}
	return h.alg != TokenBucket || (b.c == h.c && b.w == h.w)
}

// pruneHolds drops the records that can no longer matter at now: another generation's, and, once its deadline has
// passed, a settled one and any whose units no longer count under r: they have left r's window, or r's floor
// stopped them (a change of window or algorithm). The rule depends on now and r alone, not on which operations ran
// before: a record gone under one rule is gone under every later one (a window may grow back, but the floor rose
// past the record when it changed), so a store that writes nothing for a denied acquire or a peek (Postgres
// answers those from a lock-free read) keeps the same records as one that pruned on every operation. It walks
// them only once the book's horizon (holdBook.next) has come or the generation, window or floor differs from the
// last walk's, and then sets the horizon anew.
func (b *Bucket) pruneHolds(now int64, r Rule) {
	if b.holds == nil {
		return
	}
	window := int64(r.Window / time.Microsecond)
	k := b.holds
	if k.gen == r.Generation && k.window == window && k.floor == r.Floor && now < k.next {
		return // nothing can be gone yet
	}
	kept := k.recs[:0]
	next := int64(math.MaxInt64)
	for i := range k.recs {
		if h := &k.recs[i]; h.gen == r.Generation && now < pruneAt(h, r) {
			next = min(next, pruneAt(h, r))
			kept = append(kept, *h)
		}
	}
	clear(k.recs[len(kept):])
	if len(kept) == 0 {
		b.holds = nil
		return
	}
	k.recs, k.gen, k.window, k.floor, k.next = kept, r.Generation, window, r.Floor, next
}

// overdraft is how many units the key holds over r's limit at now: the units a cost-1 peek sees beyond the limit.
func (b *Bucket) overdraft(now int64, r Rule) int64 {
	if b.alg == "" || !b.current(now, r) {
		return 0
	}
	n, _ := algorithmRowOf(r.Algorithm).units(b, now, r)
	return max(n-r.Limit, 0)
}

// forceRecord records n ≥ 1 units at now under r, past the limit if need be (a settle's excess after its units
// were converted): the state is converted to r first, as an admission would.
func (b *Bucket) forceRecord(now int64, r Rule, n int64) {
	row := algorithmRowOf(r.Algorithm)
	if b.alg != "" && !b.current(now, r) {
		view := b.converted(now, r, row)
		view.holds = b.holds
		*b = view
	}
	row.force(b, now, r, n)
	b.alg, b.gen = r.Algorithm, r.Generation
}

// holdsKept: a record of the state's generation is kept at now under a window of w µs, by pruneHolds's rule
// without the floor (Empty knows no rule): it may report a record pruneHolds would drop, never the other way.
func (b *Bucket) holdsKept(now, w int64) bool {
	for _, h := range b.records() {
		if h.gen == b.gen && !(h.Settled && now >= h.Expires) && !(now >= h.At+w && now >= h.Expires) {
			return true
		}
	}
	return false
}

// HoldOp names a hold operation a store applies.
type HoldOp uint8

const (
	// OpCheck is no hold operation: a plain check of BucketRequest.Cost, decided as Decide decides it. It lets a
	// store apply checks and hold operations in one batch (a lane of the coalescer carries both).
	OpCheck HoldOp = iota
	// OpAcquire decides a hold of BucketRequest.Cost units and records it when admitted.
	OpAcquire
	// OpSettle makes the hold charge BucketRequest.Cost units (0: release).
	OpSettle
	// OpRenew moves the hold's deadline to now + TTL (at most the window).
	OpRenew
	// OpReleaseAnonymous gives back BucketRequest.Cost units of the key's open anonymous holds (the Envoy RLS
	// front end's, which have no id a caller knows: AnonymousHoldID), the earliest acquired first.
	OpReleaseAnonymous
)

// AnonymousHoldID returns the id of an anonymous hold: a NUL byte and 16 random bytes in base64url. No caller's id
// starts with NUL (ValidateHoldID refuses it), so OpReleaseAnonymous never releases a hold a caller named.
func AnonymousHoldID() string { return "\x00" + newHoldID() }

// anonymous: h is an anonymous hold (AnonymousHoldID).
func anonymous(id string) bool { return len(id) > 0 && id[0] == 0 }

// releaseAnonymous gives back up to n units of the open anonymous holds of r's generation under concurrency, the
// earliest acquired first (a hold larger than what is left keeps the rest), and reports how many it gave back.
// Released holds stay as records (settled to 0) until their deadline, like any release.
func (b *Bucket) releaseAnonymous(now int64, r Rule, n int64) int64 {
	var back int64
	recs := b.records()
	for i := range recs {
		h := &recs[i]
		if back >= n {
			break
		}
		if h.gen != r.Generation || !anonymous(h.ID) || !holding(h, now) {
			continue
		}
		give := min(h.Amount, n-back)
		h.Amount -= give
		h.Settled = h.Amount == 0
		if h.Settled {
			b.holds.settledBy(h.Expires)
		}
		back += give
	}
	b.trimSettled()
	return back
}

// BucketHold is one hold operation as a store sees it: the check it amounts to (policy, key, rule, Stored; Cost is
// the amount to acquire or settle to), the operation, the hold's id and, for an acquire or renewal, its TTL (0: the
// window).
type BucketHold struct {
	BucketRequest
	Op  HoldOp
	ID  string
	TTL time.Duration
}

// HoldDecision is a store's answer to a hold operation: for an acquire its decision (a denial records no hold);
// for a settle or a renewal the decision a peek gets after it (for the rate-limit headers); the hold as it is
// after the operation, what became of it, and the units the key holds over its limit (Settle; 0 otherwise).
type HoldDecision struct {
	Decision
	Hold      Hold
	Status    HoldStatus
	Overdraft int64
}

// ApplyHold applies one hold operation (or, for OpCheck, one check) at now: the step every store runs (the memory store
// under the key's lock; the Postgres and Redis steps mirror it). A stale generation is refused as Decide refuses it.
func (b *Bucket) ApplyHold(now int64, q BucketHold) HoldDecision {
	var out HoldDecision
	switch q.Op {
	case OpCheck:
		out.Decision = b.Decide(now, q.Rule, q.Cost)
		return out
	case OpAcquire:
		out.Decision, out.Hold, out.Status = b.Acquire(now, q.Rule, q.ID, q.Cost, q.TTL)
		return out
	case OpSettle:
		out.Hold, out.Status = b.settle(now, q.Rule, q.ID, q.Cost)
	case OpRenew:
		out.Hold, out.Status = b.Renew(now, q.Rule, q.ID, q.TTL)
	case OpReleaseAnonymous:
		// Only concurrency's units are held until released; a window's were spent. Hold.Amount reports the
		// units given back; HoldUnknown says there were none to give.
		if b.stale(q.Rule) || !q.Algorithm.HoldsOnly() || (b.alg != "" && !b.current(now, q.Rule)) {
			out.Status = HoldUnknown
			break
		}
		b.pruneHolds(now, q.Rule)
		out.Hold.Amount = b.releaseAnonymous(now, q.Rule, q.Cost)
		if out.Hold.Amount == 0 {
			out.Status = HoldUnknown
		}
	default:
		return HoldDecision{Decision: Decision{Status: StatusInvalidRule, Limit: q.Limit}, Status: HoldUnknown}
	}
	if b.stale(q.Rule) {
		out.Decision = Decision{Status: StatusPolicyNotFound, Limit: q.Limit}
		return out
	}
	out.Decision = b.Decide(now, q.Rule, 0)
	if q.Op == OpSettle && (out.Status == HoldOK || out.Status == HoldReplayed) && !out.Allowed {
		// Only a key with no room for one more unit can hold more than its limit.
		out.Overdraft = b.overdraft(now, q.Rule)
	}
	return out
}

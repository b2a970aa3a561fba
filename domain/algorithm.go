package domain

import (
	"math"
	"math/bits"
	"time"
)

// The algorithm seam. Every algorithm is one row of algorithmTable: its name, the code the Redis script knows it
// by, whether its worst case is a burst (about 2 × limit in one window), and its pure functions on a Bucket: the
// step (slidinglog.go, tokenbucket.go, fixedwindow.go), the units its state still counts (for a change of
// algorithm), how to hold units given in a number, and when its state is empty. Decide is the only caller of the
// rows; Algorithms and every name list are derived from the table. Every step is pure arithmetic on the state, the
// instant and the rule, in unix microseconds, with the same integer rounding as the SQL functions of migrations/
// and the script of adapters/redis, so every store gives identical decisions (domain/storetest holds them to it).
//
// Adding an algorithm is a row here with its step file, its model in algorithm_test.go, its SQL step and its Lua
// step; TestAlgorithmTableAcrossRuntimes (main_test.go) fails until the OpenAPI enum, the Helm schema, the SQL
// dispatch and the Lua codes name it.

// algorithmRow is one algorithm in the table.
type algorithmRow struct {
	name Algorithm
	// code is the algorithm's number in the Redis script's checks and values (adapters/redis/decide.lua).
	code byte
	// burst: the worst case in one window is about 2 × limit (a burst then a refill, or the end of one window
	// and the start of the next), not the limit.
	burst bool
	// resolution: the algorithm records at instants rounded up to a resolution (Rule.Resolution), which policies
	// must then set (the default is window/60); other algorithms take none.
	resolution bool
	// holdsOnly: units are held by holds alone (concurrency): a check of cost > 0 is refused, since nothing would
	// release it, and the state is the hold records.
	holdsOnly bool
	// step decides one check at now under r on b, which is empty or holds this algorithm's state of r's
	// generation; an admission (cost > 0) records.
	step func(b *Bucket, now int64, r Rule, cost int64) Decision
	// units reports how many units b (this algorithm's state) still counts at now under r and the instant they
	// were recorded at, for a change of algorithm or of a token bucket's rate. It changes nothing.
	units func(b *Bucket, now int64, r Rule) (n, at int64)
	// hold makes the empty b hold n ≥ 1 units recorded at instant at (≤ now), under r, at now.
	hold func(b *Bucket, now int64, r Rule, n, at int64)
	// empty reports whether nothing in b counts at now under a window of w µs (the key may be dropped).
	empty func(b *Bucket, now, w int64) bool
	// adjust changes the units of hold h, recorded by this algorithm in b (current), by delta at now (hold.go):
	// delta < 0 gives units back as if h had been smaller from the start, delta > 0 records more at h's instant,
	// past the limit if need be.
	adjust func(b *Bucket, now int64, r Rule, h *holdRecord, delta int64)
	// force records n ≥ 1 units at now under r on b (empty, or holding this algorithm's current state), past the
	// limit if need be.
	force func(b *Bucket, now int64, r Rule, n int64)
}

var algorithmTable = [...]algorithmRow{
	{name: SlidingLog, code: 1, step: stepSlidingLog, units: logUnits, hold: holdSlidingLog, empty: logEmpty,
		adjust: adjustLog, force: forceLog},
	{name: SlidingWindow, code: 2, resolution: true, step: stepSlidingWindow, units: logUnits, hold: holdSlidingWindow, empty: logEmpty,
		adjust: adjustLog, force: forceLog},
	{name: TokenBucket, code: 3, burst: true, step: stepTokenBucket, units: tokenBucketUnits, hold: holdTokenBucket, empty: tokenBucketEmpty,
		adjust: adjustTokenBucket, force: forceTokenBucket},
	{name: FixedWindow, code: 4, burst: true, step: stepFixedWindow, units: fixedWindowUnits, hold: holdFixedWindow, empty: fixedWindowEmpty,
		adjust: adjustFixedWindow, force: forceFixedWindow},
	{name: Concurrency, code: 5, holdsOnly: true, step: stepConcurrency, units: concurrencyUnits, hold: holdConcurrency, empty: concurrencyEmpty,
		adjust: adjustConcurrency, force: forceConcurrency},
}

// Algorithms lists every algorithm, in the table's order (the order documentation and messages name them).
var Algorithms = func() []Algorithm {
	as := make([]Algorithm, len(algorithmTable))
	for i, row := range algorithmTable {
		as[i] = row.name
	}
	return as
}()

// WindowAlgorithms lists the algorithms that count units in a window (every one but concurrency): those a check
// of cost > 0 is decided by.
var WindowAlgorithms = func() []Algorithm {
	var as []Algorithm
	for _, row := range algorithmTable {
		if !row.holdsOnly {
			as = append(as, row.name)
		}
	}
	return as
}()

// HoldsOnly reports whether a's units are held by holds alone (concurrency): a check of cost > 0 under it is
// refused.
func (a Algorithm) HoldsOnly() bool {
	row := algorithmRowOf(a)
	return row != nil && row.holdsOnly
}

func algorithmRowOf(a Algorithm) *algorithmRow {
	for i := range algorithmTable {
		if algorithmTable[i].name == a {
			return &algorithmTable[i]
		}
	}
	return nil
}

// Code is a's number in the Redis script (0 for an algorithm outside the table).
func (a Algorithm) Code() byte {
	if row := algorithmRowOf(a); row != nil {
		return row.code
	}
	return 0
}

// Bucket is the state of one (policy, key). The zero value is empty. A Bucket is not safe for concurrent use:
// stores serialise access per key.
type Bucket struct {
	alg Algorithm // the algorithm that wrote the state ("" = empty)
	gen int64     // the policy generation that wrote it
	log windowLog // sliding_log, sliding_window
	// token_bucket: the theoretical arrival time tat = a + f/c µs, 0 ≤ f < c, where c and w (µs) are the limit
	// and window that wrote it.
	// fixed_window: a = the instant of the newest admission, f = units admitted in its window, w (µs) the window
	// that wrote them: they stop counting when that window ends, under any later rule.
	a, f, c, w int64
	// marked: a Mark is outstanding (an all-or-nothing batch may roll back); replaced is then the log a
	// conversion replaced since the Mark, with its entries as the checks before the conversion left them (see
	// Rollback).
	marked   bool
	replaced *windowLog
	// holds are the key's hold records (hold.go), nil when it has none (a pointer: a key without holds pays 8
	// bytes for them).
	holds *holdBook
}

// Decide applies one check at now (unix µs) under rule r and returns the decision; an admission records cost
// (a peek, cost 0, and a denial record nothing and change nothing). r must satisfy Policy.Validate and cost be
// in [0, r.Limit]; an algorithm outside the table is decided as StatusInvalidRule, never by a default.
//
// State written under an older generation of the policy does not count; a check of an older generation than the
// state's is refused (StatusPolicyNotFound). State written by another algorithm, a token bucket written at
// another rate (limit or window), or a fixed window written under another window, is converted: the units it
// still counts (a token bucket's under the limit and window that wrote it, never capped by the new limit; a fixed
// window's until the window that admitted them ends) are held under r, as recorded at their newest instant (a
// token bucket's, and a fixed window's, at now), so no change of policy loses a unit that still counts. The conversion is made on a copy and kept only when the check records: a
// denial or a peek leaves the state as it was, so every store decides alike whatever sequence of changes and
// checks it sees.
func (b *Bucket) Decide(now int64, r Rule, cost int64) Decision {
	return b.decide(now, r, cost, false)
}

// decide is Decide; acquiring says an Acquire asks, which alone may take units of a holdsOnly algorithm.
func (b *Bucket) decide(now int64, r Rule, cost int64, acquiring bool) Decision {
	row := algorithmRowOf(r.Algorithm)
	if row == nil || (row.holdsOnly && cost > 0 && !acquiring) {
		return Decision{Status: StatusInvalidRule, Limit: r.Limit}
	}
	if b.alg != "" && b.gen > r.Generation {
		// Generations only grow: this check resolved a policy that has since been deleted and re-created (it
		// raced the DELETE and PUT). It is refused and changes nothing, so a deleted generation never resets or
		// drops a newer one's state (shared/design.md, "Policy changes"); the Postgres store refuses a stored
		// check alike, and Redis's revision fence never lets one reach its state.
		return Decision{Status: StatusPolicyNotFound, Limit: r.Limit}
	}
	if b.alg == "" || b.current(now, r) {
		a, f := b.a, b.f
		d := row.step(b, now, r, cost)
		if b.holds != nil && d.Allowed && cost > 0 && r.Algorithm == TokenBucket {
			b.noteLag(now, a, f) // hold.go: what a refund can still give back
		}
		if b.alg == "" && cost > 0 && d.Allowed {
			b.alg, b.gen = r.Algorithm, r.Generation
		}
		return d
	}
	view := b.converted(now, r, row)
	d := row.step(&view, now, r, cost)
	if cost > 0 && d.Allowed {
		view.alg, view.gen = r.Algorithm, r.Generation
		if view.marked = b.marked; b.marked {
			view.replaced = b.replaced
			if view.replaced == nil {
				old := b.log
				view.replaced = &old
			}
		}
		view.holds = b.holds // a conversion replaces the state, never the hold records
		*b = view
	}
	return d
}

// current reports whether the (non-empty) state was written under r's generation and algorithm, for a token
// bucket at r's rate and for a fixed window under r's window, or under r's calendar period (a count whose
// period has ended, or the count of the period holding now: r's step applies to it as it is).
func (b *Bucket) current(now int64, r Rule) bool {
	if b.gen != r.Generation || b.alg != r.Algorithm {
		return false
	}
	switch b.alg {
	case TokenBucket:
		return b.c == r.Limit && b.w == int64(r.Window/time.Microsecond)
	case FixedWindow:
		if r.Period != nil {
			return b.w == 0 && (b.c <= now || b.c == periodEnd(r, now))
		}
		return b.w == int64(r.Window/time.Microsecond)
	case SlidingLog, SlidingWindow: // a log holds its units' instants: any window steps it
	case Concurrency: // its records hold their own deadlines
	}
	return true
}

// converted returns a new Bucket holding, under r, the units b still counts at now (none for another
// generation). b is not changed.
func (b *Bucket) converted(now int64, r Rule, row *algorithmRow) Bucket {
	var v Bucket
	if b.gen != r.Generation {
		return v
	}
	old := algorithmRowOf(b.alg)
	if old == nil {
		return v // unreachable: b.alg was set from a rule Decide accepted
	}
	n, at := old.units(b, now, r)
	if n <= 0 {
		return v
	}
	row.hold(&v, now, r, min(n, MaxLimit), at)
	v.alg, v.gen = r.Algorithm, r.Generation
	return v
}

// Empty reports whether nothing in the state can count at now any more (the key may be dropped). window is the
// window the state was last decided with.
func (b *Bucket) Empty(now int64, window time.Duration) bool {
	row := algorithmRowOf(b.alg)
	if row != nil && b.holdsKept(now, int64(window/time.Microsecond)) {
		return false // a hold record still matters (hold.go)
	}
	return row == nil || row.empty(b, now, int64(window/time.Microsecond))
}

// Len reports how many entries the state holds (the log's, one for a token bucket or fixed window, none for
// concurrency) plus its hold records, for memory accounting: a store may drop a key whose Len is 0.
func (b *Bucket) Len() int {
	n := len(b.records())
	switch b.alg {
	case SlidingLog, SlidingWindow:
		n += b.log.n
	case TokenBucket, FixedWindow:
		n++
	case "", Concurrency:
	}
	return n
}

// Mark is a point to roll a Bucket back to, for all-or-nothing multi-checks.
type Mark struct {
	alg        Algorithm
	gen        int64
	a, f, c, w int64
	log        windowLog // the log as it was: restored whole if Decide replaced it (a conversion)
	lm         logMark
	// lags are the hold records' refund bounds (mq, mr), which a token bucket's admission lowers (noteLag): a
	// rolled-back batch gives them back too (a batch adds and drops no record). Nil for a key without holds.
	lags [][2]int64
}

// Mark returns the state's current point, for Rollback; Release ends it when the batch commits instead.
func (b *Bucket) Mark() Mark {
	b.marked, b.replaced = true, nil
	m := Mark{alg: b.alg, gen: b.gen, a: b.a, f: b.f, c: b.c, w: b.w, log: b.log, lm: b.log.mark()}
	if recs := b.records(); len(recs) > 0 {
		m.lags = make([][2]int64, len(recs))
		for i, h := range recs {
			m.lags[i] = [2]int64{h.mq, h.mr}
		}
	}
	return m
}

// Release ends the Mark taken last without rolling back (the batch committed), so a later conversion keeps no
// copy of the log it replaces.
func (b *Bucket) Release() { b.marked, b.replaced = false, nil }

// Rollback undoes what Decide recorded since m was taken, and ends the Mark.
//
// The log is rolled back where the checks since m left it: entries appended after m's newest are dropped and that
// entry's count restored, while entries that expired since stay expired (they no longer count either way). That
// is the log in use when its ring is m's, or when it grew into a new ring (which holds every entry still live);
// when a conversion replaced the log, it is the log the first conversion since m replaced. Only when the log
// never held m's entries in between is m's own copy of the log taken: restoring m's copy after a check had
// expired entries and appended over their slots would bring back overwritten entries.
func (b *Bucket) Rollback(m Mark) {
	switch {
	case sameRing(b.log.ring, m.log.ring):
	case b.replaced != nil && sameRing(b.replaced.ring, m.log.ring):
		b.log = *b.replaced
	case b.replaced == nil && b.alg == m.alg && b.gen == m.gen:
		// The log grew into a new ring: it holds the entries, as the checks since m left them.
	default:
		b.log = m.log
	}
	b.log.rollback(m.lm)
	b.alg, b.gen, b.a, b.f, b.c, b.w = m.alg, m.gen, m.a, m.f, m.c, m.w
	if recs := b.records(); len(recs) == len(m.lags) {
		for i := range recs {
			recs[i].mq, recs[i].mr = m.lags[i][0], m.lags[i][1]
		}
	}
	b.marked, b.replaced = false, nil
}

func sameRing(x, y []entry) bool {
	if len(x) == 0 || len(y) == 0 {
		return len(x) == len(y)
	}
	return &x[0] == &y[0]
}

// floorTo rounds t down to a multiple of w (t ≥ 0, w ≥ 1).
func floorTo(t, w int64) int64 { return t - t%w }

// cutoff is the expiry rule at now under r: a unit recorded at or before it does not count (its age reached
// the window, or a change of window or algorithm had stopped it: the floor).
func cutoff(now int64, r Rule) int64 { return max(now-int64(r.Window/time.Microsecond), r.Floor) }

// mulDivRem returns (x × y) / z and its remainder, for x, y ≥ 0 and z ≥ 1, without overflow in the product; the
// quotient saturates at MaxInt64 (never reached by the rules' bounds: x ≤ 2^53, y ≤ 31 d in µs, z ≥ 1).
func mulDivRem(x, y, z int64) (q, r int64) {
	hi, lo := bits.Mul64(uint64(x), uint64(y))
	if hi >= uint64(z) {
		return math.MaxInt64, 0
	}
	uq, ur := bits.Div64(hi, lo, uint64(z))
	if uq > math.MaxInt64 {
		return math.MaxInt64, int64(ur)
	}
	return int64(uq), int64(ur)
}

// mulDivCeil returns ceil(x × y / z).
func mulDivCeil(x, y, z int64) int64 {
	q, r := mulDivRem(x, y, z)
	if r > 0 && q < math.MaxInt64 {
		q++
	}
	return q
}

// NextFloor is the floor of a policy whose window or algorithm changes from old's at instant now (unix µs): the
// newest instant whose units had already stopped counting under old, so that they never count again (the expiry
// rule of shared/design.md): units older than old's window. It is the same for every algorithm because a key's
// state may be of any algorithm when the policy changes (a state converts only when a check records): units a
// fixed window admitted stop at the end of the window that admitted them whatever the floor (Bucket.w), and a
// token bucket holds no units of a window, so its own step ignores the floor. (A fixed window's floor of "the
// start of its current window" dropped units a log still counted under it: fuzzing admitted 12 in a day under a
// largest limit of 8.)
func NextFloor(old Policy, now int64) int64 {
	return max(old.Floor, now-int64(old.Window/time.Microsecond))
}

// Status says whether a store could decide a check at all. A check that is not StatusOK records nothing, fails
// no other check of its batch, and makes an atomic batch record nothing.
type Status uint8

const (
	StatusOK Status = iota
	// StatusPolicyNotFound: the policy the check was resolved with no longer exists: a store that holds the
	// policy itself (BucketRequest.Stored) has no such policy (deleted through another replica), or the key's
	// state is of a newer generation (the policy was deleted and re-created after the check resolved it).
	StatusPolicyNotFound
	// StatusCostOverLimit: the cost exceeds the store's limit of the policy (lowered through another replica).
	StatusCostOverLimit
	// StatusInvalidRule: the store cannot decide the rule: it is out of the store's bounds, or its algorithm is not
	// in the store's table (a replica or a database older than the policy), or the stored state's is not. The
	// Limiter treats it as a store failure (the policy's failure_mode), never as a decision or a default.
	StatusInvalidRule
)

// Decision is the answer to one check. A denial is a Decision with Allowed false, never an error.
type Decision struct {
	Status  Status
	Allowed bool
	Limit   int64
	// Remaining is what is left after this decision: whole units that would still be admitted now.
	Remaining int64
	// ResetAfter is the time until the state is empty again (every unit has left the window, the bucket is full,
	// or the fixed window or calendar period ends).
	ResetAfter time.Duration
	// Period is the length of the calendar period that decided (its end minus its start: a civil day is 23 to
	// 25 hours), for RateLimit-Policy's w; 0 under a window.
	Period time.Duration
	// RetryAfter is 0 when admitted; otherwise the time until this cost could be admitted.
	RetryAfter time.Duration
}

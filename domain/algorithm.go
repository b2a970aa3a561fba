package domain

import (
	"math"
	"math/bits"
	"time"
)

// The algorithm seam. Bucket is one (policy, key)'s state under any algorithm, and Decide is the only place that
// knows which algorithm runs: it dispatches to the algorithm's step (slidinglog.go for sliding_log and
// sliding_window, tokenbucket.go, fixedwindow.go). Every step is pure arithmetic on the state, the instant and
// the rule, in unix microseconds, with the same integer rounding as the SQL functions of migrations/ and the
// scripts of adapters/redis, so every store gives identical decisions. Adding an algorithm is a file with its
// step, a case below, and its state's conversion in convert.

// Bucket is the state of one (policy, key). The zero value is empty. A Bucket is not safe for concurrent use:
// stores serialise access per key.
type Bucket struct {
	alg Algorithm // the algorithm that wrote the state ("" = empty)
	gen int64     // the policy generation that wrote it
	log windowLog // sliding_log, sliding_window
	// token_bucket: the theoretical arrival time tat = a + f/c µs, 0 ≤ f < c, where c is the limit that wrote it.
	// fixed_window: a = the instant of the newest admission, f = units admitted in its window.
	a, f, c int64
}

// Decide applies one check at now (unix µs) under rule r and returns the decision; an admission records cost
// (a peek, cost 0, and a denial record nothing). r must satisfy Policy.Validate and cost be in [0, r.Limit].
//
// State written under another generation of the policy does not count. State written by another algorithm (the
// policy's algorithm changed) is converted first, conservatively: its units still counting are taken as recorded
// at its newest instant, so a change of algorithm never admits more than either algorithm would.
func (b *Bucket) Decide(now int64, r Rule, cost int64) Decision {
	if b.alg != "" && (b.gen != r.Generation || b.alg != r.Algorithm) {
		b.convert(now, r)
	}
	var d Decision
	window := int64(r.Window / time.Microsecond)
	switch r.Algorithm {
	case SlidingLog:
		d = b.log.decide(now, now, cost, r.Limit, window, r.Floor)
	case SlidingWindow:
		d = b.log.decide(now, ceilTo(now, int64(r.Resolution/time.Microsecond)), cost, r.Limit, window, r.Floor)
	case TokenBucket:
		d = b.tokenBucket(now, cost, r.Limit, window)
	case FixedWindow:
		d = b.fixedWindow(now, cost, r.Limit, window, r.Floor)
	}
	if b.alg == "" && cost > 0 && d.Allowed {
		b.alg, b.gen = r.Algorithm, r.Generation
	}
	return d
}

// Empty reports whether nothing in the state can count at now any more (the key may be dropped). window is the
// window the state was last decided with.
func (b *Bucket) Empty(now int64, window time.Duration) bool {
	w := int64(window / time.Microsecond)
	switch b.alg {
	case SlidingLog, SlidingWindow:
		b.log.expire(now - w)
		return b.log.n == 0
	case TokenBucket:
		return b.a < now || (b.a == now && b.f == 0)
	case FixedWindow:
		return b.a < floorTo(now, w)
	}
	return true
}

// Len reports how many entries the state holds (the log's; one for the other algorithms), for memory accounting.
func (b *Bucket) Len() int {
	switch b.alg {
	case SlidingLog, SlidingWindow:
		return b.log.n
	case "":
		return 0
	}
	return 1
}

// convert turns state written under another generation (dropped) or another algorithm into r's algorithm.
func (b *Bucket) convert(now int64, r Rule) {
	var units, at int64
	window := int64(r.Window / time.Microsecond)
	if b.gen == r.Generation {
		switch b.alg {
		case SlidingLog, SlidingWindow:
			units, at = b.log.units(max(now-window, r.Floor))
		case TokenBucket:
			// Units outstanding under r's emission interval: ceil((tat - now) × limit / window).
			if b.a > now || (b.a == now && b.f > 0) {
				d := b.a - now
				if b.f > 0 {
					d++
				}
				units = min(mulDivCeil(d, r.Limit, window), r.Limit)
				at = now
			}
		case FixedWindow:
			if b.a > max(now-window, r.Floor) {
				units, at = b.f, b.a
			}
		}
	}
	b.log.reset()
	b.alg, b.gen, b.a, b.f, b.c = "", 0, 0, 0, 0
	if units <= 0 {
		return
	}
	units = min(units, MaxLimit)
	b.alg, b.gen = r.Algorithm, r.Generation
	switch r.Algorithm {
	case SlidingLog:
		b.log.record(at, units)
	case SlidingWindow:
		b.log.record(ceilTo(at, int64(r.Resolution/time.Microsecond)), units)
	case TokenBucket:
		// As if the units were emitted back to back from now: tat = now + units × window / limit.
		q, rem := mulDivRem(units, window, r.Limit)
		b.a, b.f, b.c = now+q, rem, r.Limit
	case FixedWindow:
		b.a, b.f = at, units
	}
}

// Mark is a point to roll a Bucket back to, for all-or-nothing multi-checks.
type Mark struct {
	alg     Algorithm
	gen     int64
	a, f, c int64
	log     windowLog // the log as it was: restored whole if Decide replaced it (a conversion)
	lm      logMark
}

// Mark returns the state's current point, for Rollback.
func (b *Bucket) Mark() Mark {
	return Mark{alg: b.alg, gen: b.gen, a: b.a, f: b.f, c: b.c, log: b.log, lm: b.log.mark()}
}

// Rollback undoes what Decide recorded since m was taken.
func (b *Bucket) Rollback(m Mark) {
	if !sameRing(b.log.ring, m.log.ring) {
		// The log moved to another ring (it grew, or a conversion replaced it): the old ring's entries were left
		// as they were, except for units merged into its newest entry, which rollback restores.
		b.log = m.log
	}
	b.log.rollback(m.lm)
	b.alg, b.gen, b.a, b.f, b.c = m.alg, m.gen, m.a, m.f, m.c
}

func sameRing(x, y []entry) bool {
	if len(x) == 0 || len(y) == 0 {
		return len(x) == len(y)
	}
	return &x[0] == &y[0]
}

// floorTo rounds t down to a multiple of w (t ≥ 0, w ≥ 1).
func floorTo(t, w int64) int64 { return t - t%w }

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
// rule of shared/design.md). Units of the log algorithms stop when their age reaches the window; fixed_window's
// when their window ends; token_bucket holds no units of a window, so its own step ignores the floor.
func NextFloor(old Policy, now int64) int64 {
	w := int64(old.Window / time.Microsecond)
	f := now - w
	if old.Algorithm == FixedWindow {
		f = floorTo(now, w) - 1
	}
	return max(old.Floor, f)
}

// Status says whether a store could decide a check at all. It is StatusOK unless the store holds the policy
// itself (BucketRequest.Stored) and its copy refuses the check; a refused check records nothing, fails no other
// check of its batch, and makes an atomic batch record nothing.
type Status uint8

const (
	StatusOK Status = iota
	// StatusPolicyNotFound: the store has no such policy (deleted through another replica).
	StatusPolicyNotFound
	// StatusCostOverLimit: the cost exceeds the store's limit of the policy (lowered through another replica).
	StatusCostOverLimit
	// StatusInvalidRule: the rule is out of bounds, or its algorithm, or the algorithm that wrote the key's state,
	// is not one the store knows (never decided as a default algorithm).
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
	// or the fixed window ends).
	ResetAfter time.Duration
	// RetryAfter is 0 when admitted; otherwise the time until this cost could be admitted.
	RetryAfter time.Duration
}

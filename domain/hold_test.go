package domain

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// holdModel is the brute-force reference of holds, on top of model (algorithm_test.go): every hold keeps the
// index of its own run of units (the log algorithms and fixed_window), and a token bucket's hold its exact
// rational bound on what a refund can still give back.
type holdModel struct {
	model
	holds map[string]*modelHold
	order []string // acquisition order, for pruning alike
}

type modelHold struct {
	Hold
	reserved int64
	run      int      // index in units (log algorithms, fixed_window)
	m        *big.Rat // token_bucket: the refund bound
}

// kept is pruneHolds's rule.
func (hm *holdModel) prune(now int64, r Rule) {
	w := us(r.Window)
	var order []string
	for _, id := range hm.order {
		h := hm.holds[id]
		if now >= h.Expires && (h.Settled || now >= h.At+w || h.At <= r.Floor) {
			delete(hm.holds, id)
			continue
		}
		order = append(order, id)
	}
	hm.order = order
}

// heldAt is concurrency's count at instant t, summed afresh: the open holds whose deadline is after t.
func (hm *holdModel) heldAt(t int64) int64 {
	var n int64
	for _, h := range hm.holds {
		if !h.Settled && t < h.Expires {
			n += h.Amount
		}
	}
	return n
}

// decideConcurrency is concurrency's decision by brute force: the held count at now, and for retry_after every
// later deadline tried in turn with the count summed again at it.
func (hm *holdModel) decideConcurrency(now int64, r Rule, cost int64, acquiring bool) Decision {
	if cost > 0 && !acquiring {
		return Decision{Status: StatusInvalidRule, Limit: r.Limit}
	}
	need := max(cost, 1)
	held := hm.heldAt(now)
	d := Decision{Limit: r.Limit, Allowed: held+need <= r.Limit}
	var last int64
	for _, h := range hm.holds {
		if !h.Settled && now < h.Expires && h.Expires > last {
			last = h.Expires
		}
	}
	if last > now {
		d.ResetAfter = time.Duration(last-now) * time.Microsecond
	}
	if d.Allowed {
		d.Remaining = r.Limit - held - need
		return d
	}
	d.Remaining = max(r.Limit-held, 0)
	best := int64(-1)
	for _, h := range hm.holds {
		if !h.Settled && now < h.Expires && hm.heldAt(h.Expires)+need <= r.Limit && (best < 0 || h.Expires < best) {
			best = h.Expires
		}
	}
	if best >= 0 {
		d.RetryAfter = time.Duration(best-now) * time.Microsecond
	}
	return d
}

// decide is model.decide, lowering the token bucket holds' bounds to the lag an admission finds.
func (hm *holdModel) decide(now int64, r Rule, cost int64) Decision {
	if r.Algorithm == Concurrency {
		return hm.decideConcurrency(now, r, cost, false)
	}
	var lag *big.Rat
	if r.Algorithm == TokenBucket {
		lag = new(big.Rat)
		if hm.tat != nil && hm.tat.Cmp(big.NewRat(now, 1)) > 0 {
			lag.Sub(hm.tat, big.NewRat(now, 1))
		}
	}
	d := hm.model.decide(now, r, cost)
	if lag != nil && d.Allowed && cost > 0 {
		for _, h := range hm.holds {
			if !h.Settled && h.m.Cmp(lag) > 0 {
				h.m = new(big.Rat).Set(lag)
			}
		}
	}
	return d
}

func (hm *holdModel) acquire(now int64, r Rule, id string, amount int64, ttl time.Duration) (Decision, Hold, HoldStatus) {
	hm.prune(now, r)
	if h, ok := hm.holds[id]; ok {
		d := hm.decide(now, r, 0)
		if h.reserved != amount {
			return d, h.Hold, HoldConflict
		}
		return d, h.Hold, HoldReplayed
	}
	if len(hm.holds) >= MaxHolds {
		var order []string
		for _, id := range hm.order {
			if h := hm.holds[id]; h.Settled || (r.Algorithm == Concurrency && now >= h.Expires) {
				delete(hm.holds, id)
				continue
			}
			order = append(order, id)
		}
		hm.order = order
	}
	if len(hm.holds) >= MaxHolds {
		return hm.decide(now, r, 0), Hold{}, HoldsFull
	}
	var d Decision
	if r.Algorithm == Concurrency {
		d = hm.decideConcurrency(now, r, amount, true)
		if d.Allowed {
			tt := ttl
			if tt <= 0 || tt > r.Window {
				tt = r.Window
			}
			d.ResetAfter = max(d.ResetAfter, tt.Truncate(time.Microsecond))
		}
	} else {
		d = hm.decide(now, r, amount)
	}
	if !d.Allowed {
		return d, Hold{}, HoldOK
	}
	if ttl <= 0 || ttl > r.Window {
		ttl = r.Window
	}
	at := now
	if r.Algorithm == SlidingWindow {
		res := us(r.Resolution)
		at = (now + res - 1) / res * res
	}
	h := &modelHold{Hold: Hold{ID: id, Amount: amount, At: at, Expires: now + us(ttl)}, reserved: amount, run: len(hm.units) - 1}
	if r.Algorithm == TokenBucket {
		h.m = big.NewRat(1<<62, 1)
	}
	hm.holds[id] = h
	hm.order = append(hm.order, id)
	return d, h.Hold, HoldOK
}

// outstanding is the units the key holds at now (the units row's count): the overdraft is what exceeds the limit.
func (hm *holdModel) outstanding(now int64, r Rule) int64 {
	w := us(r.Window)
	switch r.Algorithm {
	case TokenBucket:
		if hm.tat == nil || hm.tat.Cmp(big.NewRat(now, 1)) <= 0 {
			return 0
		}
		d := ceilRat(new(big.Rat).Sub(hm.tat, big.NewRat(now, 1)))
		return (d*r.Limit + w - 1) / w
	case FixedWindow:
		start := now - now%w
		var n int64
		for _, u := range hm.units {
			if u.at >= start {
				n += u.cost
			}
		}
		return n
	default: // the log algorithms
		return hm.counting(now, w, r.Floor)
	}
}

func (hm *holdModel) settle(now int64, r Rule, id string, actual int64) (Hold, int64, HoldStatus) {
	hm.prune(now, r)
	h, ok := hm.holds[id]
	if !ok {
		return Hold{}, 0, HoldUnknown
	}
	if r.Algorithm == Concurrency {
		switch {
		case h.Settled && actual == 0:
			return h.Hold, max(hm.heldAt(now)-r.Limit, 0), HoldReplayed
		case h.Settled:
			return h.Hold, 0, HoldConflict
		case now >= h.Expires:
			return h.Hold, 0, HoldExpired
		}
		h.Amount, h.Settled = actual, actual == 0
		out := h.Hold
		hm.trimSettled()
		return out, max(hm.heldAt(now)-r.Limit, 0), HoldOK
	}
	if h.Settled {
		if h.Amount == actual {
			return h.Hold, max(hm.outstanding(now, r)-r.Limit, 0), HoldReplayed
		}
		return h.Hold, 0, HoldConflict
	}
	delta := actual - h.Amount
	if delta < 0 && now >= h.Expires {
		return h.Hold, 0, HoldExpired
	}
	switch r.Algorithm {
	case TokenBucket:
		T := big.NewRat(us(r.Window), r.Limit)
		shift := new(big.Rat).Mul(T, big.NewRat(delta, 1))
		if delta < 0 {
			back := new(big.Rat).Neg(shift)
			if back.Cmp(h.m) > 0 {
				back = h.m
			}
			shift = new(big.Rat).Neg(back)
		}
		hm.tat = new(big.Rat).Add(hm.tat, shift)
	default:
		u := &hm.units[h.run]
		u.cost = max(u.cost+delta, 0)
	}
	h.Amount, h.Settled = actual, true
	out := h.Hold
	hm.trimSettled()
	return out, max(hm.outstanding(now, r)-r.Limit, 0), HoldOK
}

func (hm *holdModel) renew(now int64, r Rule, id string, ttl time.Duration) (Hold, HoldStatus) {
	hm.prune(now, r)
	h, ok := hm.holds[id]
	switch {
	case !ok:
		return Hold{}, HoldUnknown
	case h.Settled:
		return h.Hold, HoldConflict
	case now >= h.Expires:
		return h.Hold, HoldExpired
	}
	if ttl <= 0 || ttl > r.Window {
		ttl = r.Window
	}
	h.Expires = now + us(ttl)
	return h.Hold, HoldOK
}

// trimSettled drops the settled holds beyond the MaxSettledKept last in acquisition order.
func (hm *holdModel) trimSettled() {
	var settled []string
	for _, id := range hm.order {
		if hm.holds[id].Settled {
			settled = append(settled, id)
		}
	}
	for len(settled) > MaxSettledKept {
		delete(hm.holds, settled[0])
		settled = settled[1:]
	}
	var order []string
	for _, id := range hm.order {
		if _, ok := hm.holds[id]; ok {
			order = append(order, id)
		}
	}
	hm.order = order
}

// releaseAnonymous gives back up to n units of the open anonymous holds, the earliest acquired first.
func (hm *holdModel) releaseAnonymous(now int64, r Rule, n int64) (int64, HoldStatus) {
	if r.Algorithm != Concurrency {
		return 0, HoldUnknown
	}
	hm.prune(now, r)
	var back int64
	for _, id := range hm.order {
		h := hm.holds[id]
		if back == n || id[0] != 0 || h.Settled || now >= h.Expires {
			continue
		}
		give := min(h.Amount, n-back)
		h.Amount -= give
		h.Settled = h.Amount == 0
		back += give
	}
	hm.trimSettled()
	if back == 0 {
		return 0, HoldUnknown
	}
	return back, HoldOK
}

// runHolds drives a Bucket and the model with the same random sequence of checks, acquires (ids reused, so
// retries and conflicts happen), settles (less, more, the same, 0), renewals and time steps, and requires the
// same answer to every one, every field.
func runHolds(t *testing.T, alg Algorithm, limit int64, window time.Duration, steps int, pick func(n int) int) {
	t.Helper()
	r := ruleFor(alg, limit, window, 0)
	if alg == SlidingWindow {
		r.Resolution = window / 10
	}
	var b Bucket
	hm := &holdModel{holds: map[string]*modelHold{}}
	now := int64(1_700_000_000_000_000)
	w := us(window)
	for step := 0; step < steps; step++ {
		switch pick(4) {
		case 0:
		case 1:
			now += int64(pick(1000))
		default:
			now += w * int64(pick(30)) / 100
		}
		id := "h" + strconv.Itoa(pick(6)+pick(2)*pick(20)) // sometimes more ids than MaxSettledKept
		if alg == Concurrency && pick(3) == 0 {
			id = "\x00" + id // anonymous (AnonymousHoldID's shape)
		}
		where := fmt.Sprintf("%s step %d now %d id %s", alg, step, now, id)
		switch op := pick(11); {
		case op == 10:
			n := int64(1 + pick(3))
			got := b.ApplyHold(now, BucketHold{BucketRequest: BucketRequest{Rule: r, Cost: n}, Op: OpReleaseAnonymous})
			back, st := hm.releaseAnonymous(now, r, n)
			if got.Hold.Amount != back || got.Status != st {
				t.Fatalf("%s release %d anonymous:\n got %d %d\nwant %d %d", where, n, got.Hold.Amount, got.Status, back, st)
			}
		case op < 3:
			cost := int64(pick(int(limit) + 1))
			got, want := b.Decide(now, r, cost), hm.decide(now, r, cost)
			if got != want {
				t.Fatalf("%s check %d:\n got %+v\nwant %+v", where, cost, got, want)
			}
		case op < 6:
			amount, ttl := int64(1+pick(int(limit))), window*time.Duration(pick(12))/10
			gd, gh, gs := b.Acquire(now, r, id, amount, ttl)
			wd, wh, ws := hm.acquire(now, r, id, amount, ttl)
			if gd != wd || gh != wh || gs != ws {
				t.Fatalf("%s acquire %d ttl %s:\n got %+v %+v %d\nwant %+v %+v %d", where, amount, ttl, gd, gh, gs, wd, wh, ws)
			}
		case op < 9:
			actual := int64(pick(int(2*limit) + 1))
			gh, go_, gs := b.Settle(now, r, id, actual)
			wh, wo, ws := hm.settle(now, r, id, actual)
			if gh != wh || go_ != wo || gs != ws {
				t.Fatalf("%s settle %d:\n got %+v overdraft %d status %d\nwant %+v overdraft %d status %d", where, actual, gh, go_, gs, wh, wo, ws)
			}
		default:
			ttl := window * time.Duration(pick(12)) / 10
			gh, gs := b.Renew(now, r, id, ttl)
			wh, ws := hm.renew(now, r, id, ttl)
			if gh != wh || gs != ws {
				t.Fatalf("%s renew %s:\n got %+v %d\nwant %+v %d", where, ttl, gh, gs, wh, ws)
			}
		}
	}
}

// TestHoldsMatchTheModel: holds on every algorithm against the brute-force model, on many seeded sequences.
func TestHoldsMatchTheModel(t *testing.T) {
	for _, alg := range Algorithms {
		for seed := uint64(0); seed < 200; seed++ {
			rng := rand.New(rand.NewPCG(seed, uint64(len(alg))))
			runHolds(t, alg, int64(1+rng.IntN(12)), time.Duration(1+rng.IntN(60))*time.Second, 300, rng.IntN)
		}
	}
}

// A refund gives back what the hold did not use, as if it had been smaller from the start: the next check gets
// the units at once, on every algorithm; a settle for more is recorded past the limit and reported.
func TestSettleGivesBackAndOverdraws(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		r := ruleFor(alg, 10, time.Hour, 0)
		if alg == SlidingWindow {
			r.Resolution = time.Minute
		}
		var b Bucket
		now := int64(1_700_000_000_000_000)
		if _, _, st := b.Acquire(now, r, "llm-1", 8, 0); st != HoldOK {
			t.Fatalf("%s: acquire: %d", alg, st)
		}
		if d := b.Decide(now+1, r, 3); d.Allowed {
			t.Fatalf("%s: 3 more admitted with 8 of 10 held", alg)
		}
		if _, od, st := b.Settle(now+2, r, "llm-1", 5); st != HoldOK || od != 0 {
			t.Fatalf("%s: settle 5: %d overdraft %d", alg, st, od)
		}
		if d := b.Decide(now+3, r, 5); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("%s: after giving 3 back, 5 more: %+v", alg, d)
		}
		if _, _, st := b.Acquire(now+4, r, "llm-1", 8, 0); st != HoldReplayed {
			t.Fatalf("%s: a retried acquire after the settle: %d", alg, st)
		}
		if _, _, st := b.Acquire(now+4, r, "llm-2", 0+1, 0); st != HoldOK {
			// Denied (10 of 10 held): a denial records no hold.
			if st != HoldOK {
				t.Fatalf("%s: %d", alg, st)
			}
		}
		var c Bucket
		c.Acquire(now, r, "big", 6, 0)
		c.Decide(now, r, 4)
		_, od, st := c.Settle(now+1, r, "big", 9)
		if st != HoldOK || od != 3 {
			t.Fatalf("%s: settle 9 of a 6 hold with 4 more held: status %d overdraft %d, want 3", alg, st, od)
		}
		if d := c.Decide(now+2, r, 1); d.Allowed {
			t.Fatalf("%s: admitted while 13 of 10 are held", alg)
		}
	}
}

// A hold's records are bounded per key: past MaxHolds an acquire records nothing and says so.
func TestHoldsAreBoundedPerKey(t *testing.T) {
	r := ruleFor(SlidingLog, 1<<20, time.Hour, 0)
	var b Bucket
	now := int64(1_700_000_000_000_000)
	for i := range MaxHolds {
		if _, _, st := b.Acquire(now+int64(i), r, "h"+strconv.Itoa(i), 1, 0); st != HoldOK {
			t.Fatalf("hold %d: %d", i, st)
		}
	}
	d, _, st := b.Acquire(now+MaxHolds, r, "one-more", 1, 0)
	if st != HoldsFull || b.log.used() != MaxHolds {
		t.Fatalf("past the bound: status %d, %d units recorded (%+v)", st, b.log.used(), d)
	}
	// Settled holds leave at their deadline, and make room.
	b.Settle(now+MaxHolds, r, "h0", 1)
	if _, _, st := b.Acquire(now+int64(time.Hour/time.Microsecond), r, "later", 1, 0); st != HoldOK {
		t.Fatalf("after the records left: %d", st)
	}
}

// A refund after the deadline gives nothing back (a conflict that says so); an excess after it is still
// recorded; a renewal after it is refused; a hold of a deleted generation is unknown.
func TestHoldDeadlines(t *testing.T) {
	r := ruleFor(SlidingLog, 10, time.Hour, 0)
	var b Bucket
	now := int64(1_700_000_000_000_000)
	b.Acquire(now, r, "x", 6, time.Minute)
	if _, st := b.Renew(now+int64(30*time.Second/time.Microsecond), r, "x", 2*time.Minute); st != HoldOK {
		t.Fatalf("renew in time: %d", st)
	}
	late := now + int64(3*time.Minute/time.Microsecond)
	if _, st := b.Renew(late, r, "x", time.Minute); st != HoldExpired {
		t.Fatalf("renew after the deadline: %d", st)
	}
	if _, _, st := b.Settle(late, r, "x", 2); st != HoldExpired {
		t.Fatalf("refund after the deadline: %d", st)
	}
	if _, od, st := b.Settle(late, r, "x", 12); st != HoldOK || od != 2 || b.log.used() != 12 {
		t.Fatalf("excess after the deadline: %d overdraft %d used %d", st, od, b.log.used())
	}
	r2 := r
	r2.Generation = 1
	if _, _, st := b.Settle(late, r2, "x", 12); st != HoldUnknown {
		t.Fatalf("another generation's hold: %d", st)
	}
}

// A change of algorithm converts the hold's units: a refund then gives nothing back (HoldConverted), an excess
// is recorded under the rule in force.
func TestHoldAcrossAnAlgorithmChange(t *testing.T) {
	sl := ruleFor(SlidingLog, 10, time.Hour, 0)
	tb := ruleFor(TokenBucket, 10, time.Hour, 0)
	var b Bucket
	now := int64(1_700_000_000_000_000)
	b.Acquire(now, sl, "x", 6, 0)
	b.Decide(now+1, tb, 1) // converts: 7 units under the token bucket
	if _, _, st := b.Settle(now+2, tb, "x", 2); st != HoldConverted {
		t.Fatalf("refund after a conversion: %d", st)
	}
	if _, od, st := b.Settle(now+3, tb, "x", 9); st != HoldOK || od != 0 {
		t.Fatalf("excess after a conversion: %d overdraft %d", st, od)
	}
	if d := b.Decide(now+4, tb, 1); d.Allowed {
		t.Fatalf("10 units held (7 + the excess 3), yet admitted: %+v", d)
	}
}

// A hold operation resolved with an older generation than the key's state (its policy was deleted and re-created
// meanwhile) is refused and drops nothing of the newer generation's holds.
func TestStaleGenerationHoldsChangeNothing(t *testing.T) {
	newer := ruleFor(SlidingLog, 10, time.Hour, 0)
	newer.Generation = 5
	older := newer
	older.Generation = 4
	var b Bucket
	now := int64(1_700_000_000_000_000)
	b.Acquire(now, newer, "x", 3, 0)
	if d, _, st := b.Acquire(now+1, older, "y", 1, 0); d.Status != StatusPolicyNotFound || st != HoldUnknown {
		t.Fatalf("older acquire: %+v %d", d, st)
	}
	if _, _, st := b.Settle(now+2, older, "x", 0); st != HoldUnknown {
		t.Fatalf("older settle: %d", st)
	}
	if hs := b.Holds(now+3, newer); len(hs) != 1 || hs[0].ID != "x" || b.log.used() != 3 {
		t.Fatalf("the newer generation's hold after stale calls: %+v, %d units", hs, b.log.used())
	}
}

// A key keeps its MaxSettledKept last settled records (for retried settles) and drops the older ones; open holds
// are never dropped for it; a retried settle of a dropped one records nothing.
func TestSettledRecordsAreBounded(t *testing.T) {
	for _, alg := range Algorithms {
		r := ruleFor(alg, 1000, time.Hour, 0)
		if alg == SlidingWindow {
			r.Resolution = time.Minute
		}
		var b Bucket
		now := int64(1_700_000_000_000_000)
		b.Acquire(now, r, "open", 1, 0)
		actual := int64(5)
		if alg == Concurrency {
			actual = 0 // a release: a concurrency hold settled to more stays open
		}
		for i := range MaxSettledKept + 4 {
			id := "s" + strconv.Itoa(i)
			if _, _, st := b.Acquire(now+int64(i), r, id, 10, 0); st != HoldOK {
				t.Fatalf("%s: acquire %s: %d", alg, id, st)
			}
			b.Settle(now+int64(i), r, id, actual)
		}
		later := now + 1000
		before := b.Decide(later, r, 0)
		for i := range MaxSettledKept + 4 {
			id := "s" + strconv.Itoa(i)
			_, _, st := b.Settle(later, r, id, actual)
			if want := HoldReplayed; i < 4 && st != HoldUnknown || i >= 4 && st != want {
				t.Fatalf("%s: retried settle of %s: %d", alg, id, st)
			}
		}
		if after := b.Decide(later, r, 0); after != before {
			t.Fatalf("%s: retried settles changed the key: %+v → %+v", alg, before, after)
		}
		if hs := b.Holds(later, r); len(hs) != MaxSettledKept+1 || hs[0].ID != "open" {
			t.Fatalf("%s: %d records kept, first %+v", alg, len(hs), hs[0])
		}
	}
}

// A rolled-back all-or-nothing batch gives back what its token bucket admissions lowered of an open hold's refund
// bound, so the key's records are as if the batch never ran (as on Postgres, where such a batch writes nothing).
// (No decision has been found that the lowered bound would change, since a bound an admission found at an
// earlier instant never moves a tat below now; the state is kept identical all the same.)
func TestRollbackRestoresRefundBounds(t *testing.T) {
	r := ruleFor(TokenBucket, 10, 10*time.Second, 0)
	now := int64(1_700_000_000_000_000)
	var with, without Bucket
	for _, b := range []*Bucket{&with, &without} {
		b.Acquire(now, r, "h", 6, 0)
	}
	m := with.Mark()
	if d := with.Decide(now+1, r, 4); !d.Allowed {
		t.Fatalf("the batch's check: %+v", d)
	}
	if with.records()[0].mq == without.records()[0].mq {
		t.Fatal("the batch's admission did not lower the bound: the test proves nothing")
	}
	with.Rollback(m)
	if g, w := with.records()[0], without.records()[0]; g.mq != w.mq || g.mr != w.mr {
		t.Fatalf("after a rolled-back batch the refund bound is %d+%d, want %d+%d", g.mq, g.mr, w.mq, w.mr)
	}
}

// runPruneTiming drives two Buckets with the same random checks and hold operations under a policy whose limit,
// window and algorithm change on the way (with the floor the policy stores set: NextFloor), and prunes the second
// one's hold records (Holds) at random extra instants; every answer must be the same. A store that writes nothing
// for a denied acquire or a peek (Postgres answers them from a lock-free read) prunes less often than one that
// writes every operation, so pruning may not change any answer: a record dropped under a short window used to
// come back to life in the other store when the window grew again (a conflict there, a new hold here).
func runPruneTiming(t *testing.T, steps int, pick func(n int) int) {
	t.Helper()
	windows := []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second}
	p := Policy{Name: "p", Limit: 5, Window: 4 * time.Second, Algorithm: Algorithms[pick(len(Algorithms))]}.WithDefaults()
	var a, b Bucket
	now := int64(1_700_000_000_000_000)
	for step := 0; step < steps; step++ {
		now += int64(pick(400)) * 1000
		switch pick(12) {
		case 0:
			p.Limit = int64(2 + pick(6))
		case 1, 2:
			old := p
			if pick(2) == 0 {
				p.Window = windows[pick(len(windows))]
			} else {
				p.Algorithm = Algorithms[pick(len(Algorithms))]
			}
			p.Resolution = 0
			p = p.WithDefaults()
			p.Floor = NextFloor(old, now)
		}
		r := p.Rule()
		if pick(2) == 0 {
			b.Holds(now, r)
		}
		q := BucketHold{BucketRequest: BucketRequest{Rule: r}, ID: "h" + strconv.Itoa(pick(6)), TTL: time.Duration(pick(7)) * time.Second}
		switch op := pick(10); {
		case op < 3:
			q.Op, q.Cost = OpCheck, int64(pick(int(min(p.Limit, 4))+1)) // Decide's contract: cost ≤ limit
			if p.Algorithm.HoldsOnly() {
				q.Cost = 0 // concurrency is only peeked at
			}
		case op < 6:
			q.Op, q.Cost = OpAcquire, int64(1+pick(int(p.Limit)))
		case op < 9:
			q.Op, q.Cost = OpSettle, int64(pick(int(2*p.Limit)+1))
		default:
			q.Op = OpRenew
		}
		if got, want := b.ApplyHold(now, q), a.ApplyHold(now, q); got != want {
			t.Fatalf("step %d %s/%s/%d floor %d op %d id %s amount %d ttl %s: pruned more often\n got %+v\nwant %+v",
				step, p.Algorithm, p.Window, p.Limit, p.Floor, q.Op, q.ID, q.Cost, q.TTL, got, want)
		}
	}
}

// TestHoldPruningIsHistoryIndependent: runPruneTiming on many seeded sequences.
func TestHoldPruningIsHistoryIndependent(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 26))
		runPruneTiming(t, 600, func(n int) int { return rng.IntN(n) })
	}
}

// FuzzHoldPruningTiming: runPruneTiming on the fuzzer's sequences.
func FuzzHoldPruningTiming(f *testing.F) {
	f.Add([]byte{1, 2, 0, 3, 1, 4, 2, 9, 0, 3, 5, 1, 1, 7, 2, 0, 6, 3, 1, 2, 8, 4})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 4000 {
			prog = prog[:4000]
		}
		runPruneTiming(t, len(prog)/4, picker(prog))
	})
}

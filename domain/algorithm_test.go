package domain

import (
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// model is the brute-force reference of every algorithm, computed the slow way straight from shared/design.md:
// every admitted run of units is kept with its recorded instant and never compacted (the log algorithms and
// fixed_window), and token_bucket's theoretical arrival time is an exact rational.
type model struct {
	units []run    // recorded instant and cost of every admitted run
	real  []run    // the admission instants (before sliding_window's rounding), for the window bound
	tat   *big.Rat // token_bucket, µs
}

type run struct{ at, cost int64 }

func us(d time.Duration) int64 { return int64(d / time.Microsecond) }

// counting is the units recorded after max(t - window, floor): the units that count at t.
func (m *model) counting(t, window, floor int64) int64 {
	var n int64
	for _, u := range m.units {
		if u.at > max(t-window, floor) {
			n += u.cost
		}
	}
	return n
}

func (m *model) decide(now int64, r Rule, cost int64) Decision {
	c := max(cost, 1)
	w, L := us(r.Window), r.Limit
	switch r.Algorithm {
	case SlidingLog, SlidingWindow:
		rec := now
		if r.Algorithm == SlidingWindow {
			res := us(r.Resolution)
			rec = (now + res - 1) / res * res
		}
		used := m.counting(now, w, r.Floor)
		newest := int64(-1 << 62) // the newest counting unit, or rec when the check is admitted
		if used+c <= L {
			newest = rec
		}
		for _, u := range m.units {
			if u.cost > 0 && u.at > max(now-w, r.Floor) && u.at > newest { // a run a hold gave back whole is gone
				newest = u.at
			}
		}
		d := Decision{Limit: L, Allowed: used+c <= L, ResetAfter: micros(newest + w - now)}
		if d.Allowed {
			d.Remaining = L - used - c
			if cost > 0 {
				m.units = append(m.units, run{rec, cost})
				m.real = append(m.real, run{now, cost})
			}
			return d
		}
		d.Remaining = max(L-used, 0)
		best := int64(-1)
		for _, u := range m.units {
			if u.cost == 0 || u.at <= max(now-w, r.Floor) {
				continue
			}
			leave := u.at + w
			if m.counting(leave, w, r.Floor)+c <= L && (best < 0 || leave < best) {
				best = leave
			}
		}
		d.RetryAfter = micros(best - now)
		return d
	case FixedWindow:
		start := now - now%w
		var used int64
		for _, u := range m.units {
			if u.at >= start && u.at > r.Floor {
				used += u.cost
			}
		}
		d := Decision{Limit: L, Allowed: used+c <= L, ResetAfter: micros(start + w - now)}
		if d.Allowed {
			d.Remaining = L - used - c
			if cost > 0 {
				m.units = append(m.units, run{now, cost})
				m.real = append(m.real, run{now, cost})
			}
			return d
		}
		d.Remaining = max(L-used, 0)
		d.RetryAfter = d.ResetAfter
		return d
	case TokenBucket:
		if m.tat == nil {
			m.tat = new(big.Rat)
		}
		T := big.NewRat(w, L)
		nowR := new(big.Rat).SetInt64(now)
		t0 := new(big.Rat).Set(m.tat)
		if t0.Cmp(nowR) < 0 {
			t0.Set(nowR)
		}
		next := new(big.Rat).Add(t0, new(big.Rat).Mul(T, new(big.Rat).SetInt64(c)))
		lag := new(big.Rat).Sub(next, nowR)
		d := Decision{Limit: L, Allowed: lag.Cmp(new(big.Rat).SetInt64(w)) <= 0}
		after := t0
		if d.Allowed {
			after = next
		}
		// remaining: whole units that still fit after this decision, floor((now + w - after) / T) in [0, L].
		slack := new(big.Rat).Sub(new(big.Rat).SetInt64(now+w), after)
		d.Remaining = min(max(floorRat(new(big.Rat).Quo(slack, T)), 0), L)
		d.ResetAfter = micros(ceilRat(new(big.Rat).Sub(after, nowR)))
		if d.Allowed {
			if cost > 0 {
				m.tat = next
				m.real = append(m.real, run{now, cost})
			}
			return d
		}
		d.RetryAfter = micros(ceilRat(new(big.Rat).Sub(lag, new(big.Rat).SetInt64(w))))
		return d
	case Concurrency: // its units are held by holds: holdModel.decideConcurrency (hold_test.go) models it
	}
	panic("no check model for algorithm " + r.Algorithm)
}

func floorRat(x *big.Rat) int64 {
	q := new(big.Int).Div(x.Num(), x.Denom()) // Euclidean: floor for a positive denominator
	return q.Int64()
}

func ceilRat(x *big.Rat) int64 { return -floorRat(new(big.Rat).Neg(x)) }

// admittedIn sums the units admitted (at their real instants) in (end - window, end].
func (m *model) admittedIn(end, window int64) int64 {
	var n int64
	for _, u := range m.real {
		if u.at > end-window && u.at <= end {
			n += u.cost
		}
	}
	return n
}

// checkBound asserts the worst case of design.md's table: at most limit admitted in any interval of one window
// for the log algorithms, about 2 × limit for token_bucket and fixed_window. Intervals ending at admission
// instants are the only ones whose count can peak.
func (m *model) checkBound(t *testing.T, r Rule) {
	t.Helper()
	bound := r.Limit
	if r.Algorithm == TokenBucket || r.Algorithm == FixedWindow {
		bound = 2 * r.Limit
	}
	for _, u := range m.real {
		if n := m.admittedIn(u.at, us(r.Window)); n > bound {
			t.Fatalf("%s: %d units admitted in the window ending at %d, bound %d", r.Algorithm, n, u.at, bound)
		}
	}
}

func ruleFor(alg Algorithm, limit int64, window time.Duration, resolution time.Duration) Rule {
	p := Policy{Name: "p", Limit: limit, Window: window, Algorithm: alg, Resolution: resolution}.WithDefaults()
	if err := p.Validate(""); err != nil {
		panic(err)
	}
	return p.Rule()
}

// checkFields asserts what holds for every decision of every algorithm.
func checkFields(t *testing.T, what string, d Decision, r Rule) {
	t.Helper()
	if d.Allowed != (d.RetryAfter == 0) || d.RetryAfter < 0 {
		t.Fatalf("%s: retry_after %s with allowed=%v", what, d.RetryAfter, d.Allowed)
	}
	if d.Remaining < 0 || d.Remaining > r.Limit {
		t.Fatalf("%s: remaining %d out of [0, %d]", what, d.Remaining, r.Limit)
	}
	if d.ResetAfter < 0 || d.RetryAfter > d.ResetAfter+r.Window {
		t.Fatalf("%s: reset_after %s, retry_after %s", what, d.ResetAfter, d.RetryAfter)
	}
}

// TestAlgorithmsMatchModel drives every algorithm and the model with the same random checks and requires every
// field of every decision to agree, plus each algorithm's bound and state size.
func TestAlgorithmsMatchModel(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			for seed := uint64(0); seed < 200; seed++ {
				rng := rand.New(rand.NewPCG(seed, seed*7+1))
				limit := int64(1 + rng.IntN(12))
				switch seed % 10 {
				case 0:
					limit = 1 // the edge that breaks limiters most often
				case 1:
					limit = MaxLimit - rng.Int64N(3) // the numeric bound
				case 2:
					limit = 1_000_000 + rng.Int64N(1000)
				}
				window := time.Duration(1+rng.IntN(10)) * time.Second
				if seed%7 == 3 {
					window = MaxWindow
				}
				var res time.Duration
				if alg == SlidingWindow && seed%2 == 1 {
					res = time.Duration(1+rng.Int64N(int64(window/time.Millisecond))) * time.Millisecond
				}
				r := ruleFor(alg, limit, window, res)
				var b Bucket
				var m model
				now := int64(1_700_000_000_000_000) + rng.Int64N(1_000_000)
				for step := 0; step < 300; step++ {
					switch rng.IntN(6) {
					case 0: // same instant
					case 1: // exactly one window later: the boundary
						now += us(window)
					case 2:
						now += rng.Int64N(2 * us(window))
					default:
						now += rng.Int64N(us(window)/4 + 1)
					}
					cost := rng.Int64N(min(limit, 20) + 1)
					if limit > 20 && rng.IntN(4) == 0 {
						cost = rng.Int64N(limit) + 1
					}
					want := m.decide(now, r, cost)
					got := b.Decide(now, r, cost)
					what := "seed " + strconv.FormatUint(seed, 10) + " step " + strconv.Itoa(step)
					if got != want {
						t.Fatalf("%s now %d cost %d rule %+v:\n got %+v\nwant %+v", what, now, cost, r, got, want)
					}
					checkFields(t, what, got, r)
					if alg == SlidingLog && b.Len() > int(min(limit, 300)) {
						t.Fatalf("log holds %d entries for limit %d", b.Len(), limit)
					}
					if alg == SlidingWindow && int64(b.Len()) > (us(window)+us(r.Resolution)-1)/us(r.Resolution)+1 {
						t.Fatalf("sliding_window holds %d entries for %s / %s", b.Len(), window, r.Resolution)
					}
				}
				m.checkBound(t, r)
			}
		})
	}
}

// A peek is the decision a cost-1 check would get, and it records nothing.
func TestPeekIsCostOneWithoutRecording(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		rng := rand.New(rand.NewPCG(1, 2))
		r := ruleFor(alg, 5, 10*time.Second, 0)
		var b Bucket
		now := int64(3_600_000_000)
		for i := 0; i < 500; i++ {
			now += rng.Int64N(3_000_000)
			peek := b.Decide(now, r, 0)
			mark := b.Mark()
			one := b.Decide(now, r, 1)
			if peek != one {
				t.Fatalf("%s: peek %+v differs from the cost-1 decision %+v", alg, peek, one)
			}
			b.Rollback(mark)
			if again := b.Decide(now, r, 0); again != peek {
				t.Fatalf("%s: peek changed state: %+v then %+v", alg, peek, again)
			}
			if rng.IntN(2) == 0 {
				b.Decide(now, r, 1+rng.Int64N(5))
			}
		}
	}
}

// A flood of denials never delays the refill.
func TestDenialRecordsNothing(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		r := ruleFor(alg, 3, time.Minute, 0)
		var b Bucket
		start := int64(3_600_000_000) // on a minute boundary, so fixed_window's window starts here too
		if d := b.Decide(start, r, 3); !d.Allowed {
			t.Fatalf("%s: first check denied", alg)
		}
		before := b.Mark()
		for i := 1; i <= 1000; i++ {
			if d := b.Decide(start+int64(i)*1000, r, 1); d.Allowed {
				t.Fatalf("%s: over-admitted at denial %d", alg, i)
			}
		}
		if after := b.Mark(); after.a != before.a || after.f != before.f || after.lm != before.lm {
			t.Fatalf("%s: denials changed the state", alg)
		}
		if d := b.Decide(start+us(time.Minute), r, 3); !d.Allowed {
			t.Fatalf("%s: denials drained the quota: %+v", alg, d)
		}
	}
}

// Rollback restores exactly what a peek saw before the rolled-back checks, for every algorithm, including across
// a conversion (the policy's algorithm or generation changed between checks of one batch).
func TestRollback(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rules := []Rule{}
	for _, alg := range WindowAlgorithms {
		rules = append(rules, ruleFor(alg, 10, 5*time.Second, 0))
	}
	var b Bucket
	now := int64(3_600_000_000)
	for i := 0; i < 4000; i++ {
		now += rng.Int64N(2_000_000)
		r := rules[rng.IntN(len(rules))]
		r.Generation = rng.Int64N(2)
		before := b.Decide(now, r, 0)
		mark := b.Mark()
		for j := 0; j < 1+rng.IntN(3); j++ {
			rj := rules[rng.IntN(len(rules))]
			rj.Generation = rng.Int64N(2)
			b.Decide(now, rj, rng.Int64N(4))
		}
		if rng.IntN(2) == 0 {
			b.Rollback(mark)
			if after := b.Decide(now, r, 0); after != before {
				t.Fatalf("step %d: rollback left %+v, want %+v", i, after, before)
			}
		}
	}
}

// The expiry rule: when a window grows, units still counting keep counting and units that had stopped do not come
// back; the janitor-free memory of it is the floor (NextFloor). A fixed window's units stop when the window that
// admitted them ends, under any later window: a check that records under the grown window before then carries
// them into it.
func TestExpiryRuleWhenTheWindowGrows(t *testing.T) {
	for _, alg := range []Algorithm{SlidingLog, SlidingWindow, FixedWindow} {
		p := Policy{Name: "p", Limit: 3, Window: 5 * time.Second, Algorithm: alg, Resolution: time.Second}
		if alg != SlidingWindow {
			p.Resolution = 0
		}
		var b Bucket
		t0 := int64(1_000_000_000) // a multiple of 5s and 1h
		for i := int64(0); i < 3; i++ {
			if d := b.Decide(t0+i, p.Rule(), 1); !d.Allowed {
				t.Fatalf("%s: admission %d denied", alg, i)
			}
		}
		// Six seconds later the three units have stopped counting under 5s. The window is set to 1h.
		change := t0 + 6_000_000
		grown := p
		grown.Window, grown.Floor = time.Hour, NextFloor(p, change)
		if alg == SlidingWindow {
			grown.Resolution = time.Minute
		}
		if d := b.Decide(change, grown.Rule(), 3); !d.Allowed {
			t.Fatalf("%s: units that had stopped came back after the window grew: %+v", alg, d)
		}
		// Units admitted one second before a second change keep counting under the new window: a log's for
		// the new window, a fixed window's until their own window ends (t0 + 5s) unless a check records first.
		var c Bucket
		c.Decide(t0, p.Rule(), 2)
		change = t0 + 1_000_000
		grown.Floor = NextFloor(p, change)
		later := change + 30_000_000
		if alg == FixedWindow {
			if d := c.Decide(change+1_000_000, grown.Rule(), 0); d.Remaining != 0 {
				t.Fatalf("%s: units of the window still current stopped counting: %+v", alg, d)
			}
			if d := c.Decide(t0+5_000_000, grown.Rule(), 0); d.Remaining != 2 {
				t.Fatalf("%s: units counted past the end of the window that admitted them: %+v", alg, d)
			}
			var e Bucket
			e.Decide(t0, p.Rule(), 2)
			e.Decide(change+1_000_000, grown.Rule(), 1) // records before t0 + 5s: the units move into the 1h window
			if d := e.Decide(later, grown.Rule(), 1); d.Allowed {
				t.Fatalf("%s: units carried into the grown window stopped counting: %+v", alg, d)
			}
			continue
		}
		if d := c.Decide(later, grown.Rule(), 2); d.Allowed {
			t.Fatalf("%s: units still counting at the change stopped counting: %+v", alg, d)
		}
	}
}

// A re-created policy (another generation) never counts the old policy's units.
func TestGenerationDropsState(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		r := ruleFor(alg, 2, time.Hour, 0)
		var b Bucket
		b.Decide(1_000_000, r, 2)
		r.Generation = 7
		if d := b.Decide(2_000_000, r, 2); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("%s: the old generation's units counted: %+v", alg, d)
		}
		if d := b.Decide(3_000_000, r, 1); d.Allowed {
			t.Fatalf("%s: the new generation's units did not count: %+v", alg, d)
		}
	}
}

// Changing a policy's algorithm converts its keys' state conservatively: a key that spent its limit stays denied.
func TestAlgorithmChangeNeverOverAdmits(t *testing.T) {
	for _, from := range WindowAlgorithms {
		for _, to := range WindowAlgorithms {
			if from == to {
				continue
			}
			rf, rt := ruleFor(from, 10, time.Minute, 0), ruleFor(to, 10, time.Minute, 0)
			var b Bucket
			now := int64(3_600_000_000) + 1_000_000 // 1s into a minute
			if d := b.Decide(now, rf, 10); !d.Allowed {
				t.Fatalf("%s: denied", from)
			}
			if d := b.Decide(now+1_000_000, rt, 1); d.Allowed {
				t.Fatalf("%s → %s: a spent key was admitted after the change: %+v", from, to, d)
			}
			var e Bucket
			if d := e.Decide(now, rt, 1); !d.Allowed || d.Remaining != 9 {
				t.Fatalf("%s: fresh key %+v", to, d)
			}
		}
	}
}

// At the numeric bounds nothing overflows: a limit of 2^53-1 over 31 days admits exactly that many units and
// reports exact fields.
func TestNumericBounds(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		r := ruleFor(alg, MaxLimit, MaxWindow, 0)
		var b Bucket
		now := us(MaxWindow) * 1000 // a multiple of the window
		d := b.Decide(now, r, MaxLimit-1)
		if !d.Allowed || d.Remaining != 1 {
			t.Fatalf("%s: first %+v", alg, d)
		}
		if d = b.Decide(now, r, 1); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("%s: last unit %+v", alg, d)
		}
		if d = b.Decide(now, r, 1); d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 || d.ResetAfter > MaxWindow {
			t.Fatalf("%s: over the limit %+v", alg, d)
		}
		if d = b.Decide(now, r, MaxLimit); d.Allowed {
			t.Fatalf("%s: admitted a whole limit on a full key: %+v", alg, d)
		}
	}
}

func TestDecideAllocatesNothingAfterWarmUp(t *testing.T) {
	for _, alg := range WindowAlgorithms {
		r := ruleFor(alg, 100, time.Second, 0)
		var b Bucket
		now := int64(3_600_000_000)
		for i := 0; i < 1000; i++ { // warm up: the ring reaches its working size
			now += 1000
			b.Decide(now, r, 1)
		}
		allocs := testing.AllocsPerRun(1000, func() {
			now += 1000
			b.Decide(now, r, 1)
		})
		if allocs != 0 {
			t.Fatalf("%s: Decide allocates %.1f times per call after warm-up", alg, allocs)
		}
	}
}

// BenchmarkBucketDecide: one step per algorithm at limits 100, 10,000 and 1,000,000 over a 1 h window, in a
// steady state (the clock moves so that about half the checks are denied).
func BenchmarkBucketDecide(b *testing.B) {
	for _, alg := range WindowAlgorithms {
		for _, limit := range []int64{100, 10_000, 1_000_000} {
			b.Run(string(alg)+"/limit="+strconv.FormatInt(limit, 10), func(b *testing.B) {
				r := ruleFor(alg, limit, time.Hour, 0)
				var bk Bucket
				now := int64(3_600_000_000)
				step := max(us(time.Hour)/limit/2, 1)
				b.ReportAllocs()
				for b.Loop() {
					now += step
					bk.Decide(now, r, 1)
				}
			})
		}
	}
}

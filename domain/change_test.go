package domain

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Tests of policy changes between checks: conversions keep every unit that still counts (shared/design.md,
// "Algorithm and limit changes"), and a denial or a peek changes nothing.

func day(n int64) time.Duration { return time.Duration(n) * 24 * time.Hour }

// decideN sends n checks of cost 1 and returns how many were admitted.
func decideN(b *Bucket, now int64, r Rule, n int) int {
	admitted := 0
	for range n {
		if b.Decide(now, r, 1).Allowed {
			admitted++
		}
	}
	return admitted
}

// Issue 22, finding 3: a token bucket's units are those admitted under the limit that wrote them. A lower limit
// in between never caps them, so raising the limit again admits only what is left of it.
func TestTokenBucketUnitsSurviveALowerLimit(t *testing.T) {
	now := int64(1_700_000_000_000_000)
	tb := ruleFor(TokenBucket, 100, day(1), 0)
	var b Bucket
	if n := decideN(&b, now, tb, 50); n != 50 {
		t.Fatalf("token_bucket 100/1d admitted %d of 50", n)
	}
	now += 1_000_000
	low := ruleFor(SlidingLog, 3, day(1), 0)
	if n := decideN(&b, now, low, 5); n != 0 {
		t.Fatalf("sliding_log 3/1d admitted %d with 50 units counting", n)
	}
	now += 1_000_000
	high := ruleFor(SlidingLog, 100, day(1), 0)
	if n := decideN(&b, now, high, 100); n != 50 {
		t.Fatalf("sliding_log 100/1d admitted %d more, want 50 (100 in all)", n)
	}
}

// A token bucket whose limit is lowered keeps its units as units: the lower limit denies until they drain, and a
// later change of algorithm still counts them.
func TestTokenBucketRateChangeKeepsUnits(t *testing.T) {
	now := int64(1_700_000_000_000_000)
	var b Bucket
	if n := decideN(&b, now, ruleFor(TokenBucket, 8, day(1), 0), 5); n != 5 {
		t.Fatalf("admitted %d of 5", n)
	}
	if n := decideN(&b, now+1, ruleFor(TokenBucket, 3, day(1), 0), 3); n != 0 {
		t.Fatalf("token_bucket 3/1d admitted %d with 5 units outstanding", n)
	}
	if n := decideN(&b, now+2, ruleFor(SlidingLog, 8, day(1), 0), 8); n != 3 {
		t.Fatalf("sliding_log 8/1d admitted %d, want 3", n)
	}
	// A grown window keeps them too: 8 units of 8/1h still count under 8/1d.
	var g Bucket
	decideN(&g, now, ruleFor(TokenBucket, 8, time.Hour, 0), 8)
	if n := decideN(&g, now+1, ruleFor(TokenBucket, 8, day(1), 0), 8); n != 0 {
		t.Fatalf("token_bucket 8/1d admitted %d right after 8 under 8/1h", n)
	}
}

// Issue 22, finding 4: a denial and a peek convert nothing. A key spent under sliding_log stays spent through any
// sequence of algorithms, and its state is exactly as it was.
func TestDenialAndPeekConvertNothing(t *testing.T) {
	now := int64(1_700_000_000_000_000)
	var b Bucket
	decideN(&b, now, ruleFor(SlidingLog, 8, day(1), 0), 8)
	before := b.Mark()
	for i, r := range []Rule{ruleFor(TokenBucket, 7, day(1), 0), ruleFor(SlidingLog, 6, day(1), 0), ruleFor(FixedWindow, 7, day(1), 0), ruleFor(SlidingWindow, 8, day(1), 0)} {
		now += 1000
		if d := b.Decide(now, r, 0); d.Allowed {
			t.Fatalf("change %d (%s): a peek says a spent key would be admitted: %+v", i, r.Algorithm, d)
		}
		if d := b.Decide(now, r, 1); d.Allowed {
			t.Fatalf("change %d (%s): a spent key was admitted: %+v", i, r.Algorithm, d)
		}
		if after := b.Mark(); after.alg != before.alg || after.lm != before.lm || b.Len() != 1 {
			t.Fatalf("change %d (%s): a denial changed the state", i, r.Algorithm)
		}
	}
}

// Units converted into a fixed window count in the current window, though recorded before it began.
func TestConversionIntoFixedWindowKeepsUnitsRecordedBeforeItsWindow(t *testing.T) {
	hour := int64(3_600_000_000)
	now := 1000*hour - 2_000_000 // two seconds before an hour boundary
	var b Bucket
	decideN(&b, now, ruleFor(SlidingLog, 10, time.Hour, 0), 10)
	if n := decideN(&b, now+4_000_000, ruleFor(FixedWindow, 10, time.Hour, 0), 10); n != 0 {
		t.Fatalf("fixed_window admitted %d in the next window with 10 units still counting", n)
	}
}

// An algorithm outside the table is never decided by a default.
func TestUnknownAlgorithmIsNotDecided(t *testing.T) {
	var b Bucket
	r := ruleFor(SlidingLog, 5, time.Minute, 0)
	b.Decide(1_000_000, r, 1)
	r.Algorithm = "leaky_bucket"
	if d := b.Decide(2_000_000, r, 1); d.Status != StatusInvalidRule || d.Allowed {
		t.Fatalf("unknown algorithm decided: %+v", d)
	}
}

// The windows the change tests draw from: each divides the next, so fixed windows' boundaries nest.
var nestedWindows = []time.Duration{time.Second, 10 * time.Second, time.Minute, time.Hour, day(1)}

// changeHistory is the brute-force side of the change tests: every admission with its instant and generation,
// and every rule with the interval it was in force.
type changeHistory struct {
	admitted []admission
	rules    []ruleSpan
}

type admission struct {
	at, cost, gen int64
}

type ruleSpan struct {
	r        Rule
	from, to int64 // in force in [from, to]
}

// boundFor is the change bound (the lead's reading of design.md, see checkBound): the largest limit in force,
// plus the largest token_bucket limit and the largest fixed_window limit in force (a bucket's refill and a
// window's end are what a conversion to units cannot keep).
func boundFor(spans []ruleSpan) int64 {
	var top, bursts int64
	perAlg := map[Algorithm]int64{}
	for _, s := range spans {
		top = max(top, s.r.Limit)
		if algorithmRowOf(s.r.Algorithm).burst {
			perAlg[s.r.Algorithm] = max(perAlg[s.r.Algorithm], s.r.Limit)
		}
	}
	for _, l := range perAlg {
		bursts += l
	}
	return top + bursts
}

// checkBound: for every admission instant t and every window W drawn, in the interval (t - W, t] where every
// rule in force (of that generation) has a window of at least W, the units admitted never exceed boundFor
// those rules. Intervals ending at admissions are the only ones whose count can peak.
func (h *changeHistory) checkBound(t *testing.T, seed uint64) {
	t.Helper()
	for _, end := range h.admitted {
		for _, w := range nestedWindows {
			start := end.at - int64(w/time.Microsecond)
			var spans []ruleSpan
			ok := true
			for _, s := range h.rules {
				if s.r.Generation != end.gen || s.to <= start || s.from > end.at {
					continue
				}
				if shortestSpan(s.r) < w {
					ok = false
					break
				}
				spans = append(spans, s)
			}
			if !ok || len(spans) == 0 {
				continue
			}
			var n int64
			for _, a := range h.admitted {
				if a.gen == end.gen && a.at > start && a.at <= end.at {
					n += a.cost
				}
			}
			if bound := boundFor(spans); n > bound {
				t.Fatalf("seed %d: %d units admitted in (%d, %d] (window %s, generation %d), bound %d under %+v", seed, n, start, end.at, w, end.gen, bound, spans)
			}
		}
	}
}

// shortestSpan is the shortest span r counts over: its window, or for a calendar period a lower bound of a
// period's length (a civil day is at least 23 hours in every zone the tests use).
func shortestSpan(r Rule) time.Duration {
	if r.Period == nil {
		return r.Window
	}
	switch r.Period.Unit {
	case CalendarMonth:
		return day(27)
	case CalendarWeek:
		return day(6)
	default:
		return 22 * time.Hour
	}
}

// changeCalendars are the calendar periods the change tests draw from (with fixed_window), anchored at wall
// clocks that DST changes skip or repeat in some of their zones.
var changeCalendars = func() []*Calendar {
	var cs []*Calendar
	for i, zone := range []string{"America/New_York", "Europe/London", "Australia/Lord_Howe", "UTC"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			panic(err)
		}
		for j, unit := range []CalendarUnit{CalendarDay, CalendarWeek, CalendarMonth} {
			cs = append(cs, &Calendar{Unit: unit, Location: loc, Anchor: time.Date(2023, time.Month(1+i*3+j), 29+j, 1+i, 30, 0, 0, loc)})
		}
	}
	return cs
}()

// runChanges drives one Bucket through random checks and random policy changes (limit, window, algorithm,
// calendar period when calendars is set, generation, with the floor a policy store would set), recording the history, and checks every decision's
// fields and, at the end, the bound.
func runChanges(t *testing.T, seed uint64, steps int, calendars bool, pick func(n int) int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	if pick == nil {
		pick = rng.IntN
	}
	newPolicy := func(gen int64) Policy {
		p := Policy{Name: "p", Limit: int64(1 + pick(8)), Window: nestedWindows[pick(len(nestedWindows))], Algorithm: WindowAlgorithms[pick(len(WindowAlgorithms))]}.WithDefaults()
		if calendars && pick(3) == 0 {
			p = Policy{Name: "p", Limit: p.Limit, Period: changeCalendars[pick(len(changeCalendars))]}.WithDefaults()
		}
		p.Generation = gen
		return p
	}
	p := newPolicy(0)
	now := int64(1_700_000_000_000_000)
	h := &changeHistory{rules: []ruleSpan{{r: p.Rule(), from: now}}}
	var b Bucket
	for step := 0; step < steps; step++ {
		switch pick(4) {
		case 0: // same instant
		case 1:
			now += int64(p.Window/time.Microsecond) * int64(pick(3)) / 2
		default:
			now += int64(p.Window/time.Microsecond) * int64(1+pick(40)) / 400
		}
		if pick(5) == 0 {
			h.rules[len(h.rules)-1].to = now
			old := p
			switch pick(4) {
			case 0:
				p.Limit = int64(1 + pick(8))
			case 1:
				p = newPolicy(p.Generation + 1) // deleted and re-created
			default: // window and algorithm: the policy store raises the floor
				q := newPolicy(p.Generation)
				q.Limit = p.Limit
				if pick(2) == 0 && q.Period == nil && p.Period == nil {
					q.Window = p.Window
					q.Resolution = 0
					q = q.WithDefaults()
				}
				q.Floor = NextFloor(old, now)
				p = q
			}
			h.rules = append(h.rules, ruleSpan{r: p.Rule(), from: now})
		}
		r := p.Rule()
		cost := int64(pick(int(p.Limit) + 1))
		d := b.Decide(now, r, cost)
		checkFields(t, fmt.Sprintf("seed %d step %d", seed, step), d, r)
		if d.Allowed && cost > 0 {
			h.admitted = append(h.admitted, admission{at: now, cost: cost, gen: r.Generation})
		}
	}
	h.rules[len(h.rules)-1].to = now
	h.checkBound(t, seed)
}

// TestChangesKeepTheBound: random sequences of checks and policy changes never admit past the change bound.
func TestChangesKeepTheBound(t *testing.T) {
	for seed := uint64(0); seed < 400; seed++ {
		runChanges(t, seed, 200, seed%2 == 1, nil)
	}
}

// A check of an older generation than its key's state (it resolved its policy before a DELETE and re-create) is
// refused and changes nothing: in the memory store that race reset the new generation's key (churn test: a
// token_bucket of 7 admitted 14).
func TestOlderGenerationNeverResetsANewerOne(t *testing.T) {
	now := int64(1_700_000_000_000_000)
	newer := ruleFor(TokenBucket, 7, day(1), 0)
	newer.Generation = 21
	older := newer
	older.Generation = 20
	var b Bucket
	if n := decideN(&b, now, newer, 7); n != 7 {
		t.Fatalf("admitted %d of 7", n)
	}
	if d := b.Decide(now, older, 1); d.Status != StatusPolicyNotFound || d.Allowed {
		t.Fatalf("a check of the deleted generation: %+v", d)
	}
	if n := decideN(&b, now, newer, 7); n != 0 {
		t.Fatalf("the newer generation admitted %d more after a check of the older one", n)
	}
}

// Units a log still counts under a fixed_window policy (no check recorded under it, so they were never converted)
// keep counting when the policy changes again after a fixed window ended: the floor is the same for every
// algorithm (NextFloor). Before, a fixed window's floor was the start of its current window, which dropped them
// (fuzzing: 12 admitted in a day under a largest limit of 8).
func TestUnitsCarriedThroughAFixedWindowPolicy(t *testing.T) {
	dayUs := int64(day(1) / time.Microsecond)
	t0 := 19_000 * dayUs // a day boundary
	sw := Policy{Name: "p", Limit: 8, Window: day(1), Algorithm: SlidingWindow}.WithDefaults()
	var b Bucket
	hour := int64(3_600_000_000)
	if n := decideN(&b, t0+20*hour, sw.Rule(), 7); n != 7 {
		t.Fatalf("sliding_window admitted %d of 7", n)
	}
	fw := Policy{Name: "p", Limit: 1, Window: day(1), Algorithm: FixedWindow}.WithDefaults()
	fw.Floor = NextFloor(sw, t0+21*hour)
	if n := decideN(&b, t0+22*hour, fw.Rule(), 1); n != 0 {
		t.Fatalf("fixed_window admitted %d with 7 units counting", n)
	}
	// The next fixed window has begun; the seven units are 6 hours old, still counting under a day.
	change := t0 + dayUs + 2*hour
	sl := Policy{Name: "p", Limit: 8, Window: day(1), Algorithm: SlidingLog}
	sl.Floor = NextFloor(fw, change)
	if n := decideN(&b, change, sl.Rule(), 8); n != 1 {
		t.Fatalf("sliding_log of 8 admitted %d with 7 units counting, want 1", n)
	}
}

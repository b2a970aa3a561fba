package domain

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// model is the brute-force sliding log: every admitted unit run with its instant, never compacted.
type model struct {
	at   []int64
	cost []int64
}

func (m *model) used(now int64, window time.Duration) int64 {
	var u int64
	for i, t := range m.at {
		if t > now-int64(window) && t <= now {
			u += m.cost[i]
		}
	}
	return u
}

// decide is shared/design.md's definition, computed the slow way.
func (m *model) decide(now, cost, limit int64, window time.Duration) Decision {
	peek := cost == 0
	c := cost
	if peek {
		c = 1
	}
	used := m.used(now, window)
	d := Decision{Limit: limit, Allowed: used+c <= limit}
	if d.Allowed {
		d.Remaining = limit - used - c
		d.ResetAfter = window
		if !peek {
			m.at, m.cost = append(m.at, now), append(m.cost, cost)
		}
		return d
	}
	d.Remaining = max(limit-used, 0)
	// reset: the newest live unit leaves at its instant + window.
	var newest int64
	for _, t := range m.at {
		if t > now-int64(window) && t > newest {
			newest = t
		}
	}
	d.ResetAfter = time.Duration(newest + int64(window) - now)
	// retry: the earliest departure instant after which the cost fits.
	best := int64(-1)
	for _, t := range m.at {
		if t <= now-int64(window) {
			continue
		}
		leave := t + int64(window)
		if m.used(leave, window)+c <= limit && (best < 0 || leave < best) {
			best = leave
		}
	}
	d.RetryAfter = time.Duration(best - now)
	return d
}

// checkInvariant asserts that every interval of one window holds at most limit admitted units. Intervals ending
// at admitted instants are the only ones whose count can peak.
func (m *model) checkInvariant(t *testing.T, limit int64, window time.Duration) {
	t.Helper()
	for _, end := range m.at {
		if u := m.used(end, window); u > limit {
			t.Fatalf("window ending at %d holds %d units, limit %d", end, u, limit)
		}
	}
}

func TestLogMatchesModel(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*7+1))
		limit := int64(1 + rng.IntN(12))
		if seed%10 == 0 {
			limit = 1 // the edge that breaks limiters most often
		}
		window := time.Duration(1+rng.IntN(10)) * time.Second
		var l Log
		var m model
		now := int64(1_000_000_000_000)
		for step := 0; step < 400; step++ {
			switch rng.IntN(6) {
			case 0: // same instant
			case 1: // exactly one window later: the boundary
				now += int64(window)
			case 2:
				now += rng.Int64N(int64(window) * 2)
			default:
				now += rng.Int64N(int64(window) / 4)
			}
			cost := rng.Int64N(limit + 1)
			want := m.decide(now, cost, limit, window)
			got := l.Decide(now, cost, limit, window)
			if got != want {
				t.Fatalf("seed %d step %d now %d cost %d limit %d window %s:\n got %+v\nwant %+v", seed, step, now, cost, limit, window, got, want)
			}
			if got.Allowed && got.RetryAfter != 0 || !got.Allowed && got.RetryAfter <= 0 {
				t.Fatalf("retry_after %s with allowed=%v", got.RetryAfter, got.Allowed)
			}
			if got.Remaining < 0 || got.Remaining > limit {
				t.Fatalf("remaining %d out of [0, %d]", got.Remaining, limit)
			}
			if l.Len() > int(limit) {
				t.Fatalf("log holds %d entries for limit %d", l.Len(), limit)
			}
		}
		m.checkInvariant(t, limit, window)
	}
}

func TestPeekIsCostOneWithoutRecording(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const limit, window = 5, 10 * time.Second
	var l Log
	now := int64(time.Hour)
	for i := 0; i < 500; i++ {
		now += rng.Int64N(int64(3 * time.Second))
		peek := l.Decide(now, 0, limit, window)
		mark := l.Mark()
		one := l.Decide(now, 1, limit, window)
		if peek != one {
			t.Fatalf("peek %+v differs from the cost-1 decision %+v", peek, one)
		}
		// The peek recorded nothing: undo the cost-1 check and a second peek must agree with the first.
		l.Rollback(mark)
		if again := l.Decide(now, 0, limit, window); again != peek {
			t.Fatalf("peek changed state: %+v then %+v", peek, again)
		}
		if rng.IntN(2) == 0 {
			l.Decide(now, 1+rng.Int64N(limit), limit, window)
		}
	}
}

func TestDenialRecordsNothing(t *testing.T) {
	var l Log
	const window = time.Minute
	now := int64(time.Hour)
	for i := 0; i < 3; i++ {
		if d := l.Decide(now, 1, 3, window); !d.Allowed {
			t.Fatalf("check %d denied", i)
		}
	}
	// A flood of denials while the window is full...
	for i := 0; i < 1000; i++ {
		now += int64(time.Millisecond)
		if d := l.Decide(now, 1, 3, window); d.Allowed {
			t.Fatalf("over-admitted at denial %d", i)
		}
	}
	// ...does not push the refill back: one window after the admitted units, all 3 are free again.
	now = int64(time.Hour) + int64(window)
	if d := l.Decide(now, 3, 3, window); !d.Allowed {
		t.Fatalf("denials drained the quota: %+v", d)
	}
}

func TestRetryAfterAndResetAfter(t *testing.T) {
	var l Log
	const window = 60 * time.Second
	t0 := int64(100 * time.Second)
	l.Decide(t0, 2, 5, window)                       // 2 units at t0
	l.Decide(t0+int64(10*time.Second), 3, 5, window) // 3 units at t0+10s: full
	d := l.Decide(t0+int64(20*time.Second), 1, 5, window)
	if d.Allowed || d.Remaining != 0 {
		t.Fatalf("want a denial with 0 remaining, got %+v", d)
	}
	if d.RetryAfter != 40*time.Second { // the 2 units at t0 leave at t0+60s
		t.Fatalf("retry_after = %s, want 40s", d.RetryAfter)
	}
	if d.ResetAfter != 50*time.Second { // the newest units leave at t0+70s
		t.Fatalf("reset_after = %s, want 50s", d.ResetAfter)
	}
	// cost 3 must wait for the units at t0+10s too.
	if d := l.Decide(t0+int64(20*time.Second), 3, 5, window); d.RetryAfter != 50*time.Second {
		t.Fatalf("retry_after for cost 3 = %s, want 50s", d.RetryAfter)
	}
	// At t0+60s exactly, the first run has left (the window is (now-60s, now]).
	if d := l.Decide(t0+int64(60*time.Second), 2, 5, window); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("at the boundary: %+v", d)
	}
}

func TestRollback(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const limit, window = 10, 5 * time.Second
	var l Log
	now := int64(time.Hour)
	for i := 0; i < 2000; i++ {
		now += rng.Int64N(int64(2 * time.Second))
		before := l.Decide(now, 0, limit, window)
		mark := l.Mark()
		for j := 0; j < 1+rng.IntN(3); j++ {
			l.Decide(now, rng.Int64N(4), limit, window)
		}
		if rng.IntN(2) == 0 {
			l.Rollback(mark)
			if after := l.Decide(now, 0, limit, window); after != before {
				t.Fatalf("rollback left %+v, want %+v", after, before)
			}
		}
	}
}

func TestDecideAllocatesNothingAfterWarmUp(t *testing.T) {
	var l Log
	const window = time.Second
	now := int64(time.Hour)
	for i := 0; i < 1000; i++ { // warm up: the ring reaches its working size
		now += int64(time.Millisecond)
		l.Decide(now, 1, 100, window)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		now += int64(time.Millisecond)
		l.Decide(now, 1, 100, window)
	})
	if allocs != 0 {
		t.Fatalf("Decide allocates %.1f times per call after warm-up", allocs)
	}
}

func BenchmarkLogDecide(b *testing.B) {
	for _, limit := range []int64{10, 1000} {
		b.Run("limit="+strconv.FormatInt(limit, 10), func(b *testing.B) {
			var l Log
			window := time.Second
			now := int64(time.Hour)
			step := int64(window) / limit // steady state: about limit entries live, half the checks denied
			b.ReportAllocs()
			for b.Loop() {
				now += step / 2
				l.Decide(now, 1, limit, window)
			}
		})
	}
}

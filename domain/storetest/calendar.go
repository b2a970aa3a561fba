package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // the zones the suite names, whatever the host has

	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// Calendar quotas (a fixed_window policy with a calendar Period) on every store: decided with the store's clock,
// reset_after exact to the next boundary, equal to the domain's step field by field. A store that does not decide
// calendar periods yet must refuse them as an invalid rule (StatusInvalidRule, a store error to the Limiter) and
// record nothing: never a silent decision by a window.

var calendarTests = []struct {
	name string
	fn   func(*testing.T, NewStore)
}{
	{"CalendarMonthlyAnchoredOnThe31stInNewYork", testCalendarMonthly},
	{"CalendarDaysAcrossDSTChanges", testCalendarDST},
	{"CalendarMatchesTheDomainStep", testCalendarModel},
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func calendarPolicy(name string, limit int64, unit domain.CalendarUnit, loc *time.Location, anchor time.Time) domain.Policy {
	return domain.Policy{Name: name, Limit: limit, Period: &domain.Calendar{Unit: unit, Location: loc, Anchor: anchor}}.WithDefaults()
}

// calendarSetup is setup at start, and reports whether the store decides calendar periods; when it does not, it
// checks the refusal (an invalid rule that records nothing, in a check, a batch and a hold) first.
func calendarSetup(t *testing.T, newStore NewStore, start time.Time) (domain.BucketStore, *clocktest.Clock, context.Context, bool) {
	t.Helper()
	s, clock, ctx := setup(t, newStore)
	clock.Set(start)
	p := calendarPolicy("probe", 1, domain.CalendarDay, time.UTC, time.Time{})
	r := domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: 1}
	d, err := s.Decide(ctx, r)
	if err != nil {
		t.Fatalf("a calendar check is an error, not an invalid rule: %v", err)
	}
	if d.Status == domain.StatusOK {
		if !d.Allowed || d.Period != 24*time.Hour {
			t.Fatalf("a daily quota's first check: %+v", d)
		}
		return s, clock, ctx, true
	}
	if d.Status != domain.StatusInvalidRule || d.Allowed {
		t.Fatalf("a store that does not decide calendar periods answered %+v, want StatusInvalidRule", d)
	}
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{r}, true)
	if err == nil && (len(ds) != 1 || ds[0].Status != domain.StatusInvalidRule) {
		t.Fatalf("a calendar check in a batch: %+v", ds)
	}
	hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: domain.OpAcquire, ID: "h"})
	if err == nil && (hd.Status == domain.HoldOK && hd.Decision.Allowed) {
		t.Fatalf("a calendar hold was acquired: %+v", hd)
	}
	fixed := rule(domain.FixedWindow, 1, time.Hour)
	if d := decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: fixed}); !d.Allowed {
		t.Fatalf("the refused calendar checks recorded units: %+v", d)
	}
	return s, clock, ctx, false
}

// testCalendarMonthly: the "done when" on the store: a monthly quota anchored on the 31st in
// America/New_York resets at midnight New York time on the 31st or the month's last day, through a year, DST
// changes included; at each boundary's last microsecond the key is spent with reset_after 1 µs, at the boundary
// all of the limit is back, reset_after the whole period.
func testCalendarMonthly(t *testing.T, newStore NewStore) {
	ny := zone(t, "America/New_York")
	first := time.Date(2026, 1, 31, 0, 0, 0, 0, ny)
	s, clock, ctx, decides := calendarSetup(t, newStore, first)
	if !decides {
		t.Skip("the store refuses calendar periods (checked: an invalid rule, nothing recorded)")
	}
	p := calendarPolicy("monthly", 3, domain.CalendarMonth, ny, first)
	var boundaries []time.Time
	for m := time.January; m <= time.December+3; m++ {
		y, mm := 2026+int(m-1)/12, (m-1)%12+1
		last := time.Date(y, mm+1, 0, 0, 0, 0, 0, time.UTC).Day()
		boundaries = append(boundaries, time.Date(y, mm, min(31, last), 0, 0, 0, 0, ny))
	}
	for i := 0; i+1 < len(boundaries); i++ {
		length := boundaries[i+1].Sub(boundaries[i])
		clock.Set(boundaries[i])
		d := decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "acct", Rule: p.Rule(), Cost: 3})
		if !d.Allowed || d.Remaining != 0 || d.ResetAfter != length || d.Period != length {
			t.Fatalf("at %s: %+v, want all 3 admitted, reset_after = period = %s", boundaries[i], d, length)
		}
		clock.Set(boundaries[i+1].Add(-time.Microsecond))
		d = decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "acct", Rule: p.Rule(), Cost: 1})
		if d.Allowed || d.ResetAfter != time.Microsecond || d.RetryAfter != time.Microsecond {
			t.Fatalf("1 µs before %s: %+v, want denied, 1 µs to the reset", boundaries[i+1], d)
		}
	}
}

// testCalendarDST: daily quotas on the days DST starts and ends in three zones (23, 25, 23.5 and 24.5 hours).
func testCalendarDST(t *testing.T, newStore NewStore) {
	s, clock, ctx, decides := calendarSetup(t, newStore, epoch)
	if !decides {
		t.Skip("the store refuses calendar periods (checked: an invalid rule, nothing recorded)")
	}
	for i, c := range []struct {
		zone   string
		day    time.Time // a noon of the day, in the zone
		length time.Duration
	}{
		{"America/New_York", time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC), 23 * time.Hour},
		{"America/New_York", time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), 25 * time.Hour},
		{"Europe/London", time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC), 23 * time.Hour},
		{"Europe/London", time.Date(2026, 10, 25, 12, 0, 0, 0, time.UTC), 25 * time.Hour},
		{"Australia/Lord_Howe", time.Date(2026, 4, 5, 12, 0, 0, 0, time.UTC), 24*time.Hour + 30*time.Minute},
		{"Australia/Lord_Howe", time.Date(2026, 10, 4, 12, 0, 0, 0, time.UTC), 23*time.Hour + 30*time.Minute},
	} {
		loc := zone(t, c.zone)
		noon := time.Date(c.day.Year(), c.day.Month(), c.day.Day(), 12, 0, 0, 0, loc)
		p := calendarPolicy(fmt.Sprint("daily", i), 2, domain.CalendarDay, loc, time.Time{})
		start := time.Date(noon.Year(), noon.Month(), noon.Day(), 0, 0, 0, 0, loc)
		end := start.Add(c.length)
		r := domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: 2}
		clock.Set(noon)
		if d := decide(t, ctx, s, r); !d.Allowed || d.Period != c.length || d.ResetAfter != end.Sub(noon) {
			t.Fatalf("%s %s: %+v, want a day of %s ending at %s", c.zone, noon, d, c.length, end)
		}
		clock.Set(end.Add(-time.Millisecond))
		if d := decide(t, ctx, s, r); d.Allowed || d.ResetAfter != time.Millisecond {
			t.Fatalf("%s: the day's last ms: %+v", c.zone, d)
		}
		clock.Set(end)
		if d := decide(t, ctx, s, r); !d.Allowed || d.ResetAfter != d.Period {
			t.Fatalf("%s: the next day's start: %+v", c.zone, d)
		}
	}
}

// testCalendarModel drives the store and domain.Bucket with the same random checks (steps of seconds to days) on
// calendar policies in three zones, with changes of period, zone, anchor and between a period and a window (with
// the floor the policy stores set) on the way: identical decisions.
func testCalendarModel(t *testing.T, newStore NewStore) {
	s, clock, ctx, decides := calendarSetup(t, newStore, time.Date(2026, 2, 20, 0, 0, 0, 0, time.UTC))
	if !decides {
		t.Skip("the store refuses calendar periods (checked: an invalid rule, nothing recorded)")
	}
	zones := []*time.Location{zone(t, "America/New_York"), zone(t, "Europe/London"), zone(t, "Australia/Lord_Howe")}
	units := []domain.CalendarUnit{domain.CalendarDay, domain.CalendarWeek, domain.CalendarMonth}
	rng := rand.New(rand.NewPCG(7, 24))
	draw := func(name string, limit int64) domain.Policy {
		if rng.IntN(4) == 0 {
			return domain.Policy{Name: name, Limit: limit, Window: time.Duration(1+rng.IntN(36)) * time.Hour, Algorithm: domain.FixedWindow}.WithDefaults()
		}
		loc := zones[rng.IntN(len(zones))]
		anchor := time.Date(2024, 1+time.Month(rng.IntN(12)), 28+rng.IntN(4), rng.IntN(4), 30*rng.IntN(2), 0, 0, loc)
		return calendarPolicy(name, limit, units[rng.IntN(len(units))], loc, anchor)
	}
	policies := []domain.Policy{draw("a", 3), draw("b", 7), draw("c", 1000)}
	type pk struct{ p, k string }
	ref := map[pk]*domain.Bucket{}
	for step := 0; step < 500; step++ {
		switch rng.IntN(3) {
		case 0:
			clock.Advance(time.Duration(rng.Int64N(int64(36 * time.Hour))))
		default:
			clock.Advance(time.Duration(rng.IntN(600_000)) * time.Millisecond)
		}
		now := clock.Now().UnixMicro()
		i := rng.IntN(len(policies))
		if rng.IntN(20) == 0 {
			old := policies[i]
			next := draw(old.Name, old.Limit)
			next.Generation, next.Floor = old.Generation, old.Floor
			if domain.CountingChanged(old, next) {
				next.Floor = domain.NextFloor(old, now)
			}
			policies[i] = next
		}
		p := policies[i]
		key := fmt.Sprint("k", rng.IntN(3))
		cost := rng.Int64N(min(p.Limit, 4) + 1)
		r := domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule(), Cost: cost}
		b := ref[pk{p.Name, key}]
		if b == nil {
			b = &domain.Bucket{}
			ref[pk{p.Name, key}] = b
		}
		want(t, fmt.Sprintf("step %d at %s (%s %v)", step, clock.Now(), p.Name, p.Period), decide(t, ctx, s, r), b.Decide(now, r.Rule, cost))
	}
}

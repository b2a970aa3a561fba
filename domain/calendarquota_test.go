package domain

import (
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // the zones these tests name, whatever the host has
)

// Calendar quotas (a fixed_window policy with a Period): the step against hand-written boundaries and against a
// brute-force model, across month ends, leap days and DST changes.

func calendarPolicy(t *testing.T, limit int64, unit CalendarUnit, zone, anchor string) Policy {
	t.Helper()
	loc := mustZone(t, zone)
	var a time.Time
	if anchor != "" {
		var err error
		if a, err = time.ParseInLocation("2006-01-02 15:04:05", anchor, loc); err != nil {
			t.Fatal(err)
		}
	}
	p := Policy{Name: "q", Limit: limit, Period: &Calendar{Unit: unit, Location: loc, Anchor: a}}.WithDefaults()
	if err := p.Validate(""); err != nil {
		t.Fatal(err)
	}
	return p
}

// wallIn is the instant of a wall clock in loc that no DST change skips or repeats (midnight in New York).
func wallIn(loc *time.Location, y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// The "done when": a monthly quota anchored on the 31st in America/New_York resets at midnight New York
// time on the 31st, or on the month's last day when it is shorter (Feb 28, Apr 30, ...), through a year and into
// the next, DST changes (March 8 and November 1, 2026) included. At each boundary: the period before is spent
// until the last microsecond, with reset_after exactly 1 µs; at the boundary all of the limit is back, with
// reset_after the whole period (whose length, Decision.Period, is the civil month's: 29 days minus an hour in the
// March period, 31 days plus an hour across November 1).
func TestMonthlyQuotaAnchoredOnThe31stInNewYork(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	p := calendarPolicy(t, 3, CalendarMonth, "America/New_York", "2026-01-31 00:00:00")
	r := p.Rule()
	boundaries := []time.Time{
		wallIn(ny, 2026, 1, 31), wallIn(ny, 2026, 2, 28), wallIn(ny, 2026, 3, 31), wallIn(ny, 2026, 4, 30),
		wallIn(ny, 2026, 5, 31), wallIn(ny, 2026, 6, 30), wallIn(ny, 2026, 7, 31), wallIn(ny, 2026, 8, 31),
		wallIn(ny, 2026, 9, 30), wallIn(ny, 2026, 10, 31), wallIn(ny, 2026, 11, 30), wallIn(ny, 2026, 12, 31),
		wallIn(ny, 2027, 1, 31), wallIn(ny, 2027, 2, 28), wallIn(ny, 2027, 3, 31),
	}
	var b Bucket
	for i := 0; i+1 < len(boundaries); i++ {
		start, end := boundaries[i].UnixMicro(), boundaries[i+1].UnixMicro()
		length := boundaries[i+1].Sub(boundaries[i])
		d := b.Decide(start, r, 3)
		if !d.Allowed || d.Remaining != 0 || d.ResetAfter != length || d.Period != length {
			t.Fatalf("at boundary %s: %+v, want all 3 admitted, reset_after = period = %s", boundaries[i], d, length)
		}
		d = b.Decide(end-1, r, 1)
		if d.Allowed || d.ResetAfter != time.Microsecond || d.RetryAfter != time.Microsecond || d.Period != length {
			t.Fatalf("1 µs before %s: %+v, want denied with 1 µs to the reset", boundaries[i+1], d)
		}
	}
	if got, want := boundaries[2].Sub(boundaries[1]), 31*24*time.Hour-time.Hour; got != want {
		t.Fatalf("Feb 28 to Mar 31 across the spring change: %s, want %s", got, want)
	}
	if got, want := boundaries[10].Sub(boundaries[9]), 30*24*time.Hour+time.Hour; got != want {
		t.Fatalf("Oct 31 to Nov 30 across the autumn change: %s, want %s", got, want)
	}
}

// A month anchored on the 29th resets on February 29th in a leap year and on the 28th otherwise; one anchored on
// the 30th at 01:30 in Europe/London (a wall clock the March change skips on the last Sunday of March) resets at
// 02:30 BST when the 30th is that Sunday.
func TestMonthlyQuotaLeapDaysAndSkippedAnchors(t *testing.T) {
	utc := time.UTC
	r := calendarPolicy(t, 1, CalendarMonth, "UTC", "2027-01-29 00:00:00").Rule()
	for _, c := range []struct{ at, start, end time.Time }{
		{time.Date(2027, 2, 28, 12, 0, 0, 0, utc), time.Date(2027, 2, 28, 0, 0, 0, 0, utc), time.Date(2027, 3, 29, 0, 0, 0, 0, utc)},
		{time.Date(2027, 2, 27, 12, 0, 0, 0, utc), time.Date(2027, 1, 29, 0, 0, 0, 0, utc), time.Date(2027, 2, 28, 0, 0, 0, 0, utc)},
		{time.Date(2028, 2, 28, 12, 0, 0, 0, utc), time.Date(2028, 1, 29, 0, 0, 0, 0, utc), time.Date(2028, 2, 29, 0, 0, 0, 0, utc)},
		{time.Date(2028, 2, 29, 0, 0, 0, 0, utc), time.Date(2028, 2, 29, 0, 0, 0, 0, utc), time.Date(2028, 3, 29, 0, 0, 0, 0, utc)},
	} {
		var b Bucket
		d := b.Decide(c.at.UnixMicro(), r, 1)
		if !d.Allowed || d.ResetAfter != c.end.Sub(c.at) || d.Period != c.end.Sub(c.start) {
			t.Fatalf("at %s: %+v, want the period [%s, %s)", c.at, d, c.start, c.end)
		}
	}
	london := mustZone(t, "Europe/London")
	r = calendarPolicy(t, 1, CalendarMonth, "Europe/London", "2025-12-30 01:30:00").Rule()
	// March 30, 2025 was the last Sunday of March: 01:00 GMT became 02:00 BST, so 01:30 did not exist that day.
	before := time.Date(2025, 3, 30, 0, 59, 0, 0, time.UTC) // 00:59 GMT
	var b Bucket
	d := b.Decide(before.UnixMicro(), r, 1)
	want := time.Date(2025, 3, 30, 1, 30, 0, 0, time.UTC) // 02:30 BST: the gap's wall clock under GMT
	if !d.Allowed || d.ResetAfter != want.Sub(before) {
		t.Fatalf("before the skipped anchor: %+v, want the period to end at %s (%s)", d, want, want.In(london))
	}
}

// A daily quota's period is the civil day: 23 hours on a spring-forward day, 25 on a fall-back day (23.5 and
// 24.5 in Australia/Lord_Howe, whose clocks move by 30 minutes), 24 otherwise, in three zones (and more).
func TestDailyQuotaAcrossDSTChanges(t *testing.T) {
	for _, c := range []struct {
		zone   string
		y      int
		m      time.Month
		d      int
		length time.Duration
	}{
		{"America/New_York", 2026, 3, 8, 23 * time.Hour},
		{"America/New_York", 2026, 11, 1, 25 * time.Hour},
		{"America/New_York", 2026, 11, 2, 24 * time.Hour},
		{"Europe/London", 2026, 3, 29, 23 * time.Hour},
		{"Europe/London", 2026, 10, 25, 25 * time.Hour},
		{"Australia/Lord_Howe", 2026, 4, 5, 24*time.Hour + 30*time.Minute},
		{"Australia/Lord_Howe", 2026, 10, 4, 23*time.Hour + 30*time.Minute},
		{"America/Santiago", 2026, 9, 6, 23 * time.Hour}, // the change is at midnight: the day starts at 01:00
		{"Asia/Kolkata", 2026, 3, 8, 24 * time.Hour},
	} {
		loc := mustZone(t, c.zone)
		r := calendarPolicy(t, 2, CalendarDay, c.zone, "").Rule()
		noon := time.Date(c.y, c.m, c.d, 12, 0, 0, 0, loc)
		start, end := r.Period.Bounds(noon)
		if end.Sub(start) != c.length || wallOf(start, loc).Day() != c.d {
			t.Fatalf("%s %d-%02d-%02d: period [%s, %s), want one civil day of %s", c.zone, c.y, c.m, c.d, start, end, c.length)
		}
		var b Bucket
		if n := decideN(&b, start.UnixMicro(), r, 3); n != 2 {
			t.Fatalf("%s: %d admitted of a daily 2", c.zone, n)
		}
		d := b.Decide(end.UnixMicro()-1, r, 1)
		if d.Allowed || d.Period != c.length || d.ResetAfter != time.Microsecond {
			t.Fatalf("%s: the day's last µs: %+v", c.zone, d)
		}
		if n := decideN(&b, end.UnixMicro(), r, 3); n != 2 {
			t.Fatalf("%s: %d admitted at the next day's start, want 2", c.zone, n)
		}
	}
}

// calendarModel is the brute force: the units admitted per period (by the period's start), and the period of an
// instant from Calendar.Bounds (itself held to a minute scan by calendar_test.go).
type calendarModel struct{ used map[int64]int64 }

func (m *calendarModel) decide(now int64, r Rule, cost int64) Decision {
	s, e := r.Period.Bounds(time.UnixMicro(now))
	start, end := s.UnixMicro(), e.UnixMicro()
	used := m.used[start]
	need := max(cost, 1)
	d := Decision{Limit: r.Limit, ResetAfter: micros(end - now), Period: micros(end - start)}
	if used+need <= r.Limit {
		d.Allowed, d.Remaining = true, r.Limit-used-need
		m.used[start] = used + cost
		return d
	}
	d.Remaining, d.RetryAfter = r.Limit-used, d.ResetAfter
	return d
}

// Random checks at random steps (seconds to weeks) in several zones and units, with anchors at wall clocks DST
// changes skip or repeat: every field of every decision equals the model's.
func TestCalendarQuotaMatchesTheModel(t *testing.T) {
	anchors := []string{"2026-01-31 00:00:00", "2026-02-29 02:30:00", "2025-11-02 01:30:00", "2024-02-29 23:59:59", ""}
	for seed := uint64(0); seed < 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		zone := calendarZones[rng.IntN(len(calendarZones))]
		unit := []CalendarUnit{CalendarDay, CalendarWeek, CalendarMonth}[rng.IntN(3)]
		anchor := anchors[rng.IntN(len(anchors))]
		if anchor == "2026-02-29 02:30:00" {
			anchor = "2028-02-29 02:30:00"
		}
		r := calendarPolicy(t, int64(1+rng.IntN(5)), unit, zone, anchor).Rule()
		m := &calendarModel{used: map[int64]int64{}}
		var b Bucket
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() + rng.Int64N(int64(30*24*time.Hour/time.Microsecond))
		for step := 0; step < 600; step++ {
			switch rng.IntN(4) {
			case 0:
				now += rng.Int64N(int64(time.Hour / time.Microsecond))
			case 1:
				now += rng.Int64N(int64(r.Window / time.Microsecond / 4))
			default:
				now += rng.Int64N(1_000_000)
			}
			cost := rng.Int64N(r.Limit + 1)
			got, want := b.Decide(now, r, cost), m.decide(now, r, cost)
			if got != want {
				t.Fatalf("seed %d step %d (%s %s from %q) at %s cost %d:\n got %+v\nwant %+v", seed, step, unit, zone, anchor,
					time.UnixMicro(now).In(r.Period.Location), cost, got, want)
			}
		}
	}
}

// Changing the period, zone or anchor (or between a window and a period) keeps the units still counting: they
// count until the period (window) that admitted them ends, carried into the new rule's current period when a
// check records; a changed calendar raises the floor.
func TestCalendarChangesKeepUnits(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	monthly := calendarPolicy(t, 5, CalendarMonth, "America/New_York", "2026-01-31 00:00:00")
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, ny).UnixMicro()
	var b Bucket
	if n := decideN(&b, at, monthly.Rule(), 4); n != 4 {
		t.Fatalf("monthly admitted %d of 4", n)
	}
	// Another anchor: the units admitted in the old period (ending Mar 31) still count in the new one ([Feb 15,
	// Mar 15)), carried into it by the first check that records.
	moved := calendarPolicy(t, 5, CalendarMonth, "America/New_York", "2026-01-15 00:00:00")
	if !CountingChanged(monthly, moved) {
		t.Fatal("a moved anchor is not a change of counting")
	}
	moved.Floor = NextFloor(monthly, at+1)
	if n := decideN(&b, at+2, moved.Rule(), 5); n != 1 {
		t.Fatalf("after the anchor moved: %d admitted with 4 of 5 counting, want 1", n)
	}
	// The carried units count until that period ends (Mar 15), as a fixed window's carried into a new window do.
	if n := decideN(&b, time.Date(2026, 3, 14, 23, 0, 0, 0, ny).UnixMicro(), moved.Rule(), 1); n != 0 {
		t.Fatalf("before the new period's end: %d admitted", n)
	}
	if n := decideN(&b, time.Date(2026, 3, 15, 0, 0, 0, 0, ny).UnixMicro(), moved.Rule(), 6); n != 5 {
		t.Fatalf("at the new period's start: %d admitted, want 5", n)
	}

	// The other way: the old period (ending Mar 15) ends before the new one (Mar 31): its units still count in
	// the new one until Mar 15, then, carried by a check that records, until Mar 31.
	var e Bucket
	at = time.Date(2026, 3, 10, 9, 0, 0, 0, ny).UnixMicro()
	if n := decideN(&e, at, moved.Rule(), 4); n != 4 {
		t.Fatalf("anchored on the 15th: %d admitted of 4", n)
	}
	later := monthly
	later.Floor = NextFloor(moved, at+1)
	if n := decideN(&e, at+2, later.Rule(), 5); n != 1 {
		t.Fatalf("anchored on the 31st after the 15th: %d admitted with 4 of 5 counting, want 1", n)
	}
	if n := decideN(&e, time.Date(2026, 3, 20, 0, 0, 0, 0, ny).UnixMicro(), later.Rule(), 1); n != 0 {
		t.Fatalf("after Mar 15, the carried units count until Mar 31: %d admitted", n)
	}
	var lazy Bucket // no check records between the change and Mar 15: the units end with their period
	decideN(&lazy, at, moved.Rule(), 4)
	if d := lazy.Decide(at+3, later.Rule(), 0); d.Remaining != 0 {
		t.Fatalf("a peek under the new anchor sees %d remaining, want 0 (4 of 5 counting, a peek asks for 1)", d.Remaining)
	}
	if n := decideN(&lazy, time.Date(2026, 3, 16, 0, 0, 0, 0, ny).UnixMicro(), later.Rule(), 6); n != 5 {
		t.Fatalf("after the old period ended: %d admitted, want 5", n)
	}

	// Period to window and back: the period's units count in the hour while it lasts.
	var c Bucket
	at = time.Date(2026, 6, 1, 10, 30, 0, 0, ny).UnixMicro()
	daily := calendarPolicy(t, 3, CalendarDay, "America/New_York", "")
	decideN(&c, at, daily.Rule(), 3)
	hourly := Policy{Name: "q", Limit: 3, Window: time.Hour, Algorithm: FixedWindow}.WithDefaults()
	hourly.Floor = NextFloor(daily, at+1)
	if n := decideN(&c, at+2, hourly.Rule(), 3); n != 0 {
		t.Fatalf("hourly after a spent daily quota: %d admitted", n)
	}
	// A peek and a denial converted nothing: the day's units still end with the day under the daily rule.
	back := daily
	back.Floor = NextFloor(hourly, at+3)
	if n := decideN(&c, at+4, back.Rule(), 1); n != 0 {
		t.Fatalf("daily again: %d admitted", n)
	}
	if n := decideN(&c, time.Date(2026, 6, 2, 0, 0, 0, 0, ny).UnixMicro(), back.Rule(), 4); n != 3 {
		t.Fatalf("the next day: %d admitted, want 3", n)
	}
}

// Validation: a period is refused with any algorithm but fixed_window, and with a window; the zone and anchor are
// checked.
func TestCalendarPolicyValidation(t *testing.T) {
	loc := mustZone(t, "Europe/Paris")
	for _, c := range []struct {
		p     Policy
		field string
	}{
		{Policy{Name: "a", Limit: 1, Algorithm: SlidingLog, Period: &Calendar{Unit: CalendarDay, Location: loc}}, "period"},
		{Policy{Name: "a", Limit: 1, Algorithm: TokenBucket, Period: &Calendar{Unit: CalendarMonth}}, "period"},
		{Policy{Name: "a", Limit: 1, Window: time.Hour, Period: &Calendar{Unit: CalendarWeek}}, "window"},
		{Policy{Name: "a", Limit: 1, Period: &Calendar{Unit: "year"}}, "period"},
		{Policy{Name: "a", Limit: 1, Period: &Calendar{Unit: CalendarDay, Anchor: time.Date(2026, 1, 1, 0, 0, 0, 5e8, loc)}}, "period"},
	} {
		err := c.p.WithDefaults().Validate("")
		if err == nil || !hasField(err, c.field) {
			t.Fatalf("%+v: %v, want a problem with %s", c.p, err, c.field)
		}
	}
	if _, err := LoadTimeZone("Local"); err == nil {
		t.Fatal("Local was accepted as a time zone")
	}
	if _, err := LoadTimeZone("Mars/Olympus"); err == nil {
		t.Fatal("an unknown zone was accepted")
	}
	if loc, err := LoadTimeZone(""); err != nil || loc != time.UTC {
		t.Fatalf("the default zone: %v %v", loc, err)
	}
}

func hasField(err error, field string) bool {
	v, ok := err.(*ValidationError)
	if !ok {
		return false
	}
	for _, f := range v.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}

// The memo of a Calendar's last period (a step's fast path) never answers for another calendar: a copy whose
// anchor was changed after WithDefaults shares the memo but finds its own period; backwards in time too.
func TestCalendarMemoFollowsItsCalendar(t *testing.T) {
	p := calendarPolicy(t, 1, CalendarMonth, "UTC", "2026-01-31 00:00:00")
	at := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC).UnixMicro()
	if _, end := p.Period.periodMicros(at); end != time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC).UnixMicro() {
		t.Fatalf("end %s", time.UnixMicro(end))
	}
	copied := *p.Period
	copied.Anchor = time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	if _, end := copied.periodMicros(at); end != time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC).UnixMicro() {
		t.Fatalf("the copy with another anchor got the period ending %s", time.UnixMicro(end))
	}
	earlier := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	if start, _ := p.Period.periodMicros(earlier); start != time.Date(2025, 11, 30, 0, 0, 0, 0, time.UTC).UnixMicro() {
		t.Fatalf("an earlier instant: start %s", time.UnixMicro(start))
	}
}

// Holds on a calendar quota: a refund gives units back within the period the hold was acquired in, an excess is
// recorded past the limit; after the period's boundary the count starts again and a late settle changes nothing.
func TestCalendarHolds(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	r := calendarPolicy(t, 10, CalendarMonth, "America/New_York", "2026-01-31 00:00:00").Rule()
	var b Bucket
	now := time.Date(2026, 4, 29, 12, 0, 0, 0, ny).UnixMicro() // the period ends April 30, 00:00
	if _, _, st := b.Acquire(now, r, "job", 8, 0); st != HoldOK {
		t.Fatalf("acquire: %d", st)
	}
	if _, od, st := b.Settle(now+1, r, "job", 5); st != HoldOK || od != 0 {
		t.Fatalf("settle 5: %d overdraft %d", st, od)
	}
	if d := b.Decide(now+2, r, 5); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after 3 given back, 5 more: %+v", d)
	}
	if d, _, st := b.Acquire(now+3, r, "more", 1, 0); st != HoldOK || d.Allowed {
		t.Fatalf("acquire with 10 of 10 counted: %d %+v, want a denial", st, d)
	}
	var c Bucket
	c.Acquire(now, r, "big", 6, 0)
	if _, od, st := c.Settle(now+1, r, "big", 13); st != HoldOK || od != 3 {
		t.Fatalf("settle 13 of a 6 hold: %d overdraft %d, want 3", st, od)
	}
	var late Bucket
	late.Acquire(now, r, "x", 9, 0)
	next := time.Date(2026, 4, 30, 0, 0, 0, 0, ny).UnixMicro()
	if _, od, st := late.Settle(next+1, r, "x", 12); st != HoldOK || od != 0 {
		t.Fatalf("an excess after the period ended: %d overdraft %d", st, od)
	}
	if d := late.Decide(next+2, r, 10); !d.Allowed {
		t.Fatalf("the new period's whole limit: %+v", d)
	}
}

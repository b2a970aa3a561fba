package domain

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Calendar periods (shared/design.md, "Overrides and calendar quotas"; issue 24): a quota counted per civil day,
// week or month in an IANA time zone, from an anchor (a billing instant). This file is the period arithmetic
// (which civil period holds an instant, where it starts and ends); a fixed_window policy with a Period counts per
// calendar period instead of per epoch-aligned window (fixedwindow.go, Policy.Period).
//
// Boundaries fall at the anchor's wall-clock time of day: every civil day (day), every seventh civil day from the
// anchor's date (week: the anchor's weekday), or every month on the anchor's day of the month, clamped to the
// month's last day when the month is shorter (a quota anchored on the 31st resets on April 30th, then on May
// 31st). Boundary k is numbered from the anchor's (k = 0) by civil dates, never by adding durations, so a civil
// day is 23, 24 or 25 hours long across DST changes. A wall-clock time that a DST change skips (02:30 on a
// spring-forward night) is the instant the offset before the change gives, which falls after the gap (03:30); a
// wall-clock time that a change repeats (01:30 on a fall-back night) is the earlier of its two instants. Go's
// time.Date leaves both choices unspecified, so civilInstant makes them.

// CalendarUnit is the length of a calendar period.
type CalendarUnit string

const (
	CalendarDay   CalendarUnit = "day"
	CalendarWeek  CalendarUnit = "week"
	CalendarMonth CalendarUnit = "month"
)

// Calendar is a calendar period: Unit in Location, from Anchor (an instant whose wall clock in Location gives
// every boundary's time of day, and the weekday or the day of the month).
type Calendar struct {
	Unit     CalendarUnit
	Location *time.Location
	Anchor   time.Time
	// memo remembers the last period a step found (Bounds costs about 2 µs, a step 40 ns), shared by the
	// copies of one policy's Calendar; Policy.WithDefaults gives each Calendar its own. Nil: none kept.
	memo *periodMemo
}

// periodMemo is a Calendar's last period, with the calendar it was computed for (a copy of a Calendar whose
// fields were changed afterwards never takes another's period).
type periodMemo struct{ p atomic.Pointer[memoEntry] }

type memoEntry struct {
	unit       CalendarUnit
	loc        *time.Location
	anchor     time.Time
	start, end int64
}

// Validate reports a unit outside day, week and month, a missing location, or an anchor that is not a whole
// second.
func (c Calendar) Validate() error {
	switch c.Unit {
	case CalendarDay, CalendarWeek, CalendarMonth:
	default:
		return fmt.Errorf("must be one of day, week, month, got %q", c.Unit)
	}
	if c.Location == nil {
		return fmt.Errorf("needs a time zone")
	}
	if c.Anchor.Nanosecond() != 0 {
		return fmt.Errorf("the anchor must be a whole second, got %s", c.Anchor.Format(time.RFC3339Nano))
	}
	return nil
}

// DefaultAnchor is the anchor of a period given none: midnight of Monday 1 January 2001 in loc, so days start at
// midnight, weeks on Mondays and months on the 1st.
func DefaultAnchor(loc *time.Location) time.Time {
	return civilInstant(2001, time.January, 1, 0, 0, 0, 0, loc)
}

// Bound is the longest a period of c's unit can last (its policy's Window, which the expiry rule, hold deadlines
// and a change of policy use): 2 days, 8 days or 32 days. A civil day lasts 23 to 25 hours across a DST change
// (a few zones' historic changes moved clocks by more, never by a day), a week 7 days ± 1 hour, a month 28 to 31
// days ± 1 hour.
func (c Calendar) Bound() time.Duration {
	switch c.Unit {
	case CalendarMonth:
		return 32 * 24 * time.Hour
	case CalendarWeek:
		return 8 * 24 * time.Hour
	default:
		return 2 * 24 * time.Hour
	}
}

// Equal reports whether c and o are the same periods: the same unit, the same zone (by name) and the same anchor
// instant.
func (c *Calendar) Equal(o *Calendar) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Unit == o.Unit && c.Location.String() == o.Location.String() && c.Anchor.Equal(o.Anchor)
}

// LoadTimeZone loads an IANA time zone by name ("" is UTC). "Local" is refused: the host's zone would make
// replicas in different zones count different periods. The binary embeds Go's time zone database (main imports
// time/tzdata), so a container without tzdata loads every zone.
func LoadTimeZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if name == "Local" {
		return nil, fmt.Errorf("must be an IANA time zone such as Europe/Paris or UTC, not Local")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown IANA time zone %q", name)
	}
	return loc, nil
}

// periodMicros is Bounds at now (unix µs), in unix µs, from the memo when it holds now's period.
func (c *Calendar) periodMicros(now int64) (start, end int64) {
	if c.memo != nil {
		if e := c.memo.p.Load(); e != nil && e.start <= now && now < e.end && e.unit == c.Unit && e.loc == c.Location && e.anchor.Equal(c.Anchor) {
			return e.start, e.end
		}
	}
	s, e := c.Bounds(time.UnixMicro(now))
	start, end = s.UnixMicro(), e.UnixMicro()
	if c.memo != nil {
		c.memo.p.Store(&memoEntry{unit: c.Unit, loc: c.Location, anchor: c.Anchor, start: start, end: end})
	}
	return start, end
}

// Bounds returns the period holding t: start ≤ t < end. c must be valid.
func (c Calendar) Bounds(t time.Time) (start, end time.Time) {
	k := c.estimate(t)
	for c.Boundary(k).After(t) {
		k--
	}
	for !c.Boundary(k + 1).After(t) {
		k++
	}
	return c.Boundary(k), c.Boundary(k + 1)
}

// Boundary returns boundary k: the anchor's (k = 0) and the ones k periods after (k < 0: before) it.
func (c Calendar) Boundary(k int) time.Time {
	a := c.Anchor.In(c.Location)
	y, m, d := a.Date()
	switch c.Unit {
	case CalendarMonth:
		first := time.Date(y, m+time.Month(k), 1, 0, 0, 0, 0, time.UTC) // normalises the month
		y, m = first.Year(), first.Month()
		d = min(d, daysIn(y, m))
	case CalendarWeek:
		d += 7 * k
	default:
		d += k
	}
	return civilInstant(y, m, d, a.Hour(), a.Minute(), a.Second(), a.Nanosecond(), c.Location)
}

// estimate is the number of a boundary near t (within one of the one Bounds wants).
func (c Calendar) estimate(t time.Time) int {
	a := c.Anchor.In(c.Location)
	l := t.In(c.Location)
	switch c.Unit {
	case CalendarMonth:
		return (l.Year()-a.Year())*12 + int(l.Month()-a.Month())
	case CalendarWeek:
		return floorDiv(dayNumber(l)-dayNumber(a), 7)
	default:
		return dayNumber(l) - dayNumber(a)
	}
}

// dayNumber numbers t's civil date (in t's location) by days.
func dayNumber(t time.Time) int {
	y, m, d := t.Date()
	return int(time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Unix() / 86400)
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// daysIn is the number of days of month m of year y.
func daysIn(y int, m time.Month) int { return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day() }

// civilInstant is the instant whose wall clock in loc reads the given civil time (the date may be out of range:
// it is normalised as time.Date does). Repeated by a DST change: the earlier instant. Skipped by one: the instant
// the offset in force before the change gives (after the gap, by its length). The offsets a day before and a day
// after are the two candidates, so at most one change of offset within a day of the wall clock is assumed (true
// of every zone's rules since 1970).
func civilInstant(y int, m time.Month, d, hh, mm, ss, ns int, loc *time.Location) time.Time {
	wall := time.Date(y, m, d, hh, mm, ss, ns, time.UTC)
	offsetAt := func(u time.Time) time.Duration {
		_, off := u.In(loc).Zone()
		return time.Duration(off) * time.Second
	}
	before, after := offsetAt(wall.Add(-24*time.Hour)), offsetAt(wall.Add(24*time.Hour))
	var best time.Time
	for _, off := range []time.Duration{before, after} {
		u := wall.Add(-off)
		if offsetAt(u) == off && (best.IsZero() || u.Before(best)) {
			best = u
		}
	}
	if best.IsZero() { // a gap: the offset before it
		best = wall.Add(-before)
	}
	return best.In(loc)
}

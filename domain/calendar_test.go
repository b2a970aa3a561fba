package domain

import (
	"math/rand/v2"
	"testing"
	"time"
)

var calendarZones = []string{"America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC"}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// wallOf is u's wall clock in loc, as a UTC time (comparable).
func wallOf(u time.Time, loc *time.Location) time.Time {
	l := u.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// resolveByScan is civilInstant by brute force, minute by minute around the wall clock: the first
// instant reading it; none (a gap): the wall clock minus the offset of the last instant reading earlier. (Offsets
// stay within ±14 h, so ±28 h holds every instant that can read the wall clock.)
func resolveByScan(wall time.Time, loc *time.Location) time.Time {
	_, o1 := wall.Add(-28 * time.Hour).In(loc).Zone()
	_, o2 := wall.Add(28 * time.Hour).In(loc).Zone()
	if o1 == o2 {
		// One offset all along (no zone changes it twice within two days): one instant reads the wall clock.
		return wall.Add(-time.Duration(o1) * time.Second)
	}
	var lastBefore time.Time
	for u := wall.Add(-28 * time.Hour); u.Before(wall.Add(28 * time.Hour)); u = u.Add(time.Minute) {
		w := wallOf(u, loc)
		if w.Equal(wall) {
			return u
		}
		if w.Before(wall) {
			lastBefore = u
		}
	}
	_, off := lastBefore.In(loc).Zone()
	return wall.Add(-time.Duration(off) * time.Second)
}

// civilInstant against the scan, on the days of two years near a change of offset (and a sample of the others) at
// a few times of day that DST changes skip or repeat
// somewhere (00:00 and 00:30 for Santiago, 01:30, 02:00, 02:30), in zones with 1 h, 30 min and no DST changes.
func TestCivilInstantMatchesTheScan(t *testing.T) {
	for _, name := range calendarZones {
		loc := mustZone(t, name)
		for day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() < 2028; day = day.AddDate(0, 0, 1) {
			_, o1 := day.Add(-48 * time.Hour).In(loc).Zone()
			_, o2 := day.Add(48 * time.Hour).In(loc).Zone()
			if o1 == o2 && day.YearDay()%29 != 0 {
				continue // no change of offset near: a sample of such days is enough
			}
			for _, hm := range [][2]int{{0, 0}, {0, 30}, {1, 30}, {2, 0}, {2, 30}} {
				wall := day.Add(time.Duration(hm[0])*time.Hour + time.Duration(hm[1])*time.Minute)
				got := civilInstant(wall.Year(), wall.Month(), wall.Day(), hm[0], hm[1], 0, 0, loc)
				if want := resolveByScan(wall, loc); !got.Equal(want) {
					t.Fatalf("%s %s: got %s, want %s", name, wall.Format("2006-01-02 15:04"), got, want)
				}
			}
		}
	}
}

// boundariesByWalk lists a calendar's boundaries from the anchor's on, walking civil dates one period at a time
// (a month's day clamped) and resolving each wall clock by the scan.
func boundariesByWalk(c Calendar, n int) []time.Time {
	a := c.Anchor.In(c.Location)
	out := make([]time.Time, 0, n)
	y, m, d := a.Date()
	for k := 0; k < n; k++ {
		var date time.Time
		switch c.Unit {
		case CalendarMonth:
			mm := time.Month(int(m) + k)
			yy := y + (int(mm)-1)/12
			mm = time.Month((int(mm)-1)%12 + 1)
			last := time.Date(yy, mm+1, 0, 0, 0, 0, 0, time.UTC).Day()
			date = time.Date(yy, mm, min(d, last), 0, 0, 0, 0, time.UTC)
		case CalendarWeek:
			date = time.Date(y, m, d, 0, 0, 0, 0, time.UTC).AddDate(0, 0, 7*k)
		default:
			date = time.Date(y, m, d, 0, 0, 0, 0, time.UTC).AddDate(0, 0, k)
		}
		wall := time.Date(date.Year(), date.Month(), date.Day(), a.Hour(), a.Minute(), 0, 0, time.UTC)
		out = append(out, resolveByScan(wall, c.Location))
	}
	return out
}

// Bounds against the walked boundaries, for random anchors (days 1-31, times of day DST changes touch) and random
// instants over the next two years, in every zone and unit.
func TestCalendarBoundsMatchTheWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 1))
	for _, name := range calendarZones {
		loc := mustZone(t, name)
		for _, unit := range []CalendarUnit{CalendarDay, CalendarWeek, CalendarMonth} {
			for range 4 {
				hm := [][2]int{{0, 0}, {0, 30}, {1, 30}, {2, 30}, {9, 0}, {23, 45}}[rng.IntN(6)]
				anchor := civilInstant(2026, time.Month(1+rng.IntN(12)), 1+rng.IntN(31), hm[0], hm[1], 0, 0, loc)
				c := Calendar{Unit: unit, Location: loc, Anchor: anchor}
				n := map[CalendarUnit]int{CalendarDay: 800, CalendarWeek: 120, CalendarMonth: 28}[unit]
				bs := boundariesByWalk(c, n)
				for i := 1; i < len(bs); i++ {
					if !bs[i].After(bs[i-1]) {
						t.Fatalf("%s %s from %s: boundaries %d and %d out of order: %s, %s", name, unit, anchor, i-1, i, bs[i-1], bs[i])
					}
				}
				span := bs[len(bs)-2].Sub(bs[0])
				for range 300 {
					at := bs[0].Add(time.Duration(rng.Int64N(int64(span))))
					i := 0
					for !bs[i+1].After(at) {
						i++
					}
					start, end := c.Bounds(at)
					if !start.Equal(bs[i]) || !end.Equal(bs[i+1]) {
						t.Fatalf("%s %s from %s at %s: got [%s, %s), want [%s, %s)", name, unit, anchor.Format(time.RFC3339), at.Format(time.RFC3339), start, end, bs[i], bs[i+1])
					}
				}
				// Boundaries themselves open their period; the instant before one closes the previous.
				for i := 1; i+1 < len(bs) && i < 40; i++ {
					if s, _ := c.Bounds(bs[i]); !s.Equal(bs[i]) {
						t.Fatalf("%s %s: a boundary %s is not its period's start (%s)", name, unit, bs[i], s)
					}
					if _, e := c.Bounds(bs[i].Add(-time.Nanosecond)); !e.Equal(bs[i]) {
						t.Fatalf("%s %s: the instant before %s ends at %s", name, unit, bs[i], e)
					}
				}
			}
		}
	}
}

// A monthly quota anchored on the 31st at 09:00 in New York: through a year it resets on each month's last day
// when the month is shorter, at 09:00 local whether EST or EDT.
func TestMonthlyQuotaAnchoredOnThe31st(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	c := Calendar{Unit: CalendarMonth, Location: ny, Anchor: time.Date(2026, 12, 31, 9, 0, 0, 0, ny)}
	want := []string{
		"2026-12-31T09:00:00-05:00", "2027-01-31T09:00:00-05:00", "2027-02-28T09:00:00-05:00",
		"2027-03-31T09:00:00-04:00", "2027-04-30T09:00:00-04:00", "2027-05-31T09:00:00-04:00",
		"2027-06-30T09:00:00-04:00", "2027-07-31T09:00:00-04:00", "2027-08-31T09:00:00-04:00",
		"2027-09-30T09:00:00-04:00", "2027-10-31T09:00:00-04:00", "2027-11-30T09:00:00-05:00",
		"2027-12-31T09:00:00-05:00", "2028-01-31T09:00:00-05:00", "2028-02-29T09:00:00-05:00",
	}
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, ny)
	for i := 1; i < len(want); i++ {
		start, end := c.Bounds(at)
		if start.Format(time.RFC3339) != want[i-1] || end.Format(time.RFC3339) != want[i] {
			t.Fatalf("period %d: [%s, %s), want [%s, %s)", i, start.Format(time.RFC3339), end.Format(time.RFC3339), want[i-1], want[i])
		}
		at = end
	}
	// A civil day across the spring change is 23 hours, across the autumn one 25.
	day := Calendar{Unit: CalendarDay, Location: ny, Anchor: time.Date(2027, 1, 1, 0, 0, 0, 0, ny)}
	for date, hours := range map[string]time.Duration{"2027-03-14": 23, "2027-11-07": 25, "2027-06-01": 24} {
		d, _ := time.ParseInLocation("2006-01-02", date, ny)
		s, e := day.Bounds(d.Add(12 * time.Hour))
		if e.Sub(s) != hours*time.Hour {
			t.Errorf("%s: a civil day of %s, want %dh", date, e.Sub(s), hours)
		}
	}
}

// FuzzCalendarBounds: for any zone of the list, unit, anchor and instant, the period holds the instant, starts and
// ends at consecutive boundaries, and is as long as its unit allows (a day 22-26 h, seven of them for a week, a
// month 27-32 days).
func FuzzCalendarBounds(f *testing.F) {
	f.Add(uint8(0), uint8(2), int64(1798700400), int64(1900000000))
	f.Add(uint8(3), uint8(0), int64(1775000000), int64(1775700000))
	f.Fuzz(func(t *testing.T, zone, unit uint8, anchorS, atS int64) {
		anchorS, atS = anchorS%4e9, atS%4e9 // 1843-2096: within the zone database's rules
		loc, err := time.LoadLocation(calendarZones[int(zone)%len(calendarZones)])
		if err != nil {
			t.Skip(err)
		}
		u := []CalendarUnit{CalendarDay, CalendarWeek, CalendarMonth}[int(unit)%3]
		c := Calendar{Unit: u, Location: loc, Anchor: time.Unix(anchorS, 0)}
		at := time.Unix(atS, 0)
		start, end := c.Bounds(at)
		if start.After(at) || !end.After(at) {
			t.Fatalf("%s: [%s, %s) does not hold %s", u, start, end, at)
		}
		if s, e := c.Bounds(start); !s.Equal(start) || !e.Equal(end) {
			t.Fatalf("%s: the period of its own start differs: [%s, %s) vs [%s, %s)", u, s, e, start, end)
		}
		bound := map[CalendarUnit][2]time.Duration{
			CalendarDay:   {22 * time.Hour, 26 * time.Hour},
			CalendarWeek:  {7*24*time.Hour - 2*time.Hour, 7*24*time.Hour + 2*time.Hour},
			CalendarMonth: {27 * 24 * time.Hour, 32 * 24 * time.Hour},
		}[u]
		lo, hi := bound[0], bound[1]
		if d := end.Sub(start); d < lo || d > hi {
			t.Fatalf("%s from %s at %s: a period of %s", u, c.Anchor, at, d)
		}
	})
}

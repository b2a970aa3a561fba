package domain

import "time"

// stepFixedWindow is fixed_window's step (shared/design.md): windows start at floor(now / window) × window from
// the Unix epoch, as envoyproxy/ratelimit counts, or, for a rule with a Period, are the calendar periods
// (Calendar.Bounds at now: a civil day, week or month in the period's zone). The state is the newest admission's
// instant (a) and the units admitted in its window (f), with that window's length (w) or, for a calendar period,
// w = 0 and the instant the period ends (c); they count while that window (period) is the current one and the
// admission is after the floor. Decide steps a state written under another window or period through a conversion
// (fixedWindowUnits). reset_after is the time to the window's (period's) end, exact to the boundary; retry_after
// is reset_after when denied.
func stepFixedWindow(b *Bucket, now int64, r Rule, cost int64) Decision {
	limit := r.Limit
	need := max(cost, 1) // a peek reports what a cost-1 check would get
	var start, end, window int64
	if r.Period != nil {
		start, end = r.Period.periodMicros(now)
	} else {
		window = int64(r.Window / time.Microsecond)
		start = floorTo(now, window)
		end = start + window
	}
	var used int64
	// Its window's units, unless a change of policy had stopped them; a calendar count is the current period's
	// when it ends where that period does (current: it may have been admitted under an anchor that began later).
	if (window > 0 && b.a >= start || window == 0 && b.w == 0 && b.c == end) && b.a > r.Floor {
		used = b.f
	}
	d := Decision{Limit: limit, Allowed: used <= limit-need, ResetAfter: micros(end - now)}
	if window == 0 {
		d.Period = micros(end - start)
	}
	if d.Allowed {
		d.Remaining = limit - used - need
		if cost > 0 {
			b.a, b.f, b.w = max(b.a, now), used+cost, window
			if window == 0 {
				b.c = end
			}
		}
		return d
	}
	d.Remaining = max(limit-used, 0)
	d.RetryAfter = d.ResetAfter
	return d
}

// periodEnd is the end (unix µs) of r's calendar period holding now.
func periodEnd(r Rule, now int64) int64 {
	_, end := r.Period.periodMicros(now)
	return end
}

// fixedWindowUnits: the window's units, while the window (calendar period) that admitted them has not ended and
// its newest admission is after r's cutoff.
func fixedWindowUnits(b *Bucket, now int64, r Rule) (n, at int64) {
	if b.a > cutoff(now, r) && !fixedWindowEmpty(b, now, 0) {
		return b.f, b.a
	}
	return 0, 0
}

// holdFixedWindow counts the units in the current window (calendar period) of r, as admitted at now: held at
// their own instant, units recorded before the window began would not count at all.
func holdFixedWindow(b *Bucket, now int64, r Rule, n, _ int64) {
	b.a, b.f, b.w = now, n, int64(r.Window/time.Microsecond)
	if r.Period != nil {
		b.w, b.c = 0, periodEnd(r, now)
	}
}

// fixedWindowEmpty: the window that admitted the units (b.w, whatever window the caller last decided with), or
// the calendar period (ending at b.c when b.w is 0), has ended. The Redis key's expiry and the Postgres row's are
// the same instant.
func fixedWindowEmpty(b *Bucket, now, _ int64) bool {
	if b.w == 0 {
		return now >= b.c
	}
	return b.a < floorTo(now, b.w)
}

// adjustFixedWindow changes the count by delta while h's window is still the current one (and the state's): the
// units of a window that ended count nothing, so a refund or an excess there changes nothing. The count never
// goes below 0. A calendar count (w = 0) is adjusted alike while it is the count of r's period holding now and h
// was recorded in that period (only now's period is needed, which a store without a time zone database gets
// from the boundaries its check carries); under a window rule it is not adjusted.
func adjustFixedWindow(b *Bucket, now int64, r Rule, h *holdRecord, delta int64) {
	if b.w == 0 {
		if r.Period == nil {
			return
		}
		start, end := r.Period.periodMicros(now)
		if b.c != end || h.At < start {
			return
		}
		b.f = max(b.f+delta, 0)
		return
	}
	start := floorTo(now, b.w)
	if h.At < start || b.a < start {
		return
	}
	b.f = max(b.f+delta, 0)
}

// forceFixedWindow adds n units to the current window (calendar period) of r, whatever the limit.
func forceFixedWindow(b *Bucket, now int64, r Rule, n int64) {
	if r.Period != nil {
		end := periodEnd(r, now)
		if b.alg != FixedWindow || b.w != 0 || b.c != end {
			b.a, b.f = now, 0
		}
		b.a, b.f, b.w, b.c = max(b.a, now), b.f+n, 0, end
		return
	}
	window := int64(r.Window / time.Microsecond)
	if b.alg != FixedWindow || b.a < floorTo(now, window) {
		b.a, b.f = now, 0
	}
	b.a, b.f, b.w = max(b.a, now), b.f+n, window
}

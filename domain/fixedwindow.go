package domain

import "time"

// stepFixedWindow is fixed_window's step (shared/design.md): windows start at floor(now / window) × window from
// the Unix epoch, as envoyproxy/ratelimit counts. The state is the newest admission's instant (a), the units
// admitted in its window (f) and that window's length (w); they count while that instant is in the current window
// and after the floor. Decide steps a state written under another window through a conversion (fixedWindowUnits).
// reset_after is the time to the window's end; retry_after is reset_after when denied.
func stepFixedWindow(b *Bucket, now int64, r Rule, cost int64) Decision {
	limit, window := r.Limit, int64(r.Window/time.Microsecond)
	need := max(cost, 1) // a peek reports what a cost-1 check would get
	start := floorTo(now, window)
	var used int64
	if b.a >= start && b.a > r.Floor { // its window's units, unless a change of policy had stopped them
		used = b.f
	}
	d := Decision{Limit: limit, Allowed: used <= limit-need, ResetAfter: micros(start + window - now)}
	if d.Allowed {
		d.Remaining = limit - used - need
		if cost > 0 {
			b.a, b.f, b.w = max(b.a, now), used+cost, window
		}
		return d
	}
	d.Remaining = max(limit-used, 0)
	d.RetryAfter = d.ResetAfter
	return d
}

// fixedWindowUnits: the window's units, while the window that admitted them (of b.w) has not ended and its
// newest admission is after r's cutoff.
func fixedWindowUnits(b *Bucket, now int64, r Rule) (n, at int64) {
	if b.a > cutoff(now, r) && !fixedWindowEmpty(b, now, 0) {
		return b.f, b.a
	}
	return 0, 0
}

// holdFixedWindow counts the units in the current window of r, as admitted at now: held at their own instant,
// units recorded before the window began would not count at all.
func holdFixedWindow(b *Bucket, now int64, r Rule, n, _ int64) {
	b.a, b.f, b.w = now, n, int64(r.Window/time.Microsecond)
}

// fixedWindowEmpty: the window that admitted the units (b.w, whatever window the caller last decided with) has
// ended. The Redis key's expiry and the Postgres row's are the same instant.
func fixedWindowEmpty(b *Bucket, now, _ int64) bool { return b.a < floorTo(now, b.w) }

// adjustFixedWindow changes the count by delta while h's window is still the current one (and the state's): the
// units of a window that ended count nothing, so a refund or an excess there changes nothing. The count never
// goes below 0.
func adjustFixedWindow(b *Bucket, now int64, _ Rule, h *holdRecord, delta int64) {
	start := floorTo(now, b.w)
	if h.At < start || b.a < start {
		return
	}
	b.f = max(b.f+delta, 0)
}

// forceFixedWindow adds n units to the current window of r, whatever the limit.
func forceFixedWindow(b *Bucket, now int64, r Rule, n int64) {
	window := int64(r.Window / time.Microsecond)
	if b.alg != FixedWindow || b.a < floorTo(now, window) {
		b.a, b.f = now, 0
	}
	b.a, b.f, b.w = max(b.a, now), b.f+n, window
}

package domain

// fixedWindow is fixed_window's step (shared/design.md): windows start at floor(now / window) × window from the
// Unix epoch, as envoyproxy/ratelimit counts. The state is the newest admission's instant (a) and the units
// admitted in its window (f); they count while that instant is in the current window and after the floor.
// reset_after is the time to the window's end; retry_after is reset_after when denied.
func (b *Bucket) fixedWindow(now, cost, limit, window, floor int64) Decision {
	need := max(cost, 1) // a peek reports what a cost-1 check would get
	start := floorTo(now, window)
	var used int64
	if b.alg == FixedWindow && b.a >= start && b.a > floor {
		used = b.f
	}
	d := Decision{Limit: limit, Allowed: used <= limit-need, ResetAfter: micros(start + window - now)}
	if d.Allowed {
		d.Remaining = limit - used - need
		if cost > 0 {
			b.a, b.f = max(b.a, now), used+cost
		}
		return d
	}
	d.Remaining = max(limit-used, 0)
	d.RetryAfter = d.ResetAfter
	return d
}

package domain

import "math/bits"

// tokenBucket is token_bucket's step (GCRA, shared/design.md): limit is the bucket size, refilled fully in one
// window, so the emission interval is T = window / limit µs, kept exact as a fraction of 1/limit µs. At now:
// t0 = max(tat, now), next = t0 + cost × T, allowed = next - now ≤ window; if allowed (and not a peek) tat =
// next. Every rounding errs toward denial: retry_after and reset_after round up to whole microseconds, remaining
// rounds down.
func (b *Bucket) tokenBucket(now, cost, limit, window int64) Decision {
	need := max(cost, 1) // a peek reports what a cost-1 check would get
	a, f := b.a, b.f
	if b.alg == TokenBucket && b.c != limit && f > 0 {
		// The limit changed: re-express the fraction over the new limit, rounded up (later, so stricter).
		f = mulDivCeil(f, limit, b.c)
		a, f = a+f/limit, f%limit
	}
	if a < now || (a == now && f == 0) {
		a, f = now, 0
	}
	q, r := mulDivRem(need, window, limit)
	na, nf := a+q, f+r
	if nf >= limit {
		na, nf = na+1, nf-limit
	}
	d := Decision{Limit: limit, Allowed: na-now < window || (na-now == window && nf == 0)}
	if d.Allowed {
		d.Remaining = fitUnits(now+window-na, nf, limit, window)
		d.ResetAfter = micros(ceilMicros(na-now, nf))
		if cost > 0 {
			b.a, b.f, b.c = na, nf, limit
		}
		return d
	}
	d.Remaining = fitUnits(now+window-a, f, limit, window)
	d.ResetAfter = micros(ceilMicros(a-now, f))
	d.RetryAfter = micros(ceilMicros(na-window-now, nf))
	return d
}

// fitUnits is how many whole units fit in a slack of d - f/limit µs: floor((d × limit - f) / window), at least 0.
func fitUnits(d, f, limit, window int64) int64 {
	if d < 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(d), uint64(limit))
	lo, borrow := bits.Sub64(lo, uint64(f), 0)
	hi, borrow = bits.Sub64(hi, 0, borrow)
	if borrow != 0 || hi >= uint64(window) {
		// Negative (the slack is less than the fraction) or beyond any limit: clamp.
		if borrow != 0 {
			return 0
		}
		return limit
	}
	n, _ := bits.Div64(hi, lo, uint64(window))
	return min(int64(n), limit)
}

// ceilMicros rounds d + f/limit µs (0 ≤ f) up to whole microseconds.
func ceilMicros(d, f int64) int64 {
	if f > 0 {
		return d + 1
	}
	return d
}

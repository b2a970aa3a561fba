package domain

import (
	"math/bits"
	"time"
)

// stepTokenBucket is token_bucket's step (GCRA, shared/design.md): limit is the bucket size, refilled fully in
// one window, so the emission interval is T = window / limit µs, kept exact as a fraction of 1/limit µs. At now:
// t0 = max(tat, now), next = t0 + cost × T, allowed = next - now ≤ window; if allowed (and not a peek) tat =
// next. Every rounding errs toward denial: retry_after and reset_after round up to whole microseconds, remaining
// rounds down. b holds state written at r's rate (Decide converts any other first), and an admission records the
// rate with it.
func stepTokenBucket(b *Bucket, now int64, r Rule, cost int64) Decision {
	limit, window := r.Limit, int64(r.Window/time.Microsecond)
	need := max(cost, 1) // a peek reports what a cost-1 check would get
	a, f := b.a, b.f
	if a < now || (a == now && f == 0) {
		a, f = now, 0
	}
	q, rem := mulDivRem(need, window, limit)
	na, nf := a+q, f+rem
	if nf >= limit {
		na, nf = na+1, nf-limit
	}
	d := Decision{Limit: limit, Allowed: na-now < window || (na-now == window && nf == 0)}
	if d.Allowed {
		d.Remaining = fitUnits(now+window-na, nf, limit, window)
		d.ResetAfter = micros(ceilMicros(na-now, nf))
		if cost > 0 {
			b.a, b.f, b.c, b.w = na, nf, limit, window
		}
		return d
	}
	d.Remaining = fitUnits(now+window-a, f, limit, window)
	d.ResetAfter = micros(ceilMicros(a-now, f))
	d.RetryAfter = micros(ceilMicros(na-window-now, nf))
	return d
}

// tokenBucketUnits: the units still outstanding at now, counted at the rate that wrote them (c units per w µs),
// never at a new rate: ceil(d × c / w) for the time d until tat, rounded up to a whole microsecond; recorded at
// now.
func tokenBucketUnits(b *Bucket, now int64, _ Rule) (n, at int64) {
	if b.a < now || (b.a == now && b.f == 0) {
		return 0, 0
	}
	d := b.a - now
	if b.f > 0 {
		d++
	}
	return mulDivCeil(d, b.c, max(b.w, 1)), now
}

// maxTatLead bounds how far past now a conversion puts tat (2^43 µs, about 101 days, past any window): units
// that far out deny whatever their exact number, and every runtime keeps tat below 2^53.
const maxTatLead = 1 << 43

// holdTokenBucket makes the bucket hold n units emitted back to back from now at r's rate: tat = now + n × window
// / limit, exactly (not capped by the limit: more units than the limit deny until they have drained).
func holdTokenBucket(b *Bucket, now int64, r Rule, n, _ int64) {
	window := int64(r.Window / time.Microsecond)
	q, rem := mulDivRem(n, window, r.Limit)
	if q > maxTatLead {
		q, rem = maxTatLead, 0
	}
	b.a, b.f, b.c, b.w = now+q, rem, r.Limit, window
}

func tokenBucketEmpty(b *Bucket, now, _ int64) bool { return b.a < now || (b.a == now && b.f == 0) }

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

// adjustTokenBucket moves tat by delta units' emission time at the rate that wrote the state (c per w µs), as if
// the hold had been for its amount plus delta from the start. Had it been smaller, every later tat would be
// earlier by the same time, until an admission found the bucket refilled past the difference (tat - t below
// it): from then on the two histories meet. So a refund moves tat back by min(|delta| × w / c, m), where m is
// the least lag any admission since the acquire found (noteLag keeps it): exactly what the smaller hold would
// have left. An excess moves tat later by all of it: never less than a larger hold from the start would have.
func adjustTokenBucket(b *Bucket, _ int64, _ Rule, h *holdRecord, delta int64) {
	if delta > 0 {
		q, rem := mulDivRem(delta, b.w, b.c)
		b.a, b.f = b.a+q, b.f+rem
		if b.f >= b.c {
			b.a, b.f = b.a+1, b.f-b.c
		}
		return
	}
	q, rem := mulDivRem(-delta, b.w, b.c)
	if h.mq < q || (h.mq == q && h.mr < rem) {
		q, rem = h.mq, h.mr
	}
	b.a, b.f = b.a-q, b.f-rem
	if b.f < 0 {
		b.a, b.f = b.a-1, b.f+b.c
	}
}

// noteLag lowers every open token_bucket hold's bound m to the lag an admission at now finds, (a - now) + f/c
// before it records, at least 0 (see adjustTokenBucket). Decide calls it for an admission on a current token
// bucket with hold records.
func (b *Bucket) noteLag(now, a, f int64) {
	lq, lr := a-now, f
	if lq < 0 || (lq == 0 && lr == 0) {
		lq, lr = 0, 0
	}
	for i := range b.holds.recs {
		h := &b.holds.recs[i]
		if h.alg == TokenBucket && !h.Settled && (lq < h.mq || (lq == h.mq && lr < h.mr)) {
			h.mq, h.mr = lq, lr
		}
	}
}

// forceTokenBucket emits n units from max(tat, now) at r's rate, whatever the limit.
func forceTokenBucket(b *Bucket, now int64, r Rule, n int64) {
	window := int64(r.Window / time.Microsecond)
	if b.alg != TokenBucket || b.a < now || (b.a == now && b.f == 0) {
		b.a, b.f = now, 0
	}
	q, rem := mulDivRem(n, window, r.Limit)
	b.a, b.f, b.c, b.w = b.a+q, b.f+rem, r.Limit, window
	if b.f >= b.c {
		b.a, b.f = b.a+1, b.f-b.c
	}
}

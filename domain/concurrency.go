package domain

import "slices"

// concurrency (shared/design.md, "Holds"): limit is the units held at once, window the longest a hold lives
// unrenewed. Its state is nothing but the key's hold records (hold.go): a record of the state's generation counts
// its Amount from acquisition until released (settled to 0) or until its deadline (Expires) passes, so a crashed
// holder's units come back at expiry and never before. A check of cost > 0 has nothing to release and is refused
// (StatusInvalidRule here; the Limiter answers it as a validation error before any store sees it); a peek reports
// the units held. A change between concurrency and a window algorithm is refused by the policy lifecycle
// (ValidateChange): the two count different things.

// concurrencyHeld is the units the records of r's generation hold at now.
func concurrencyHeld(b *Bucket, now int64, r Rule) int64 {
	var n int64
	for _, h := range b.records() {
		if h.gen == r.Generation && holding(&h, now) {
			n += h.Amount
		}
	}
	return n
}

// holding: a concurrency record still holds its units at now (not released, deadline not passed).
func holding(h *holdRecord, now int64) bool { return !h.Settled && now < h.Expires }

// stepConcurrency decides an acquisition of cost units (Acquire) or a peek (cost 0) at now under r. It records
// nothing: Acquire records the hold. remaining is what is left after the decision (a peek: after a cost-1
// acquisition); reset_after the time until every unit held is back (the latest deadline); retry_after, when
// denied, the time until enough deadlines have passed for cost to fit.
func stepConcurrency(b *Bucket, now int64, r Rule, cost int64) Decision {
	held := concurrencyHeld(b, now, r)
	need := max(cost, 1)
	d := Decision{Limit: r.Limit, Allowed: held <= r.Limit-need}
	var last int64
	for _, h := range b.records() {
		if h.gen == r.Generation && holding(&h, now) {
			last = max(last, h.Expires)
		}
	}
	if last > now {
		d.ResetAfter = micros(last - now)
	}
	if d.Allowed {
		d.Remaining = r.Limit - held - need
		return d
	}
	d.Remaining = max(r.Limit-held, 0)
	// Deadlines in order: the first at which the units still held leave room for cost.
	type due struct{ at, n int64 }
	var dues []due
	for _, h := range b.records() {
		if h.gen == r.Generation && holding(&h, now) {
			dues = append(dues, due{h.Expires, h.Amount})
		}
	}
	slices.SortFunc(dues, func(x, y due) int { return int(min(max(x.at-y.at, -1), 1)) })
	left := held
	for _, x := range dues {
		left -= x.n
		if left <= r.Limit-need {
			d.RetryAfter = micros(x.at - now)
			break
		}
	}
	return d
}

// concurrencyUnits: the units held, as recorded at now (what a window algorithm would hold after a change that
// the lifecycle refuses; kept exact so that a state reached anyway loses nothing).
func concurrencyUnits(b *Bucket, now int64, r Rule) (n, at int64) {
	return concurrencyHeld(b, now, Rule{Generation: b.gen}), now
}

// holdConcurrency: units recorded by checks are not held by anyone and cannot be released; a concurrency state
// holds only hold records, which a conversion keeps (Decide). Nothing to do.
func holdConcurrency(*Bucket, int64, Rule, int64, int64) {}

// concurrencyEmpty: the state is its records, which Bucket.Empty keeps while they matter.
func concurrencyEmpty(*Bucket, int64, int64) bool { return true }

// adjustConcurrency: the units are the record's Amount, which Settle sets: nothing else to change.
func adjustConcurrency(*Bucket, int64, Rule, *holdRecord, int64) {}

// forceConcurrency: an excess is the record's Amount too.
func forceConcurrency(*Bucket, int64, Rule, int64) {}

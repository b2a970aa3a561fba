package domain

import "time"

// This file holds the step of the two windowed-log algorithms, sliding_log and sliding_window: both keep the
// runs of admitted units with the instant each was recorded at, and differ only in that instant (the check's own
// instant, or that instant rounded up to the resolution). See shared/design.md.

func stepSlidingLog(b *Bucket, now int64, r Rule, cost int64) Decision {
	return b.log.decide(now, now, cost, r.Limit, int64(r.Window/time.Microsecond), cutoff(now, r))
}

func stepSlidingWindow(b *Bucket, now int64, r Rule, cost int64) Decision {
	return b.log.decide(now, ceilTo(now, int64(r.Resolution/time.Microsecond)), cost, r.Limit, int64(r.Window/time.Microsecond), cutoff(now, r))
}

// logUnits: the units recorded after the cutoff, at the newest entry's instant.
func logUnits(b *Bucket, now int64, r Rule) (n, at int64) { return b.log.counting(cutoff(now, r)) }

func holdSlidingLog(b *Bucket, _ int64, _ Rule, n, at int64) { b.log.record(at, n) }

// holdSlidingWindow records the units at their instant rounded up to the resolution, as the step records.
func holdSlidingWindow(b *Bucket, _ int64, r Rule, n, at int64) {
	b.log.record(ceilTo(at, int64(r.Resolution/time.Microsecond)), n)
}

func logEmpty(b *Bucket, now, w int64) bool {
	b.log.expire(now - w)
	return b.log.n == 0
}

// entry is a run of units recorded at one instant. cum counts the units recorded by this log up to and including
// this entry, so the units in any suffix of the log are a subtraction and the instant at which enough units have
// left the window is a binary search: O(log n) per decision, never O(limit).
type entry struct {
	at  int64 // unix microseconds
	cum int64
}

// windowLog is the windowed log of one (policy, key): the runs of units recorded inside the window. The zero value is
// an empty log. A windowLog is not safe for concurrent use: stores serialise access per key.
//
// Entries live in a ring buffer that only grows (by doubling) when more distinct instants are live than it holds,
// so after warm-up a decision allocates nothing. There are at most limit entries under sliding_log (each holds ≥ 1
// unit) and at most window/resolution + 1 under sliding_window (instants are multiples of the resolution inside
// one window).
type windowLog struct {
	ring []entry
	head int   // index of the oldest live entry
	n    int   // live entries
	base int64 // cum of the newest entry that has left the window (units before head)
}

// rebaseAt bounds cum: when base passes it, every live entry is rebased to base 0. A key that is never idle for a
// whole window would otherwise add up to 2^53 units per admission forever and overflow.
const rebaseAt = 1 << 60

func (l *windowLog) at(i int) *entry { return &l.ring[(l.head+i)&(len(l.ring)-1)] }

// expire drops entries that no longer count: an entry at t counts while t > cut (the expiry rule's cutoff, see
// cutoff in algorithm.go).
func (l *windowLog) expire(cut int64) {
	for l.n > 0 {
		e := l.at(0)
		if e.at > cut {
			break
		}
		l.base = e.cum
		l.head = (l.head + 1) & (len(l.ring) - 1)
		l.n--
	}
	if l.n == 0 {
		l.head, l.base = 0, 0 // empty: restart the counters so they stay small
		return
	}
	if l.base > rebaseAt {
		for i := 0; i < l.n; i++ {
			l.at(i).cum -= l.base
		}
		l.base = 0
	}
}

func (l *windowLog) used() int64 {
	if l.n == 0 {
		return 0
	}
	return l.at(l.n-1).cum - l.base
}

// decide is the step of both log algorithms at now (unix µs): units count while their instant is after cut (the
// expiry rule's cutoff: max(now - window, floor)); an admitted cost is recorded at rec (now under sliding_log,
// now rounded up to the resolution under sliding_window; never before now). cost is in [0, limit]; 0 peeks: the
// decision a cost-1 check would get, nothing recorded. A denial records nothing.
func (l *windowLog) decide(now, rec, cost, limit, window, cut int64) Decision {
	l.expire(cut)
	peek := cost == 0
	if peek {
		cost = 1
	}
	used := l.used()
	d := Decision{Limit: limit, Allowed: used <= limit-cost}
	if d.Allowed {
		// Admitted (or, for a peek, would be): the newest unit is the one recorded at rec, or a later one.
		newest := rec
		if l.n > 0 {
			newest = max(newest, l.at(l.n-1).at)
		}
		d.Remaining = limit - used - cost
		d.ResetAfter = micros(newest + window - now)
		if !peek {
			l.record(rec, cost)
		}
		return d
	}
	// Denied, so units are held. used can exceed limit after a policy's limit was lowered: its history is kept,
	// so nothing is left.
	d.Remaining = max(limit-used, 0)
	d.ResetAfter = micros(l.at(l.n-1).at + window - now)
	d.RetryAfter = micros(l.retryAt(cost, limit) + window - now)
	return d
}

// retryAt finds the oldest entry j whose departure leaves room for cost, units after j (cum_last - cum_j) ≤
// limit - cost, and returns its instant (it leaves the window at that instant + window). The log is not empty:
// a check is only denied when units are held.
func (l *windowLog) retryAt(cost, limit int64) int64 {
	target := l.at(l.n-1).cum - (limit - cost)
	lo, hi := 0, l.n-1 // cum is increasing; the last entry always satisfies cum >= target
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if l.at(mid).cum >= target {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return l.at(lo).at
}

func (l *windowLog) record(at, cost int64) {
	if l.n > 0 {
		last := l.at(l.n - 1)
		if last.at >= at { // same instant (or a clock that stepped back): one run of units, at the later instant
			last.cum += cost
			return
		}
		l.push(entry{at: at, cum: last.cum + cost})
		return
	}
	l.push(entry{at: at, cum: l.base + cost})
}

func (l *windowLog) push(e entry) {
	if l.n == len(l.ring) {
		l.grow()
	}
	*l.at(l.n) = e
	l.n++
}

func (l *windowLog) grow() {
	size := 2 * len(l.ring)
	if size == 0 {
		size = 2
	}
	ring := make([]entry, size)
	for i := 0; i < l.n; i++ {
		ring[i] = *l.at(i)
	}
	l.ring, l.head = ring, 0
}

// logMark is a point to roll a Log back to, for all-or-nothing multi-checks.
type logMark struct {
	had     bool  // the log held an entry
	lastAt  int64 // that entry's instant
	lastCum int64 // and its cumulative count
}

func (l *windowLog) mark() logMark {
	if l.n == 0 {
		return logMark{}
	}
	last := l.at(l.n - 1)
	return logMark{had: true, lastAt: last.at, lastCum: last.cum}
}

// rollback undoes what decide recorded since m was taken: entries appended after it (they are newer than its
// last entry, since decide merges units at the newest instant into that entry) and units added to its last
// entry. Entries that expired since m stay expired: they no longer count either way.
func (l *windowLog) rollback(m logMark) {
	for l.n > 0 && (!m.had || l.at(l.n-1).at > m.lastAt) {
		l.n--
	}
	if l.n > 0 {
		l.at(l.n - 1).cum = m.lastCum
		return
	}
	l.head, l.base = 0, 0
}

// counting reports the units recorded after cut and the newest entry's instant, changing nothing.
func (l *windowLog) counting(cut int64) (n, newest int64) {
	lo, hi := 0, l.n // the first entry recorded after cut: instants increase
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if l.at(mid).at > cut {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo == l.n {
		return 0, 0
	}
	before := l.base
	if lo > 0 {
		before = l.at(lo - 1).cum
	}
	return l.at(l.n-1).cum - before, l.at(l.n - 1).at
}

// ceilTo rounds t up to a multiple of res (both µs, t ≥ 0, res ≥ 1).
func ceilTo(t, res int64) int64 {
	if r := t % res; r != 0 {
		return t + (res - r)
	}
	return t
}

// micros converts microseconds to a Duration.
func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// adjustLog changes the run of units recorded at h's instant by delta (hold.go): the entry at exactly h.At and
// every later cumulative count move by delta, so the units before it are untouched and those after it keep their
// own counts; an entry left with no unit is removed (a log holds at most one entry per unit). An entry no longer
// in the log has left the window: its units count nothing either way, and nothing changes. A refund never takes
// more than the entry holds.
func adjustLog(b *Bucket, _ int64, _ Rule, h *holdRecord, delta int64) {
	l := &b.log
	lo, hi := 0, l.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if l.at(mid).at >= h.At {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo == l.n || l.at(lo).at != h.At {
		return
	}
	prev := l.base
	if lo > 0 {
		prev = l.at(lo - 1).cum
	}
	units := l.at(lo).cum - prev
	delta = max(delta, -units)
	for i := lo; i < l.n; i++ {
		l.at(i).cum += delta
	}
	if units+delta > 0 {
		return
	}
	for i := lo; i+1 < l.n; i++ { // the entry holds nothing now: drop it
		*l.at(i) = *l.at(i + 1)
	}
	l.n--
	if l.n == 0 {
		l.head, l.base = 0, 0
	}
}

// forceLog records n units at now (sliding_window: rounded up to the resolution), whatever the limit.
func forceLog(b *Bucket, now int64, r Rule, n int64) {
	at := now
	if r.Algorithm == SlidingWindow {
		at = ceilTo(now, int64(r.Resolution/time.Microsecond))
	}
	b.log.record(at, n)
}

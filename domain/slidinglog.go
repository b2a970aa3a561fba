package domain

import "time"

// Decision is the answer to one check. A denial is a Decision with Allowed false, never an error.
type Decision struct {
	Allowed bool
	Limit   int64
	// Remaining is limit - used - (cost if admitted): what is left in the window after this decision.
	Remaining int64
	// ResetAfter is the time until every unit in the window (this one included, if admitted) has left it.
	ResetAfter time.Duration
	// RetryAfter is 0 when admitted; otherwise the time until enough units leave the window for this cost to fit.
	RetryAfter time.Duration
}

// entry is a run of units admitted at one instant. cum counts the units admitted by this key's log up to and
// including this entry, so the units in any suffix of the log are a subtraction and the instant at which enough
// units have left the window is a binary search: O(log n) per decision, never O(limit).
type entry struct {
	at  int64 // unix nanoseconds
	cum int64
}

// Log is the exact sliding log of one (policy, key): the instants of admitted units inside the window. The zero
// value is an empty log. A Log is not safe for concurrent use: stores serialise access per key.
//
// Entries live in a ring buffer that only grows (by doubling) when more distinct instants are live than it holds,
// so after warm-up a decision allocates nothing. There are at most limit entries, since each holds ≥ 1 unit.
type Log struct {
	ring []entry
	head int   // index of the oldest live entry
	n    int   // live entries
	base int64 // cum of the newest entry that has left the window (units before head)
}

// Mark is a point to roll a Log back to, for all-or-nothing multi-checks.
type Mark struct {
	had     bool  // the log held an entry
	lastAt  int64 // that entry's instant
	lastCum int64 // and its cumulative count
}

// Len reports the number of live entries (distinct instants) held. For tests and memory accounting.
func (l *Log) Len() int { return l.n }

// Empty reports whether no admitted unit is left in the window ending at now.
func (l *Log) Empty(now int64, window time.Duration) bool {
	l.expire(now, window)
	return l.n == 0
}

func (l *Log) at(i int) *entry { return &l.ring[(l.head+i)&(len(l.ring)-1)] }

// expire drops entries that left the window (now - window, now]: an entry at t is live while t > now - window.
func (l *Log) expire(now int64, window time.Duration) {
	cutoff := now - int64(window)
	for l.n > 0 {
		e := l.at(0)
		if e.at > cutoff {
			return
		}
		l.base = e.cum
		l.head = (l.head + 1) & (len(l.ring) - 1)
		l.n--
	}
	// Empty: restart the counters so they stay small.
	l.head, l.base = 0, 0
}

func (l *Log) used() int64 {
	if l.n == 0 {
		return 0
	}
	return l.at(l.n-1).cum - l.base
}

// Decide applies one check at instant now (unix nanoseconds) with the policy's limit and window, recording cost
// units if they fit. cost must be in [0, limit] (the Limiter validates it): cost 0 is a peek, which returns
// exactly the decision a cost-1 check would get and records nothing. Time must not run backwards for a log;
// callers pass max(now, last instant) if their clock can step back (see Decide's use in adapters/memory).
func (l *Log) Decide(now int64, cost, limit int64, window time.Duration) Decision {
	l.expire(now, window)
	peek := cost == 0
	if peek {
		cost = 1
	}
	used := l.used()
	d := Decision{Limit: limit, Allowed: used+cost <= limit}
	if d.Allowed {
		d.Remaining = limit - used - cost
		// Admitted (or, for a peek, would be): the newest unit is at now, so the window is whole again after
		// one full window.
		d.ResetAfter = window
		if !peek {
			l.record(now, cost)
		}
		return d
	}
	// used can exceed limit after a policy's limit was lowered: its history is kept, so nothing is left.
	d.Remaining = max(limit-used, 0)
	d.ResetAfter = time.Duration(l.at(l.n-1).at + int64(window) - now)
	d.RetryAfter = l.retryAfter(now, cost, limit, window)
	return d
}

// retryAfter finds the oldest entry j whose departure leaves room for cost: units after j, cum_last - cum_j, must
// be ≤ limit - cost. It leaves the window at at_j + window.
func (l *Log) retryAfter(now int64, cost, limit int64, window time.Duration) time.Duration {
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
	return time.Duration(l.at(lo).at + int64(window) - now)
}

func (l *Log) record(now, cost int64) {
	if l.n > 0 {
		last := l.at(l.n - 1)
		if last.at >= now { // same instant (or a clock that stepped back): one run of units
			last.cum += cost
			return
		}
		l.push(entry{at: now, cum: last.cum + cost})
		return
	}
	l.push(entry{at: now, cum: l.base + cost})
}

func (l *Log) push(e entry) {
	if l.n == len(l.ring) {
		l.grow()
	}
	*l.at(l.n) = e
	l.n++
}

func (l *Log) grow() {
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

// Mark returns the current end of the log, for Rollback.
func (l *Log) Mark() Mark {
	if l.n == 0 {
		return Mark{}
	}
	last := l.at(l.n - 1)
	return Mark{had: true, lastAt: last.at, lastCum: last.cum}
}

// Rollback undoes what Decide recorded since m was taken: entries appended after it (they are newer than its last
// entry, since Decide merges units at the newest instant into that entry) and units added to its last entry.
// Entries that expired since m stay expired: they are out of the window either way.
func (l *Log) Rollback(m Mark) {
	for l.n > 0 && (!m.had || l.at(l.n-1).at > m.lastAt) {
		l.n--
	}
	if l.n > 0 {
		l.at(l.n - 1).cum = m.lastCum
		return
	}
	l.head, l.base = 0, 0
}

// Newest returns the instant of the newest live entry, or 0 when the log is empty.
func (l *Log) Newest() int64 {
	if l.n == 0 {
		return 0
	}
	return l.at(l.n - 1).at
}

// Package topkeys answers "who is being limited?" (issue 25) in fixed memory: per policy, the keys with the most
// denials and the most admissions over the recent interval, counted by this replica.
//
// Each (policy, outcome) keeps a Space-Saving summary (Metwally, Agrawal and El Abbadi, 2005) of Capacity
// counters: a key already counted adds 1; a new key takes a free counter, or else replaces the key with the
// smallest count c and starts at c + 1 with error c. So a reported count n with error e bounds the key's true
// count t: n - e ≤ t ≤ n, every error is at most N / Capacity for N decisions in the summary, and every key whose
// true count exceeds N / Capacity is reported. Memory is Capacity counters per (policy, outcome, epoch), for at
// most MaxPolicies policies, whatever the number of distinct keys.
//
// "Recent" is two epochs of Interval each: the summaries of the current and the previous epoch are merged when
// read (counts and errors added; a key missing from a full summary is given that summary's smallest count, as
// count and as error, since its true count there may be that high), so a report covers between one and two
// intervals. Counts are this replica's only: on a shared store every replica sees only the decisions it made, and
// summing other replicas' summaries would need them to talk to each other (the operator reads each replica, or
// sums sluice_top_denied_keys over them). Keys become metric labels only through that optional metric
// (adapters/metrics), hashed or truncated.
package topkeys

import (
	"container/heap"
	"sort"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// Options configure a Tracker.
type Options struct {
	// Capacity is the number of counters per policy and outcome (default 64).
	Capacity int
	// Interval is an epoch's length (default 5 minutes): a report covers the last one to two intervals.
	Interval time.Duration
	// MaxPolicies bounds the policies tracked at once (default 1024); a decision of a further policy is not
	// counted (Dropped tells how many were not).
	MaxPolicies int
}

// By names what a report ranks keys by.
type By string

const (
	ByDenied  By = "denied"  // denials, shadow denials included (what the policy refused, or would have)
	ByAllowed By = "allowed" // admissions (degraded admissions excluded: the store did not decide them)
)

// Entry is one key of a report: Count over the report's interval, overestimated by at most Error.
type Entry struct {
	Key          string
	Count, Error int64
}

// Tracker is a domain.Observer that counts decisions per key and passes every observation on to Next. Safe for
// concurrent use.
type Tracker struct {
	next  domain.Observer
	clock domain.Clock
	o     Options

	mu       sync.Mutex
	epoch    int64 // the current epoch's number: clock time / Interval
	current  map[string]*pair
	previous map[string]*pair
	dropped  int64
}

// pair is one policy's summaries in one epoch.
type pair struct{ denied, allowed *summary }

// New returns a Tracker passing observations on to next (nil: none).
func New(next domain.Observer, clock domain.Clock, o Options) *Tracker {
	if o.Capacity <= 0 {
		o.Capacity = 64
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Minute
	}
	if o.MaxPolicies <= 0 {
		o.MaxPolicies = 1024
	}
	if next == nil {
		next = domain.NopObserver{}
	}
	t := &Tracker{next: next, clock: clock, o: o, current: map[string]*pair{}, previous: map[string]*pair{}}
	t.epoch = t.epochAt(clock.Now())
	return t
}

func (t *Tracker) epochAt(now time.Time) int64 { return now.UnixNano() / int64(t.o.Interval) }

// rotate moves to now's epoch; t.mu is held.
func (t *Tracker) rotate() {
	e := t.epochAt(t.clock.Now())
	switch {
	case e == t.epoch:
		return
	case e == t.epoch+1:
		t.previous, t.current = t.current, map[string]*pair{}
	default: // a whole epoch or more without a decision: both are old
		t.previous, t.current = map[string]*pair{}, map[string]*pair{}
	}
	t.epoch = e
}

// Decided implements domain.Observer: it counts key under policy's summary of o and passes the observation on.
func (t *Tracker) Decided(policy, key string, o domain.Outcome) {
	t.next.Decided(policy, key, o)
	var by By
	switch o {
	case domain.OutcomeDenied, domain.OutcomeShadowDenied:
		by = ByDenied
	case domain.OutcomeAllowed:
		by = ByAllowed
	default: // degraded and error answers were not decided by the store
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	p := t.current[policy]
	if p == nil {
		if len(t.current) >= t.o.MaxPolicies {
			t.dropped++
			return
		}
		p = &pair{}
		t.current[policy] = p
	}
	s := p.get(by)
	if s == nil {
		s = newSummary(t.o.Capacity)
		p.set(by, s)
	}
	s.add(key)
}

// StoreCall implements domain.Observer.
func (t *Tracker) StoreCall(op string, d time.Duration, err error) { t.next.StoreCall(op, d, err) }

// Top reports up to n keys of policy with the highest counts by by, over the current and previous epochs, highest
// first (ties by key), and the interval the report covers.
func (t *Tracker) Top(policy string, by By, n int) ([]Entry, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	var sums []*summary
	for _, epoch := range []map[string]*pair{t.previous, t.current} {
		if p := epoch[policy]; p != nil && p.get(by) != nil {
			sums = append(sums, p.get(by))
		}
	}
	merged := map[string]Entry{}
	for _, s := range sums {
		for _, c := range s.counters {
			merged[c.key] = Entry{Key: c.key}
		}
	}
	for _, s := range sums {
		var floor int64 // what a key missing from s may have had in it
		if len(s.counters) == s.capacity {
			floor = s.counters[0].count
		}
		for k, e := range merged {
			if c, ok := s.byKey[k]; ok {
				e.Count, e.Error = e.Count+c.count, e.Error+c.err
			} else {
				e.Count, e.Error = e.Count+floor, e.Error+floor
			}
			merged[k] = e
		}
	}
	out := make([]Entry, 0, len(merged))
	for _, e := range merged {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	since := t.clock.Now().Sub(time.Unix(0, (t.epoch-1)*int64(t.o.Interval)))
	return out, since
}

// Policies lists the policies with counts in the current or previous interval, sorted.
func (t *Tracker) Policies() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	seen := map[string]bool{}
	for _, epoch := range []map[string]*pair{t.previous, t.current} {
		for p := range epoch {
			seen[p] = true
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Dropped is the number of decisions not counted because MaxPolicies policies were tracked.
func (t *Tracker) Dropped() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropped
}

// Counters is the number of counters held now, over every policy, outcome and epoch (for the memory bound).
func (t *Tracker) Counters() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, epoch := range []map[string]*pair{t.previous, t.current} {
		for _, p := range epoch {
			for _, s := range []*summary{p.denied, p.allowed} {
				if s != nil {
					n += len(s.counters)
				}
			}
		}
	}
	return n
}

func (p *pair) get(by By) *summary {
	if by == ByDenied {
		return p.denied
	}
	return p.allowed
}

func (p *pair) set(by By, s *summary) {
	if by == ByDenied {
		p.denied = s
	} else {
		p.allowed = s
	}
}

// summary is one Space-Saving summary: at most capacity counters, a min-heap by count to find the one to replace.
type summary struct {
	capacity int
	counters []*counter // the heap
	byKey    map[string]*counter
}

type counter struct {
	key        string
	count, err int64
	index      int // in counters
}

func newSummary(capacity int) *summary {
	return &summary{capacity: capacity, byKey: make(map[string]*counter, capacity)}
}

func (s *summary) add(key string) {
	if c, ok := s.byKey[key]; ok {
		c.count++
		heap.Fix(s, c.index)
		return
	}
	if len(s.counters) < s.capacity {
		c := &counter{key: key, count: 1}
		s.byKey[key] = c
		heap.Push(s, c)
		return
	}
	c := s.counters[0] // the smallest count: its key gives way
	delete(s.byKey, c.key)
	c.key, c.err, c.count = key, c.count, c.count+1
	s.byKey[key] = c
	heap.Fix(s, 0)
}

func (s *summary) Len() int           { return len(s.counters) }
func (s *summary) Less(i, j int) bool { return s.counters[i].count < s.counters[j].count }
func (s *summary) Swap(i, j int) {
	s.counters[i], s.counters[j] = s.counters[j], s.counters[i]
	s.counters[i].index, s.counters[j].index = i, j
}
func (s *summary) Push(x any) {
	c := x.(*counter)
	c.index = len(s.counters)
	s.counters = append(s.counters, c)
}
func (s *summary) Pop() any {
	c := s.counters[len(s.counters)-1]
	s.counters = s.counters[:len(s.counters)-1]
	return c
}

package topkeys_test

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

func newTracker(o topkeys.Options) (*topkeys.Tracker, *clocktest.Clock) {
	clock := clocktest.New(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	return topkeys.New(nil, clock, o), clock
}

// Small streams are counted exactly; denials (shadow ones too) and admissions apart; degraded and error
// answers not at all; ties by key.
func TestExactWhileTheKeysFit(t *testing.T) {
	tr, _ := newTracker(topkeys.Options{Capacity: 8})
	for i, k := range []string{"a", "b", "a", "c", "a", "b"} {
		o := domain.OutcomeDenied
		if i == 5 {
			o = domain.OutcomeShadowDenied
		}
		tr.Decided("p", k, o)
	}
	tr.Decided("p", "z", domain.OutcomeAllowed)
	tr.Decided("p", "q", domain.OutcomeDegraded)
	tr.Decided("p", "q", domain.OutcomeError)
	got, _ := tr.Top("p", topkeys.ByDenied, 10)
	want := []topkeys.Entry{{Key: "a", Count: 3}, {Key: "b", Count: 2}, {Key: "c", Count: 1}}
	if len(got) != len(want) {
		t.Fatalf("denied: %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("denied: %+v, want %+v", got, want)
		}
	}
	if got, _ := tr.Top("p", topkeys.ByAllowed, 10); len(got) != 1 || got[0].Key != "z" {
		t.Fatalf("allowed: %+v", got)
	}
	if got, _ := tr.Top("other", topkeys.ByDenied, 10); len(got) != 0 {
		t.Fatalf("another policy: %+v", got)
	}
}

// A flood of 10^6 distinct denied keys leaves the summary at its bound, the true top key reported first, every
// reported count within its error of the truth, and every error within N / capacity (issue 25, "done when").
func TestFloodStaysBoundedAndFindsTheTopKey(t *testing.T) {
	const capacity, distinct = 64, 1_000_000
	tr, _ := newTracker(topkeys.Options{Capacity: capacity})
	truth := map[string]int64{}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n := int64(0)
	for i := range distinct {
		k := "flood-" + strconv.Itoa(i)
		tr.Decided("login", k, domain.OutcomeDenied)
		n++
		if i%10 == 0 { // the attacker's own key, a tenth of the stream
			tr.Decided("login", "mallory", domain.OutcomeDenied)
			truth["mallory"]++
			n++
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c := tr.Counters(); c != capacity {
		t.Fatalf("%d counters after %d distinct keys, want the bound %d", c, distinct, capacity)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Fatalf("the heap grew by %d bytes over the flood: not bounded", grew)
	}
	top, _ := tr.Top("login", topkeys.ByDenied, 5)
	if top[0].Key != "mallory" {
		t.Fatalf("top key %+v, want mallory", top[0])
	}
	for _, e := range top {
		tc := truth[e.Key]
		if strings.HasPrefix(e.Key, "flood-") {
			tc = 1 // every flood key is denied once
		}
		if e.Count-e.Error > tc || tc > e.Count {
			t.Fatalf("%s: true count %d outside [%d - %d, %d]", e.Key, tc, e.Count, e.Error, e.Count)
		}
		if e.Error > n/capacity {
			t.Fatalf("%s: error %d above N/capacity = %d", e.Key, e.Error, n/capacity)
		}
	}
}

// A report covers the current and the previous interval: older decisions leave it, and a whole interval without
// any empties it.
func TestIntervals(t *testing.T) {
	tr, clock := newTracker(topkeys.Options{Interval: time.Minute})
	tr.Decided("p", "old", domain.OutcomeDenied)
	clock.Advance(time.Minute)
	tr.Decided("p", "new", domain.OutcomeDenied)
	got, since := tr.Top("p", topkeys.ByDenied, 10)
	if len(got) != 2 || since < time.Minute || since > 2*time.Minute {
		t.Fatalf("within two intervals: %+v over %s", got, since)
	}
	clock.Advance(time.Minute)
	if got, _ := tr.Top("p", topkeys.ByDenied, 10); len(got) != 1 || got[0].Key != "new" {
		t.Fatalf("after another interval: %+v", got)
	}
	clock.Advance(3 * time.Minute)
	if got, _ := tr.Top("p", topkeys.ByDenied, 10); len(got) != 0 {
		t.Fatalf("after a quiet stretch: %+v", got)
	}
}

// Past MaxPolicies a further policy is not counted, and the count of those decisions says so.
func TestPoliciesAreBounded(t *testing.T) {
	tr, _ := newTracker(topkeys.Options{MaxPolicies: 2})
	for _, p := range []string{"a", "b", "c", "c"} {
		tr.Decided(p, "k", domain.OutcomeDenied)
	}
	if got, _ := tr.Top("c", topkeys.ByDenied, 10); len(got) != 0 || tr.Dropped() != 2 {
		t.Fatalf("third policy: %+v, dropped %d", got, tr.Dropped())
	}
}

// Across the two intervals every reported count still bounds the truth: a key missing from a full summary of one
// interval is given that summary's smallest count, as count and as error.
func TestMergedIntervalsKeepTheBounds(t *testing.T) {
	tr, clock := newTracker(topkeys.Options{Capacity: 2, Interval: time.Minute})
	truth := map[string]int64{}
	deny := func(k string, n int) {
		for range n {
			tr.Decided("p", k, domain.OutcomeDenied)
			truth[k]++
		}
	}
	deny("k", 1)
	deny("a", 5)
	deny("y", 1) // the summary is full: k gives way to y
	clock.Advance(time.Minute)
	deny("k", 4) // k is back: its count from the first interval is gone from the summary, not from the truth
	got, _ := tr.Top("p", topkeys.ByDenied, 10)
	if len(got) == 0 || got[0].Key != "k" && got[0].Key != "a" {
		t.Fatalf("top: %+v", got)
	}
	for _, e := range got {
		if tc := truth[e.Key]; e.Count-e.Error > tc || tc > e.Count {
			t.Fatalf("%s: true %d outside [%d - %d, %d] (%+v)", e.Key, tc, e.Count, e.Error, e.Count, got)
		}
	}
}

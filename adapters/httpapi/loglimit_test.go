package httpapi

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLogLimiter(time.Second)
	l.now = func() time.Time { return now }
	type step struct {
		advance    time.Duration
		log        bool
		suppressed int
	}
	for i, s := range []step{
		{0, true, 0},                       // the first failure is logged at once
		{0, false, 0},                      // the storm: left out
		{300 * time.Millisecond, false, 0}, //
		{699 * time.Millisecond, false, 0}, // still inside the interval
		{time.Millisecond, true, 3},        // one interval after the last line: logged, with the count
		{0, false, 0},                      //
		{10 * time.Second, true, 1},        // a lone failure much later
		{time.Second, true, 0},             // and another, exactly one interval on: nothing was left out
	} {
		now = now.Add(s.advance)
		log, suppressed := l.admit()
		if log != s.log || suppressed != s.suppressed {
			t.Fatalf("event %d: admit() = %v, %d; want %v, %d", i, log, suppressed, s.log, s.suppressed)
		}
	}
}

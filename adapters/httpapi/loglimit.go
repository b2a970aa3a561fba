package httpapi

import (
	"sync"
	"time"
)

// logLimiter keeps a storm of one kind of failure from flooding the log: during a database outage every check
// fails the same way, thousands per second across replicas. The first event is logged at once; after it, at most
// one per interval, and that line says how many were left out since the previous one. The metrics
// (sluice_store_errors_total, sluice_decisions_total) still count every event.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	next       time.Time // no line before this instant
	suppressed int       // events left out since the last line
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, now: time.Now}
}

// admit reports whether this event gets a log line and, if so, how many events were left out before it.
func (l *logLimiter) admit() (log bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	suppressed, l.suppressed = l.suppressed, 0
	l.next = now.Add(l.every)
	return true, suppressed
}

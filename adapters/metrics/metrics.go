// Package metrics is the Prometheus adapter: it implements domain.Observer and names every sluice metric family
// in one place.
package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/domain"
)

// Observer counts decisions and store calls. Safe for concurrent use.
type Observer struct {
	decisions *prometheus.CounterVec
	storeDur  *prometheus.HistogramVec
	storeErrs *prometheus.CounterVec
}

var _ domain.Observer = (*Observer)(nil)

// NewObserver registers the decision and store families on reg.
func NewObserver(reg prometheus.Registerer) (*Observer, error) {
	o := &Observer{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_decisions_total",
			Help: "Decisions by policy and outcome (allowed, denied, shadow_denied, degraded, error).",
		}, []string{"policy", "outcome"}),
		storeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_store_duration_seconds",
			Help:    "Latency of store calls by operation (decide, decide_batch).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		storeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_store_errors_total",
			Help: "Store calls that failed, by operation and reason (timeout, full, error).",
		}, []string{"op", "reason"}),
	}
	for _, c := range []prometheus.Collector{o.decisions, o.storeDur, o.storeErrs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Start the error series at 0, so dashboards and rate() see them before the first failure.
	for _, op := range []string{"decide", "decide_batch"} {
		for _, r := range []string{"timeout", "full", "error"} {
			o.storeErrs.WithLabelValues(op, r)
		}
	}
	return o, nil
}

// Decided implements domain.Observer.
func (o *Observer) Decided(policy string, outcome domain.Outcome) {
	o.decisions.WithLabelValues(policy, string(outcome)).Inc()
}

// StoreCall implements domain.Observer.
func (o *Observer) StoreCall(op string, d time.Duration, err error) {
	o.storeDur.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		o.storeErrs.WithLabelValues(op, reason(err)).Inc()
	}
}

func reason(err error) string {
	switch {
	case errors.Is(err, domain.ErrStoreFull):
		return "full"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return "timeout"
	}
	return "error"
}

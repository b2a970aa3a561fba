// Package metrics is the Prometheus adapter: it implements domain.Observer (sluice_decisions_total,
// sluice_store_duration_seconds, sluice_store_errors_total), the HTTP request families (sluice_http_*), the
// Envoy RLS front end's (sluice_rls_*, RLS) and the optional top denied keys (sluice_top_denied_keys, topkeys.go). The
// store-specific families are registered where their store is wired: the memory store's sluice_memory_* in
// app/wire.go, sluice_config_policies_differing in app/postgres.go, and the janitor's sluice_janitor_* in
// adapters/postgres/janitor.go.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/sluice-dev/sluice/domain"
)

// Observer counts decisions and store calls. Safe for concurrent use.
//
// Every decision records two series; resolving a series from its label values (hashing them, a locked map
// lookup) cost about as much as recording, so the series already used are kept here by their labels (a sync.Map
// read is lock-free). They hold exactly the series the families hold: the label sets are bounded by the
// policies and outcomes (decisions) and the store's operations.
type Observer struct {
	decisions *prometheus.CounterVec
	storeDur  *prometheus.HistogramVec
	storeErrs *prometheus.CounterVec
	decided   sync.Map // decisionLabels → prometheus.Counter
	storeOps  sync.Map // op → prometheus.Observer
}

type decisionLabels struct {
	policy  string
	outcome domain.Outcome
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
			Help:    "Latency of store calls by operation (decide, decide_batch, hold).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		storeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_store_errors_total",
			Help: "Store calls that failed, by operation and reason (timeout, full, failed: domain.StoreCause).",
		}, []string{"op", "reason"}),
	}
	for _, c := range []prometheus.Collector{o.decisions, o.storeDur, o.storeErrs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Start the error series at 0, so dashboards and rate() see them before the first failure.
	for _, op := range []string{"decide", "decide_batch", "hold"} {
		for _, r := range []string{domain.CauseTimeout, domain.CauseFull, domain.CauseFailed} {
			o.storeErrs.WithLabelValues(op, r)
		}
	}
	return o, nil
}

// Decided implements domain.Observer.
func (o *Observer) Decided(policy, _ string, outcome domain.Outcome) { // the key is never a label
	k := decisionLabels{policy, outcome}
	c, ok := o.decided.Load(k)
	if !ok {
		c, _ = o.decided.LoadOrStore(k, o.decisions.WithLabelValues(policy, string(outcome)))
	}
	c.(prometheus.Counter).Inc()
}

// StoreCall implements domain.Observer.
func (o *Observer) StoreCall(op string, d time.Duration, err error) {
	obs, ok := o.storeOps.Load(op)
	if !ok {
		obs, _ = o.storeOps.LoadOrStore(op, o.storeDur.WithLabelValues(op))
	}
	obs.(prometheus.Observer).Observe(d.Seconds())
	if err != nil {
		o.storeErrs.WithLabelValues(op, domain.StoreCause(err)).Inc()
	}
}

// HTTP counts answered HTTP requests by method, route and status, and times them. Safe for concurrent use.
type HTTP struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	series   sync.Map // requestLabels → requestSeries
}

// NewHTTP registers the HTTP families on reg: sluice_http_requests_total{method,route,code} and
// sluice_http_request_duration_seconds{method,route}. route is the route template (e.g.
// /v1/policies/{name}/keys/{key}) or "unmatched", never the raw path: keys stay out of the labels and the
// label set stays bounded.
func NewHTTP(reg prometheus.Registerer) (*HTTP, error) {
	h := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_http_requests_total",
			Help: "HTTP requests answered, by method, route template (or unmatched) and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_http_request_duration_seconds",
			Help:    "Time from the request's arrival to its handler's return, by method and route template.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
	}
	for _, c := range []prometheus.Collector{h.requests, h.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Request records one answered request. method is one of the methods the API serves or "other", so a client
// cannot grow the label set.
func (h *HTTP) Request(method, route string, code int, d time.Duration) {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE":
	default:
		method = "other"
	}
	k := requestLabels{method, route, code}
	v, ok := h.series.Load(k)
	if !ok {
		v, _ = h.series.LoadOrStore(k, requestSeries{
			h.requests.WithLabelValues(method, route, strconv.Itoa(code)), h.duration.WithLabelValues(method, route),
		})
	}
	rs := v.(requestSeries)
	rs.count.Inc()
	rs.duration.Observe(d.Seconds())
}

// requestLabels are the labels of one request's series; requestSeries the series (resolved once, as Observer
// keeps its own).
type requestLabels struct {
	method, route string
	code          int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// RLS counts the Envoy RLS front end's calls and reloads (it implements envoyrls.Observer):
// sluice_rls_requests_total{method,code}, sluice_rls_request_duration_seconds{method} and
// sluice_rls_reloads_total{source,result}. method is one of the methods served or "other", code a gRPC status
// code name, source "files" or "xds", result "ok" or "failed": every label set is bounded, and no domain, key or
// descriptor value is ever a label. Safe for concurrent use.
type RLS struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reloads  *prometheus.CounterVec
}

// NewRLS registers the RLS families on reg.
func NewRLS(reg prometheus.Registerer) (*RLS, error) {
	r := &RLS{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rls_requests_total",
			Help: "Envoy RLS gRPC calls answered, by method and status code (OK includes OVER_LIMIT answers: see sluice_decisions_total).",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_rls_request_duration_seconds",
			Help:    "Time from an Envoy RLS call's arrival to its answer, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rls_reloads_total",
			Help: "Reloads of the RLS rules by source (files: rls.config_dir; xds: a pushed version) and result (failed: refused, the rules in force stay).",
		}, []string{"source", "result"}),
	}
	for _, c := range []prometheus.Collector{r.requests, r.duration, r.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Start the reload series at 0, so an alert on increase(...{result="failed"}) sees the first failure.
	for _, source := range []string{"files", "xds"} {
		for _, result := range []string{"ok", "failed"} {
			r.reloads.WithLabelValues(source, result)
		}
	}
	return r, nil
}

// Call implements envoyrls.Observer.
func (r *RLS) Call(method string, code codes.Code, d time.Duration) {
	r.requests.WithLabelValues(method, code.String()).Inc()
	r.duration.WithLabelValues(method).Observe(d.Seconds())
}

// Reload implements envoyrls.Observer.
func (r *RLS) Reload(source string, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	r.reloads.WithLabelValues(source, result).Inc()
}

package httpapi_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// flakyStore is a BucketStore whose decisions fail while failing is set: it stands in for a store that is down
// or timed out, to show each policy's failure_mode on every decision path.
type flakyStore struct {
	domain.BucketStore
	failing atomic.Bool
	// cause, when set, is the error a failing store returns instead of errStoreDown.
	cause atomic.Pointer[error]
}

var errStoreDown = errors.New("test store is down at 10.1.2.3:5432")

func (f *flakyStore) fail() error {
	if p := f.cause.Load(); p != nil {
		return *p
	}
	return errStoreDown
}

// failWith makes the store fail with err from now on.
func (f *flakyStore) failWith(err error) {
	f.cause.Store(&err)
	f.failing.Store(true)
}

func (f *flakyStore) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	if f.failing.Load() {
		return domain.Decision{}, f.fail()
	}
	return f.BucketStore.Decide(ctx, r)
}

func (f *flakyStore) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if f.failing.Load() {
		return nil, f.fail()
	}
	return f.BucketStore.DecideBatch(ctx, rs, atomic)
}

func (f *flakyStore) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	if f.failing.Load() {
		return domain.HoldDecision{}, f.fail()
	}
	return f.BucketStore.Hold(ctx, q)
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if f.failing.Load() {
		return f.fail()
	}
	return f.BucketStore.Ping(ctx)
}

// richEnv is an env whose store can fail and whose observer feeds a Prometheus registry served at /metrics.
type richEnv struct {
	*env
	flaky *flakyStore
	reg   *prometheus.Registry
}

// newRichEnv builds the same surface as newEnv (same policies, memory store, fake clock), with a flaky store and
// real metrics; opts apply to the handler's options as in newEnv.
func newRichEnv(t *testing.T, opts ...envOption) *richEnv {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	store := memory.New(clock, memory.Options{MaxKeys: 1000})
	flaky := &flakyStore{BucketStore: store}
	reg := prometheus.NewRegistry()
	obs, err := metrics.NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := domain.NewService(testPolicies, memory.NewPolicies(clock), flaky, obs, clock)
	if err != nil {
		t.Fatal(err)
	}
	specBytes, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	requests, err := metrics.NewHTTP(reg)
	if err != nil {
		t.Fatal(err)
	}
	o := httpapi.Options{Limiter: lim, Spec: specBytes, Store: "memory", MaxBodyBytes: 4096, Gatherer: reg, Requests: requests}
	for _, f := range opts {
		f(&o)
	}
	srv := httptest.NewServer(httpapi.NewHandler(o))
	t.Cleanup(srv.Close)
	return &richEnv{env: &env{t: t, clock: clock, srv: srv, store: store, limiter: lim}, flaky: flaky, reg: reg}
}

// check is a CheckRequest body.
func check(policy, key string, cost ...int64) map[string]any {
	m := map[string]any{"policy": policy, "key": key}
	if len(cost) > 0 {
		m["cost"] = cost[0]
	}
	return m
}

// decision sends POST /v1/check and decodes the 200 answer.
func (e *env) decision(body any, opts ...reqOpt) (api.Decision, response) {
	e.t.Helper()
	r := e.do("POST", "/v1/check", body, opts...)
	if r.Status != 200 {
		e.t.Fatalf("POST /v1/check %v: %d %s", body, r.Status, r.Body)
	}
	var d api.Decision
	r.json(e.t, &d)
	return d, r
}

// checks sends POST /v1/checks and decodes the 200 answer.
func (e *env) checks(body any, opts ...reqOpt) api.ChecksResponse {
	e.t.Helper()
	r := e.do("POST", "/v1/checks", body, opts...)
	if r.Status != 200 {
		e.t.Fatalf("POST /v1/checks: %d %s", r.Status, r.Body)
	}
	var out api.ChecksResponse
	r.json(e.t, &out)
	return out
}

// peek reads a key's state through GET /v1/policies/{name}/keys/{key} (key already escaped).
func (e *env) peek(name, escapedKey string, opts ...reqOpt) api.Decision {
	e.t.Helper()
	r := e.do("GET", "/v1/policies/"+name+"/keys/"+escapedKey, nil, opts...)
	if r.Status != 200 {
		e.t.Fatalf("GET key %s/%s: %d %s", name, escapedKey, r.Status, r.Body)
	}
	var d api.Decision
	r.json(e.t, &d)
	return d
}

// wantProblem asserts r is a problem of the given status and type slug, naming field when field is set.
func wantProblem(t *testing.T, r response, status int, slug, field string) {
	t.Helper()
	p := r.problem(t)
	if r.Status != status || p.Status != status || p.Type != "https://sluice.dev/problems/"+slug {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, p.Type, status, slug, r.Body)
	}
	if field == "" {
		return
	}
	if p.Errors == nil {
		t.Fatalf("problem names no field, want %q: %s", field, r.Body)
	}
	for _, f := range *p.Errors {
		if f.Field == field {
			return
		}
	}
	t.Fatalf("problem does not name field %q: %s", field, r.Body)
}

// in returns e reporting to t, for subtests: env's helpers fail the test they were made with.
func (e *env) in(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

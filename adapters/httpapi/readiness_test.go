package httpapi_test

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// flakyPolicies is a PolicyStore that cannot resolve names and is not loaded (domain.PolicyLoader) while failing,
// as a shared store's policy cache before its first load.
type flakyPolicies struct {
	domain.PolicyStore
	failing atomic.Bool
}

func (f *flakyPolicies) GetPolicy(ctx context.Context, name string) (domain.Policy, error) {
	if f.failing.Load() {
		return domain.Policy{}, errStoreDown
	}
	return f.PolicyStore.GetPolicy(ctx, name)
}

func (f *flakyPolicies) Loaded(context.Context) error {
	if f.failing.Load() {
		return errStoreDown
	}
	return nil
}

func (f *flakyPolicies) ListPolicies(ctx context.Context) ([]domain.Policy, error) {
	if f.failing.Load() {
		return nil, errStoreDown
	}
	return f.PolicyStore.ListPolicies(ctx)
}

type readyEnv struct {
	*env
	store    *flakyStore
	policies *flakyPolicies
}

func newReadyEnv(t *testing.T) *readyEnv {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mem := memory.New(clock, memory.Options{MaxKeys: 1000})
	store := &flakyStore{BucketStore: mem}
	policies := &flakyPolicies{PolicyStore: memory.NewPolicies(clock)}
	lim, err := domain.NewService(testPolicies, policies, store, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: lim, Spec: spec, Store: "memory"}))
	t.Cleanup(srv.Close)
	return &readyEnv{env: &env{t: t, clock: clock, srv: srv, store: mem, limiter: lim}, store: store, policies: policies}
}

func (e *readyEnv) health(path string) api.Health {
	e.t.Helper()
	r := e.do("GET", path, nil)
	if r.Status != 200 {
		e.t.Fatalf("%s: %d %s", path, r.Status, r.Body)
	}
	var h api.Health
	r.json(e.t, &h)
	return h
}

// notReady checks a 503 problem whose detail says why and names no address.
func notReady(t *testing.T, r response, slug, why string) {
	t.Helper()
	wantProblem(t, r, 503, slug, "")
	p := r.problem(t)
	if p.Detail == nil || !strings.Contains(*p.Detail, why) || strings.Contains(string(r.Body), "10.1.2.3") {
		t.Fatalf("detail %v, want %q and no store address: %s", p.Detail, why, r.Body)
	}
}

// TestReadinessKeepsServingByFailureMode: once a replica has seen its store answer, a store outage leaves it
// ready (status degraded) so checks keep getting their failure_mode (allow admits, deny is a fast 503); the
// store's own health is /healthz/store. Before it was 503, so every replica left the Service and failure_mode
// allow never applied; and its detail leaked the database's address to anyone.
func TestReadinessKeepsServingByFailureMode(t *testing.T) {
	e := newReadyEnv(t)
	if h := e.health("/readyz"); h.Status != api.Ok || *h.StoreStatus != api.HealthStoreStatusAvailable || h.Cause != nil {
		t.Fatalf("readyz with the store up: %+v", h)
	}
	if h := e.health("/healthz/store"); h.Status != api.Ok {
		t.Fatalf("healthz/store with the store up: %+v", h)
	}

	e.store.failing.Store(true)
	h := e.health("/readyz")
	if h.Status != api.Degraded || *h.StoreStatus != api.HealthStoreStatusUnavailable || h.Cause == nil || *h.Cause != api.Failed {
		t.Fatalf("readyz with the store down: %+v", h)
	}
	notReady(t, e.do("GET", "/healthz/store", nil), "store-unavailable", "cause: failed")
	if d, _ := e.decision(check("soft", "k")); !d.Allowed || d.Degraded == nil || !*d.Degraded {
		t.Fatalf("failure_mode allow while degraded: %+v", d)
	}
	wantProblem(t, e.do("POST", "/v1/check", check("login", "k")), 503, "store-unavailable", "")
	if r := e.do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatalf("healthz must not depend on the store: %d", r.Status)
	}

	// A timeout is named as such.
	e.store.failWith(&domain.UnavailableError{Err: context.DeadlineExceeded})
	if h := e.health("/readyz"); *h.Cause != api.Timeout {
		t.Fatalf("readyz on a timeout: %+v", h)
	}

	// Without the API policies, checks of them cannot follow their failure_mode: not ready.
	e.policies.failing.Store(true)
	notReady(t, e.do("GET", "/readyz", nil), "not-ready", "API policies are not loaded")

	e.store.failing.Store(false)
	e.policies.failing.Store(false)
	if h := e.health("/readyz"); h.Status != api.Ok {
		t.Fatalf("readyz after recovery: %+v", h)
	}
}

// TestReadinessOfAReplicaStartedDuringAnOutage: a process that has never seen its store answer is not ready (it
// cannot know the API policies' failure modes, nor whether the schema matches this build), and says so without
// the store's address.
func TestReadinessOfAReplicaStartedDuringAnOutage(t *testing.T) {
	e := newReadyEnv(t)
	e.store.failing.Store(true)
	notReady(t, e.do("GET", "/readyz", nil), "not-ready", "has not answered since this process started")
	notReady(t, e.do("GET", "/healthz/store", nil), "store-unavailable", "cause: failed")
	e.store.failing.Store(false)
	if h := e.health("/readyz"); h.Status != api.Ok {
		t.Fatalf("readyz once the store answers: %+v", h)
	}
}

package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// The contract: every request a test sends and every response it gets (errors included) is checked against
// openapi.yaml with kin-openapi. Requests a test marks as deliberately invalid skip only the request check.

var (
	specOnce  sync.Once
	specDoc   *openapi3.T
	specRoute routers.Router
	specErr   error
	// covered records the operations the tests exercised, for TestEveryOperationIsTested.
	coveredMu sync.Mutex
	covered   = map[string]map[int]bool{}
)

func spec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	specOnce.Do(func() {
		specDoc, specErr = api.GetSpec()
		if specErr != nil {
			return
		}
		if specErr = specDoc.Validate(context.Background()); specErr != nil {
			return
		}
		specDoc.Servers = nil // match on paths only, not on a host
		specRoute, specErr = gorillamux.NewRouter(specDoc)
	})
	if specErr != nil {
		t.Fatalf("openapi.yaml: %v", specErr)
	}
	return specDoc, specRoute
}

// env is one sluice HTTP surface over a memory store and a fake clock.
type env struct {
	t       *testing.T
	clock   *clocktest.Clock
	srv     *httptest.Server
	store   *memory.Store
	limiter *domain.Service
}

type envOption func(*httpapi.Options)

func withTokens(ts ...httpapi.Token) envOption {
	return func(o *httpapi.Options) { o.Tokens = ts }
}

var testPolicies = []domain.Policy{
	{Name: "login", Limit: 5, Window: time.Minute},
	{Name: "fifty", Limit: 50, Window: time.Hour},
	{Name: "one", Limit: 1, Window: 1500 * time.Millisecond},
	{Name: "trial", Limit: 1, Window: time.Hour, Shadow: true},
	{Name: "soft", Limit: 3, Window: time.Minute, FailureMode: domain.FailAllow},
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	return newEnvWith(t, testPolicies, opts...)
}

// newEnvWith is newEnv with other config policies.
func newEnvWith(t *testing.T, policies []domain.Policy, opts ...envOption) *env {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	store := memory.New(clock, memory.Options{MaxKeys: 1000})
	top := topkeys.New(nil, clock, topkeys.Options{})
	lim, err := domain.NewService(policies, memory.NewPolicies(clock), store, top, clock)
	if err != nil {
		t.Fatal(err)
	}
	specBytes, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := httpapi.Options{Limiter: lim, Spec: specBytes, Store: "memory", MaxBodyBytes: 4096, TopKeys: top}
	for _, f := range opts {
		f(&o)
	}
	srv := httptest.NewServer(httpapi.NewHandler(o))
	t.Cleanup(srv.Close)
	return &env{t: t, clock: clock, srv: srv, store: store, limiter: lim}
}

// response is what a test inspects.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

func (r response) problem(t *testing.T) api.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json (body %s)", ct, r.Body)
	}
	var p api.Problem
	r.json(t, &p)
	return p
}

type reqOpt func(*http.Request)

func bearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// invalidRequest marks a request the test sends on purpose against the contract: only the response is checked.
func invalidRequest() reqOpt {
	return func(r *http.Request) { r.Header.Set("X-Test-Invalid", "1") }
}

// do sends a request and checks it, and the response, against openapi.yaml.
func (e *env) do(method, path string, body any, opts ...reqOpt) response {
	e.t.Helper()
	return doContract(e.t, e.srv.Client(), e.srv.URL, method, path, body, opts...)
}

func doContract(t *testing.T, client *http.Client, base, method, path string, body any, opts ...reqOpt) response {
	t.Helper()
	_, router := spec(t)
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	invalid := req.Header.Get("X-Test-Invalid") != ""
	req.Header.Del("X-Test-Invalid")

	// Route and validate the request as the contract sees it.
	vreq, _ := http.NewRequest(method, path, bytes.NewReader(raw))
	vreq.Header = req.Header.Clone()
	route, params, routeErr := router.FindRoute(vreq)
	for k, v := range params { // the router matches the encoded path; validate the values the server sees
		if u, err := url.PathUnescape(v); err == nil {
			params[k] = u
		}
	}
	input := &openapi3filter.RequestValidationInput{
		Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true},
	}
	if routeErr == nil && !invalid {
		if err := openapi3filter.ValidateRequest(context.Background(), input); err != nil {
			t.Fatalf("%s %s: request breaks openapi.yaml: %v", method, path, err)
		}
	}

	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if routeErr != nil {
		// Paths outside the spec still answer problem+json.
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s %s (not in openapi.yaml): %d with Content-Type %q", method, path, resp.StatusCode, ct)
		}
		return response{Status: resp.StatusCode, Header: resp.Header, Body: out}
	}
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	rin.SetBodyBytes(out)
	if err := openapi3filter.ValidateResponse(context.Background(), rin); err != nil {
		t.Fatalf("%s %s: response %d breaks openapi.yaml: %v\nbody: %s", method, path, resp.StatusCode, err, out)
	}
	coveredMu.Lock()
	op := route.Operation.OperationID
	if covered[op] == nil {
		covered[op] = map[int]bool{}
	}
	covered[op][resp.StatusCode] = true
	coveredMu.Unlock()
	return response{Status: resp.StatusCode, Header: resp.Header, Body: out}
}

// operations lists every operationId in the spec, sorted.
func operations(t *testing.T) []string {
	doc, _ := spec(t)
	var ops []string
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			ops = append(ops, op.OperationID)
		}
	}
	sort.Strings(ops)
	return ops
}

func coveredOps() map[string]map[int]bool {
	coveredMu.Lock()
	defer coveredMu.Unlock()
	out := make(map[string]map[int]bool, len(covered))
	for k, v := range covered {
		out[k] = v
	}
	return out
}

package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/tracing"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// tracedServer is the HTTP surface with tracing on, as app wires it: the handler's server spans and the store's
// spans (adapters/tracing) go to one recorder.
func tracedServer(t *testing.T) (*httptest.Server, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	store := tracing.New(memory.New(clock, memory.Options{MaxKeys: 100}), tp, tracing.Options{Store: "memory"})
	lim, err := domain.NewService([]domain.Policy{{Name: "login", Limit: 1, Window: time.Minute}}, memory.NewPolicies(clock), store, domain.NopObserver{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: lim, Store: "memory", TracerProvider: tp, Propagator: propagation.TraceContext{}}))
	t.Cleanup(srv.Close)
	return srv, sr
}

func send(t *testing.T, srv *httptest.Server, method, path, body string, header http.Header) int {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

// noRawKey fails if the key appears in any span's name, attributes or events.
func noRawKey(t *testing.T, spans []sdktrace.ReadOnlySpan, key string) {
	t.Helper()
	for _, s := range spans {
		if strings.Contains(s.Name(), key) {
			t.Errorf("span name %q holds the key", s.Name())
		}
		for k, v := range spanAttrs(s) {
			if strings.Contains(v, key) || strings.Contains(v, url.PathEscape(key)) || strings.Contains(v, url.QueryEscape(key)) {
				t.Errorf("span %q: %s = %q holds the key", s.Name(), k, v)
			}
		}
		for _, e := range s.Events() {
			for _, kv := range e.Attributes {
				if strings.Contains(kv.Value.String(), key) {
					t.Errorf("span %q: event %s holds the key", s.Name(), e.Name)
				}
			}
		}
	}
}

const tracedKey = "alice@example.com"

// A check continues the caller's W3C trace: its server span is a child of the traceparent's span, and the store
// call is a child span of it with the policy, algorithm, outcome and store; no span holds the key.
func TestCheckSpanContinuesTraceparent(t *testing.T) {
	srv, sr := tracedServer(t)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	h := http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}}
	for _, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
		path := "/v1/check"
		body := `{"policy":"login","key":"` + tracedKey + `"}`
		if want == http.StatusTooManyRequests {
			path, body = "/v1/authorize?policy=login&key="+url.QueryEscape(tracedKey), ""
		}
		method := http.MethodPost
		if body == "" {
			method = http.MethodGet
		}
		if got := send(t, srv, method, path, body, h); got != want {
			t.Fatalf("%s %s: status %d, want %d", method, path, got, want)
		}
	}
	spans := sr.Ended()
	if len(spans) != 4 {
		t.Fatalf("want a server and a store span per request, got %d spans", len(spans))
	}
	for i, wantName := range []string{"POST /v1/check", "GET /v1/authorize"} {
		store, server := spans[2*i], spans[2*i+1]
		if server.Name() != wantName || server.SpanKind() != trace.SpanKindServer {
			t.Errorf("server span %q (%s), want %q", server.Name(), server.SpanKind(), wantName)
		}
		if server.SpanContext().TraceID().String() != traceID || server.Parent().SpanID().String() != parentID || !server.Parent().IsRemote() {
			t.Errorf("%s: trace %s parent %s: the traceparent is not continued", wantName, server.SpanContext().TraceID(), server.Parent().SpanID())
		}
		a := spanAttrs(server)
		if a["http.route"] != strings.TrimPrefix(wantName, strings.Split(wantName, " ")[0]+" ") {
			t.Errorf("%s: http.route %q", wantName, a["http.route"])
		}
		if store.Name() != "store.decide" || store.Parent().SpanID() != server.SpanContext().SpanID() || store.SpanContext().TraceID() != server.SpanContext().TraceID() {
			t.Errorf("%s: store span %q is not the server span's child", wantName, store.Name())
		}
		sa := spanAttrs(store)
		wantOutcome := []string{"allowed", "denied"}[i]
		if sa["sluice.policy"] != "login" || sa["sluice.algorithm"] != "sliding_log" || sa["sluice.outcome"] != wantOutcome || sa["sluice.store"] != "memory" {
			t.Errorf("%s: store span attributes %v", wantName, sa)
		}
		if _, ok := sa["sluice.key_hash"]; ok {
			t.Errorf("%s: a key hash though none was asked for", wantName)
		}
	}
	noRawKey(t, spans, tracedKey)
}

// Paths hold keys and hold handles: a span records the access log's redacted path, and a path that matches no route
// not at all. The probes and /metrics make no span.
func TestSpanPathsRedacted(t *testing.T) {
	srv, sr := tracedServer(t)
	send(t, srv, http.MethodGet, "/v1/policies/login/keys/"+url.PathEscape(tracedKey), "", nil)
	send(t, srv, http.MethodGet, "/v1/policies/login/keys?key="+url.QueryEscape(tracedKey), "", nil)
	send(t, srv, http.MethodDelete, "/v1/holds/"+url.PathEscape(tracedKey), "", nil)
	send(t, srv, http.MethodGet, "/v1/nowhere/"+url.PathEscape(tracedKey), "", nil)
	for _, probe := range []string{"/healthz", "/healthz/store", "/readyz", "/metrics"} { // not traced
		send(t, srv, http.MethodGet, probe, "", nil)
	}
	var servers []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			servers = append(servers, s)
		}
	}
	want := []struct{ name, path string }{
		{"GET /v1/policies/{name}/keys/{key}", "/v1/policies/login/keys/…"},
		{"GET /v1/policies/{name}/keys", "/v1/policies/login/keys"},
		{"DELETE /v1/holds/{id}", "/v1/holds/…"},
		{"GET", ""},
	}
	if len(servers) != len(want) {
		t.Fatalf("want %d server spans, got %d", len(want), len(servers))
	}
	for _, s := range sr.Ended() {
		if !s.Parent().IsValid() && s.SpanKind() != trace.SpanKindServer {
			t.Errorf("a root span %q: a probe's store call made a trace of its own", s.Name())
		}
	}
	for i, w := range want {
		if servers[i].Name() != w.name || spanAttrs(servers[i])["url.path"] != w.path {
			t.Errorf("span %d: %q url.path %q, want %q %q", i, servers[i].Name(), spanAttrs(servers[i])["url.path"], w.name, w.path)
		}
	}
	noRawKey(t, sr.Ended(), tracedKey)
}

// sawContext is a Limiter that records the span context each check's context carries.
type sawContext struct {
	domain.Limiter
	seen []trace.SpanContext
}

func (l *sawContext) Check(ctx context.Context, r domain.CheckRequest) (domain.Result, error) {
	l.seen = append(l.seen, trace.SpanContextFromContext(ctx))
	return l.Limiter.Check(ctx, r)
}

// Without a TracerProvider (tracing off) the handler adds nothing: the traceparent is not even read, and the
// decision's context carries no span. With one, the decision runs in the server span's context.
func TestTracingOffAddsNothing(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lim, err := domain.NewService([]domain.Policy{{Name: "login", Limit: 5, Window: time.Minute}}, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 10}), domain.NopObserver{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	off := &sawContext{Limiter: lim}
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: off, Store: "memory"}))
	defer srv.Close()
	if got := send(t, srv, http.MethodPost, "/v1/check", `{"policy":"login","key":"k"}`, h); got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	if len(off.seen) != 1 || off.seen[0].IsValid() {
		t.Errorf("tracing off: the decision's context carries span context %v", off.seen)
	}
	sr := tracetest.NewSpanRecorder()
	on := &sawContext{Limiter: lim}
	srvOn := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: on, Store: "memory", TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))}))
	defer srvOn.Close()
	if got := send(t, srvOn, http.MethodPost, "/v1/check", `{"policy":"login","key":"k"}`, h); got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	if len(on.seen) != 1 || on.seen[0].TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || len(sr.Ended()) != 1 || on.seen[0].SpanID() != sr.Ended()[0].SpanContext().SpanID() {
		t.Errorf("tracing on: the decision's context carries %v, want the server span's (default propagator: W3C)", on.seen)
	}
}

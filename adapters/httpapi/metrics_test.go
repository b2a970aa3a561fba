package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/app"
)

func TestMetricsFamiliesAfterTraffic(t *testing.T) {
	e := newRichEnv(t)
	e.decision(check("one", "k"))
	e.decision(check("one", "k"))   // denied
	e.decision(check("trial", "k")) // allowed
	e.decision(check("trial", "k")) // shadow_denied
	e.checks(map[string]any{"atomic": true, "checks": []any{check("login", "k"), check("fifty", "k")}})
	e.flaky.failing.Store(true)
	e.decision(check("soft", "k"))                                                               // degraded
	wantProblem(t, e.do("POST", "/v1/check", check("login", "k")), 503, "store-unavailable", "") // error
	e.flaky.failing.Store(false)

	r := e.do("GET", "/metrics", nil)
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q", r.Status, r.Header.Get("Content-Type"))
	}
	body := string(r.Body)
	for _, want := range []string{
		"# TYPE sluice_decisions_total counter",
		`sluice_decisions_total{outcome="allowed",policy="one"} 1`,
		`sluice_decisions_total{outcome="denied",policy="one"} 1`,
		`sluice_decisions_total{outcome="allowed",policy="trial"} 1`,
		`sluice_decisions_total{outcome="shadow_denied",policy="trial"} 1`,
		`sluice_decisions_total{outcome="allowed",policy="login"} 1`,
		`sluice_decisions_total{outcome="allowed",policy="fifty"} 1`,
		`sluice_decisions_total{outcome="degraded",policy="soft"} 1`,
		`sluice_decisions_total{outcome="error",policy="login"} 1`,
		"# TYPE sluice_store_duration_seconds histogram",
		`sluice_store_duration_seconds_count{op="decide"} 6`,
		`sluice_store_duration_seconds_count{op="decide_batch"} 1`,
		`sluice_store_duration_seconds_bucket{op="decide",le="+Inf"} 6`,
		"# TYPE sluice_store_errors_total counter",
		`sluice_store_errors_total{op="decide",reason="failed"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestHTTPRequestMetrics: requests are counted by method, route template and status, and timed; a key in the
// path never becomes a label, nor does an unknown path.
func TestHTTPRequestMetrics(t *testing.T) {
	e := newRichEnv(t)
	e.decision(check("login", "k"))
	e.decision(check("login", "k"))
	e.peek("login", "secret-key-1")
	e.peek("login", "secret%2Fkey-2")
	wantProblem(t, e.do("POST", "/v1/check", `{"policy":"login"`, invalidRequest()), 400, "malformed", "")
	wantProblem(t, e.do("GET", "/v1/no-such-thing-42", nil), 404, "not-found", "")
	wantProblem(t, e.do("DELETE", "/v1/check", nil), 405, "method-not-allowed", "")
	if r := e.do("HEAD", "/v1/authorize?policy=login&key=k", nil); r.Status != 405 || r.Header.Get("Allow") != "GET" {
		t.Errorf("HEAD /v1/authorize: %d, Allow %q; want 405, Allow GET", r.Status, r.Header.Get("Allow"))
	}
	body := string(e.do("GET", "/metrics", nil).Body)
	for _, want := range []string{
		"# TYPE sluice_http_requests_total counter",
		`sluice_http_requests_total{code="200",method="POST",route="/v1/check"} 2`,
		`sluice_http_requests_total{code="400",method="POST",route="/v1/check"} 1`,
		`sluice_http_requests_total{code="200",method="GET",route="/v1/policies/{name}/keys/{key}"} 2`,
		`sluice_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`sluice_http_requests_total{code="405",method="DELETE",route="unmatched"} 1`,
		`sluice_http_requests_total{code="405",method="HEAD",route="unmatched"} 1`,
		"# TYPE sluice_http_request_duration_seconds histogram",
		`sluice_http_request_duration_seconds_count{method="POST",route="/v1/check"} 3`,
		`sluice_http_request_duration_seconds_bucket{method="GET",route="/v1/policies/{name}/keys/{key}",le="+Inf"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, leak := range []string{"secret", "no-such-thing"} {
		if strings.Contains(body, leak) {
			t.Errorf("/metrics holds the raw path %q", leak)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestMetricsOfTheRealWiring runs the app's own wiring (app.Run, memory store) and checks its /metrics through
// the contract harness, including the memory store's gauges, which only the app registers.
func TestMetricsOfTheRealWiring(t *testing.T) {
	spec, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := app.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Memory.MaxKeys = 1000
	cfg.Policies = []app.PolicyConfig{{Name: "login", Limit: 2, Window: app.Duration(time.Minute)}}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, app.Build{Version: "test", Spec: spec}, slog.New(slog.DiscardHandler), func(a string) { addrs <- a })
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	client := &http.Client{Timeout: 10 * time.Second}
	for _, key := range []string{"a", "b", "b", "b"} {
		doContract(t, client, base, "POST", "/v1/check", check("login", key))
	}
	r := doContract(t, client, base, "GET", "/metrics", nil)
	for _, want := range []string{
		`sluice_decisions_total{outcome="allowed",policy="login"} 3`,
		`sluice_decisions_total{outcome="denied",policy="login"} 1`,
		"sluice_memory_keys 2",
		"sluice_memory_max_keys 1000",
		"sluice_memory_full_rejections_total 0",
		"# TYPE sluice_store_duration_seconds histogram",
		`sluice_http_requests_total{code="200",method="POST",route="/v1/check"} 4`,
		`sluice_http_request_duration_seconds_count{method="POST",route="/v1/check"} 4`,
		// sluice_store_errors_total has no series until a store call fails (TestMetricsFamiliesAfterTraffic).
		"go_goroutines",
	} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsHoldNoSecretsOrKeys logs at debug level (the most verbose) through every path that logs, and scans the
// output for the token secrets and the full keys.
func TestLogsHoldNoSecretsOrKeys(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf lockedBuffer
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			var h slog.Handler = slog.NewTextHandler(&buf, opts)
			if format == "json" {
				h = slog.NewJSONHandler(&buf, opts)
			}
			e := newRichEnv(t, withTestTokens(), func(o *httpapiOptions) { o.Logger = slog.New(h) })
			const key = "customer-7f3a9c2e-secret-key" // would identify a user
			keyPath := "/v1/policies/login/keys/" + url.PathEscape(key)
			requests := 0
			do := func(method, path string, body any, opts ...reqOpt) response {
				requests++
				return e.do(method, path, body, opts...)
			}
			ck, ad := bearer(checkSecret), bearer(adminSecret)
			do("POST", "/v1/check", check("login", key), ck)
			do("POST", "/v1/checks", map[string]any{"checks": []any{check("login", key)}}, ck)
			do("GET", authorizePath("login", key), nil, ck)
			do("GET", keyPath, nil, ck)
			do("DELETE", keyPath, nil, ad)
			do("DELETE", keyPath, nil, ck)                                        // 403
			do("POST", "/v1/check", check("login", key), bearer(adminSecret+"x")) // 401
			do("POST", "/v1/check", `{"policy":"login","key":"`+key+`",`, ck, invalidRequest())
			do("POST", "/v1/check", check("login", key, 99), ck)   // 400 naming cost
			do("POST", "/v1/check", check("nope", key), ck)        // 404
			do("GET", "/v1/nowhere/"+url.PathEscape(key), nil, ck) // no route: the path is not logged
			do("GET", "/v1/check/"+checkSecret, nil, ck)           // a token typed into a wrong path
			e.flaky.failing.Store(true)
			do("POST", "/v1/check", check("login", key), ck) // 503, logged at warn
			do("GET", authorizePath("login", key), nil, ck)  // 503
			e.flaky.failing.Store(false)

			out := buf.String()
			for _, secret := range []string{checkSecret, adminSecret, key, url.PathEscape(key), url.QueryEscape(key)} {
				if strings.Contains(out, secret) {
					t.Errorf("the log holds %q:\n%s", secret, out)
				}
			}
			// One access-log line per request, at debug level.
			if n := strings.Count(out, "msg=request ") + strings.Count(out, `"msg":"request"`); n != requests {
				t.Errorf("%d requests, %d access-log lines:\n%s", requests, n, out)
			}
			if !strings.Contains(out, "store unavailable") {
				t.Errorf("a store failure is not logged:\n%s", out)
			}
		})
	}
}

type httpapiOptions = httpapi.Options

// failingCollector's Collect reports an error, as a broken exporter would.
type failingCollector struct{}

func (failingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc("broken_metric", "never collected", nil, nil)
}
func (failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("broken_metric", "never collected", nil, nil), errors.New("exporter down"))
}

// GET /metrics is promhttp's (issue 27): it negotiates OpenMetrics, compresses when asked, and a collector that
// fails is logged and left out while the others are served (the scrape used to answer 500).
func TestMetricsNegotiationCompressionAndGatherErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := prometheus.NewCounter(prometheus.CounterOpts{Name: "fine_total", Help: "a healthy counter"})
	ok.Add(3)
	reg.MustRegister(ok, failingCollector{})
	var logs syncBuffer
	h := httpapi.NewHandler(httpapi.Options{Gatherer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	get := func(header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/metrics", nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	plain := get()
	if plain.Code != 200 || !strings.Contains(plain.Body.String(), "fine_total 3") || strings.Contains(plain.Body.String(), "broken_metric") {
		t.Fatalf("plain scrape with a failing collector: %d\n%s", plain.Code, plain.Body)
	}
	if !strings.Contains(logs.String(), "exporter down") {
		t.Fatalf("the gather error is not logged: %q", logs.String())
	}
	om := get("Accept", "application/openmetrics-text;version=1.0.0")
	if !strings.HasPrefix(om.Header().Get("Content-Type"), "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(om.Body.String()), "# EOF") {
		t.Fatalf("OpenMetrics not negotiated: %q\n%s", om.Header().Get("Content-Type"), om.Body)
	}
	gz := get("Accept-Encoding", "gzip")
	if gz.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("no gzip: %v", gz.Header())
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	if !strings.Contains(string(body), "fine_total 3") {
		t.Fatalf("gzip body: %s", body)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

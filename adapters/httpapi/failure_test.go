package httpapi_test

import (
	"testing"

	"github.com/sluice-dev/sluice/api"
)

// Every decision path (check, checks atomic and not, authorize, key peek) honours shadow and failure_mode.

func TestShadowOnEveryDecisionPath(t *testing.T) {
	e := newEnv(t)
	// trial: limit 1 per hour, shadow.
	if r := e.do("GET", authorizePath("trial", "k"), nil); r.Status != 204 {
		t.Fatalf("first authorize: %d", r.Status)
	}
	if r := e.do("GET", authorizePath("trial", "k"), nil); r.Status != 204 || r.Header.Get("Retry-After") != "" || r.Header.Get("RateLimit") != `"trial";r=0;t=3600` {
		t.Fatalf("authorize over a shadow limit must admit: %d Retry-After %q RateLimit %q", r.Status, r.Header.Get("Retry-After"), r.Header.Get("RateLimit"))
	}
	d, r := e.decision(check("trial", "k"))
	if !d.Allowed || d.ShadowDenied == nil || !*d.ShadowDenied || d.RetryAfterMs != 0 || r.Header.Get("Retry-After") != "" {
		t.Fatalf("check: %+v", d)
	}
	for _, atomic := range []bool{false, true} {
		out := e.checks(map[string]any{"atomic": atomic, "checks": []any{check("trial", "k"), check("fifty", "k")}})
		if !out.Allowed || out.Decisions[0].ShadowDenied == nil || !*out.Decisions[0].ShadowDenied || !out.Decisions[1].Allowed {
			t.Fatalf("checks atomic=%v: %+v", atomic, out)
		}
	}
	if d := e.peek("trial", "k"); !d.Allowed || d.ShadowDenied == nil || !*d.ShadowDenied {
		t.Fatalf("peek at a shadow-full key: %+v", d)
	}
	// Under the limit, a shadow decision is an ordinary one.
	if d := e.peek("trial", "fresh"); !d.Allowed || d.ShadowDenied != nil {
		t.Fatalf("peek at a fresh shadow key: %+v", d)
	}
}

func TestFailureModeDenyOnEveryDecisionPath(t *testing.T) {
	e := newRichEnv(t)
	e.flaky.failing.Store(true)
	// login has failure_mode deny (the default).
	for _, c := range []struct {
		name         string
		method, path string
		body         any
	}{
		{"check", "POST", "/v1/check", check("login", "k")},
		{"checks", "POST", "/v1/checks", map[string]any{"checks": []any{check("login", "k")}}},
		{"checks atomic", "POST", "/v1/checks", map[string]any{"atomic": true, "checks": []any{check("login", "k")}}},
		// One deny policy refuses the whole batch, even next to an allow policy.
		{"checks mixed", "POST", "/v1/checks", map[string]any{"checks": []any{check("soft", "k"), check("login", "k")}}},
		{"authorize", "GET", authorizePath("login", "k"), nil},
		{"key peek", "GET", "/v1/policies/login/keys/k", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.in(t).do(c.method, c.path, c.body)
			wantProblem(t, r, 503, "store-unavailable", "")
			if r.Header.Get("Retry-After") != "1" {
				t.Fatalf("503 without Retry-After: %q", r.Header.Get("Retry-After"))
			}
		})
	}
	e.flaky.failing.Store(false)
	if d, _ := e.decision(check("login", "k")); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("after the store recovered: %+v", d)
	}
}

func TestFailureModeAllowOnEveryDecisionPath(t *testing.T) {
	e := newRichEnv(t)
	e.flaky.failing.Store(true)
	degraded := func(t *testing.T, d api.Decision) {
		t.Helper()
		if !d.Allowed || d.Degraded == nil || !*d.Degraded || d.Policy != "soft" || d.Limit != 3 {
			t.Fatalf("want an admitted, degraded decision: %+v", d)
		}
	}
	// soft has failure_mode allow.
	d, r := e.decision(check("soft", "k"))
	degraded(t, d)
	if r.Header.Get("RateLimit-Policy") != `"soft";q=3;w=60` || r.Header.Get("RateLimit") != "" || r.Header.Get("Retry-After") != "" {
		t.Fatalf("degraded headers: %v", r.Header)
	}
	for _, atomic := range []bool{false, true} {
		out := e.checks(map[string]any{"atomic": atomic, "checks": []any{check("soft", "k"), check("soft", "j")}})
		if !out.Allowed || len(out.Decisions) != 2 {
			t.Fatalf("checks atomic=%v: %+v", atomic, out)
		}
		degraded(t, out.Decisions[0])
		degraded(t, out.Decisions[1])
	}
	if r := e.do("GET", authorizePath("soft", "k"), nil); r.Status != 204 {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	degraded(t, e.peek("soft", "k"))
	// Degraded admissions were never recorded.
	e.flaky.failing.Store(false)
	if d := e.peek("soft", "k"); d.Degraded != nil || d.Remaining != 2 {
		t.Fatalf("after the store recovered: %+v", d)
	}
}

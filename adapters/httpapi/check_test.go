package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/api"
)

func TestCheckUntilDenied(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 5; i++ {
		r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "alice"})
		if r.Status != 200 {
			t.Fatalf("check %d: %d %s", i, r.Status, r.Body)
		}
		var d api.Decision
		r.json(t, &d)
		if !d.Allowed || d.Remaining != int64(5-i) || d.Limit != 5 || d.RetryAfterMs != 0 || d.ResetAfterMs != 60000 {
			t.Fatalf("check %d: %+v", i, d)
		}
		if got := r.Header.Get("RateLimit-Policy"); got != `"login";q=5;w=60` {
			t.Fatalf("RateLimit-Policy %q", got)
		}
		if got, want := r.Header.Get("RateLimit"), fmt.Sprintf(`"login";r=%d;t=60`, 5-i); got != want {
			t.Fatalf("RateLimit %q, want %q", got, want)
		}
		if r.Header.Get("Retry-After") != "" {
			t.Fatal("Retry-After on an admitted check")
		}
		e.clock.Advance(10 * time.Second)
	}
	// t=50s: units at 0,10,20,30,40 s; the first leaves at 60 s.
	r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "alice", "cost": 1})
	var d api.Decision
	r.json(t, &d)
	if r.Status != 200 || d.Allowed || d.Remaining != 0 || d.RetryAfterMs != 10000 || d.ResetAfterMs != 50000 {
		t.Fatalf("denial: %d %+v", r.Status, d)
	}
	if got := r.Header.Get("Retry-After"); got != "10" {
		t.Fatalf("Retry-After %q, want 10", got)
	}
	if got := r.Header.Get("RateLimit"); got != `"login";r=0;t=50` {
		t.Fatalf("RateLimit %q", got)
	}
	// Another key is untouched, and so is the same key under another policy.
	if r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "bob"}); !strings.Contains(string(r.Body), `"allowed":true`) {
		t.Fatalf("bob: %s", r.Body)
	}
	if r := e.do("POST", "/v1/check", map[string]any{"policy": "fifty", "key": "alice"}); !strings.Contains(string(r.Body), `"allowed":true`) {
		t.Fatalf("alice under another policy: %s", r.Body)
	}
	e.clock.Advance(10 * time.Second)
	if r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "alice"}); !strings.Contains(string(r.Body), `"allowed":true`) {
		t.Fatalf("after Retry-After: %s", r.Body)
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/v1/check", map[string]any{"policy": "one", "key": "k"})
	e.clock.Advance(1100 * time.Millisecond)
	r := e.do("POST", "/v1/check", map[string]any{"policy": "one", "key": "k"})
	var d api.Decision
	r.json(t, &d)
	if d.Allowed || d.RetryAfterMs != 400 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("%+v Retry-After %q", d, r.Header.Get("Retry-After"))
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"one";q=1;w=2` {
		t.Fatalf("a 1.5 s window rounds up in RateLimit-Policy: %q", got)
	}
}

func TestCostZeroPeeks(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 10; i++ {
		r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "k", "cost": 0})
		var d api.Decision
		r.json(t, &d)
		if !d.Allowed || d.Remaining != 4 {
			t.Fatalf("peek %d: %+v", i, d)
		}
	}
	r := e.do("POST", "/v1/check", map[string]any{"policy": "login", "key": "k", "cost": 5})
	if !strings.Contains(string(r.Body), `"allowed":true`) {
		t.Fatalf("peeks consumed quota: %s", r.Body)
	}
}

func TestConcurrentClientsAdmitExactlyTheLimit(t *testing.T) {
	e := newEnv(t)
	const clients = 200
	var admitted, denied atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := doContract(t, &http.Client{}, e.srv.URL, "POST", "/v1/check", map[string]any{"policy": "fifty", "key": "hot"})
			switch {
			case strings.Contains(string(r.Body), `"allowed":true`):
				admitted.Add(1)
			case strings.Contains(string(r.Body), `"allowed":false`):
				denied.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if admitted.Load() != 50 || denied.Load() != clients-50 {
		t.Fatalf("%d clients: %d admitted, %d denied; want exactly 50 admitted", clients, admitted.Load(), denied.Load())
	}
}

func TestShadowPolicyAdmitsAndSaysSo(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/v1/check", map[string]any{"policy": "trial", "key": "k"})
	r := e.do("POST", "/v1/check", map[string]any{"policy": "trial", "key": "k"})
	var d api.Decision
	r.json(t, &d)
	if !d.Allowed || d.ShadowDenied == nil || !*d.ShadowDenied || r.Header.Get("Retry-After") != "" {
		t.Fatalf("shadow: %+v", d)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	e := newEnv(t)
	if r := e.do("GET", "/healthz", nil); r.Status != 200 || !strings.Contains(string(r.Body), `"ok"`) {
		t.Fatalf("healthz: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/readyz", nil); r.Status != 200 {
		t.Fatalf("readyz: %d %s", r.Status, r.Body)
	}
	r := e.do("GET", "/openapi.yaml", nil)
	if r.Status != 200 || !strings.HasPrefix(string(r.Body), "openapi: 3.0.3") || r.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("openapi.yaml: %d %q", r.Status, r.Header.Get("Content-Type"))
	}
	if r := e.do("GET", "/metrics", nil); r.Status != 200 {
		t.Fatalf("metrics: %d", r.Status)
	}
	r = e.do("GET", "/v1/policies", nil)
	var list api.PolicyList
	r.json(t, &list)
	if len(list.Policies) != len(testPolicies) || list.Policies[0].Name != "fifty" || list.Policies[0].Source != api.Config {
		t.Fatalf("policies: %+v", list)
	}
	if r := e.do("GET", "/nope", nil); r.Status != 404 {
		t.Fatalf("unknown path: %d", r.Status)
	}
}

func TestBadCheckInputs(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("k", 513)
	cases := []struct {
		name   string
		body   any
		ctype  string
		status int
		typ    string
		field  string
	}{
		{"malformed JSON", `{"policy":`, "", 400, "malformed", ""},
		{"unknown field", `{"policy":"login","key":"k","cots":2}`, "", 400, "validation", "cots"},
		{"wrong type", `{"policy":"login","key":"k","cost":"1"}`, "", 400, "validation", "cost"},
		{"bad policy name", map[string]any{"policy": "Login!", "key": "k"}, "", 400, "validation", "policy"},
		{"empty key", map[string]any{"policy": "login", "key": ""}, "", 400, "validation", "key"},
		{"513-byte key", map[string]any{"policy": "login", "key": long}, "", 400, "validation", "key"},
		{"negative cost", map[string]any{"policy": "login", "key": "k", "cost": -1}, "", 400, "validation", "cost"},
		{"cost above limit", map[string]any{"policy": "login", "key": "k", "cost": 6}, "", 400, "validation", "cost"},
		{"unknown policy", map[string]any{"policy": "nope", "key": "k"}, "", 404, "not-found", ""},
		{"body too large", `{"policy":"login","key":"` + strings.Repeat("x", 5000) + `"}`, "", 413, "body-too-large", ""},
		{"not JSON", "policy=login", "text/plain", 415, "unsupported-media-type", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := []reqOpt{invalidRequest()}
			if c.ctype != "" {
				opts = append(opts, header("Content-Type", c.ctype))
			}
			r := e.do("POST", "/v1/check", c.body, opts...)
			p := r.problem(t)
			if r.Status != c.status || p.Status != c.status || p.Type != "https://sluice.dev/problems/"+c.typ {
				t.Fatalf("got %d %s, want %d %s: %s", r.Status, p.Type, c.status, c.typ, r.Body)
			}
			if c.field != "" && (p.Errors == nil || (*p.Errors)[0].Field != c.field) {
				t.Fatalf("problem does not name field %q: %s", c.field, r.Body)
			}
		})
	}
}

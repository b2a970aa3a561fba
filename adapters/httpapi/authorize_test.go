package httpapi_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func authorizePath(policy, key string, cost ...int64) string {
	q := url.Values{"policy": {policy}, "key": {key}}
	if len(cost) > 0 {
		q.Set("cost", fmt.Sprint(cost[0]))
	}
	return "/v1/authorize?" + q.Encode()
}

func TestAuthorizeUntilTheLimitThen429(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 5; i++ {
		r := e.do("GET", authorizePath("login", "10.0.0.1"), nil)
		if r.Status != 204 || len(r.Body) != 0 {
			t.Fatalf("authorize %d: %d %s", i, r.Status, r.Body)
		}
		if got := r.Header.Get("RateLimit-Policy"); got != `"login";q=5;w=60` {
			t.Fatalf("RateLimit-Policy %q", got)
		}
		if got, want := r.Header.Get("RateLimit"), fmt.Sprintf(`"login";r=%d;t=60`, 5-i); got != want {
			t.Fatalf("RateLimit %q, want %q", got, want)
		}
		if r.Header.Get("Retry-After") != "" {
			t.Fatal("Retry-After on an admitted request")
		}
		e.clock.Advance(time.Second)
	}
	// t=5s: the first unit (t=0) leaves the window at 60s.
	r := e.do("GET", authorizePath("login", "10.0.0.1"), nil)
	wantProblem(t, r, 429, "rate-limited", "")
	if got := r.Header.Get("Retry-After"); got != "55" {
		t.Fatalf("Retry-After %q, want 55", got)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", got)
	}
	if got := r.Header.Get("RateLimit"); got != `"login";r=0;t=59` {
		t.Fatalf("RateLimit %q", got)
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"login";q=5;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if p := r.problem(t); p.Detail == nil || !strings.Contains(*p.Detail, "5 per 1m") {
		t.Fatalf("the 429 problem should explain the limit: %s", r.Body)
	}
	// Denials record nothing: after Retry-After exactly one unit is free again.
	e.clock.Advance(55 * time.Second)
	if r := e.do("GET", authorizePath("login", "10.0.0.1"), nil); r.Status != 204 {
		t.Fatalf("after Retry-After: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", authorizePath("login", "10.0.0.1"), nil); r.Status != 429 {
		t.Fatalf("one unit left the window, and one was taken: want 429, got %d", r.Status)
	}
	// Other keys are untouched.
	if r := e.do("GET", authorizePath("login", "10.0.0.2"), nil); r.Status != 204 {
		t.Fatalf("another key: %d", r.Status)
	}
}

func TestAuthorizeCostAndPeek(t *testing.T) {
	e := newEnv(t)
	if r := e.do("GET", authorizePath("login", "k", 4), nil); r.Status != 204 || r.Header.Get("RateLimit") != `"login";r=1;t=60` {
		t.Fatalf("cost 4: %d %q", r.Status, r.Header.Get("RateLimit"))
	}
	for i := 0; i < 3; i++ { // cost 0 peeks: the answer a cost-1 request would get, nothing recorded
		if r := e.do("GET", authorizePath("login", "k", 0), nil); r.Status != 204 || r.Header.Get("RateLimit") != `"login";r=0;t=60` {
			t.Fatalf("peek: %d %q", r.Status, r.Header.Get("RateLimit"))
		}
	}
	if r := e.do("GET", authorizePath("login", "k", 2), nil); r.Status != 429 {
		t.Fatalf("cost 2 with 1 left: %d", r.Status)
	}
	if r := e.do("GET", authorizePath("login", "k", 1), nil); r.Status != 204 {
		t.Fatalf("cost 1 with 1 left (the denial recorded nothing): %d", r.Status)
	}
}

func TestAuthorizeBadQuery(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("k", 513)
	cases := []struct {
		name   string
		query  string
		status int
		slug   string
		field  string
	}{
		{"policy missing", "key=k", 400, "validation", "policy"},
		{"key missing", "policy=login", 400, "validation", "key"},
		{"empty key", "policy=login&key=", 400, "validation", "key"},
		{"513-byte key", "policy=login&key=" + long, 400, "validation", "key"},
		{"bad policy name", "policy=Login%21&key=k", 400, "validation", "policy"},
		{"cost not a number", "policy=login&key=k&cost=abc", 400, "validation", "cost"},
		{"negative cost", "policy=login&key=k&cost=-1", 400, "validation", "cost"},
		{"cost above the limit", "policy=login&key=k&cost=6", 400, "validation", "cost"},
		{"unknown policy", "policy=nope&key=k", 404, "not-found", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.in(t)
			r := e.do("GET", "/v1/authorize?"+c.query, nil, invalidRequest())
			wantProblem(t, r, c.status, c.slug, c.field)
			if r.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("problem without Cache-Control: no-store")
			}
		})
	}
}

package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/api"
)

func (e *env) putPolicy(name string, spec any, wantStatus int) api.Policy {
	e.t.Helper()
	r := e.do("PUT", "/v1/policies/"+name, spec)
	if r.Status != wantStatus {
		e.t.Fatalf("PUT /v1/policies/%s: %d %s, want %d", name, r.Status, r.Body, wantStatus)
	}
	var p api.Policy
	r.json(e.t, &p)
	return p
}

func TestPolicyCreateReplaceGetList(t *testing.T) {
	e := newEnv(t)
	p := e.putPolicy("burst", map[string]any{"limit": 3, "window": "90s"}, 201)
	want := api.Policy{Name: "burst", Limit: 3, Window: "1m30s", WindowMs: 90000, Algorithm: "sliding_log", FailureMode: "deny", Shadow: false, Source: api.Api}
	if p != want {
		t.Fatalf("created %+v, want %+v", p, want)
	}
	p = e.putPolicy("burst", map[string]any{"limit": 4, "window": "2m", "algorithm": "sliding_log", "failure_mode": "allow", "shadow": true}, 200)
	want = api.Policy{Name: "burst", Limit: 4, Window: "2m", WindowMs: 120000, Algorithm: "sliding_log", FailureMode: "allow", Shadow: true, Source: api.Api}
	if p != want {
		t.Fatalf("replaced %+v, want %+v", p, want)
	}
	r := e.do("GET", "/v1/policies/burst", nil)
	var got api.Policy
	r.json(t, &got)
	if r.Status != 200 || got != want {
		t.Fatalf("GET: %d %+v", r.Status, got)
	}
	r = e.do("GET", "/v1/policies/login", nil)
	r.json(t, &got)
	if got.Source != api.Config || got.Limit != 5 || got.Window != "1m" || got.WindowMs != 60000 {
		t.Fatalf("GET config policy: %+v", got)
	}
	e.putPolicy("a-first", map[string]any{"limit": 1, "window": "7d"}, 201)
	r = e.do("GET", "/v1/policies", nil)
	var list api.PolicyList
	r.json(t, &list)
	var names []string
	for _, p := range list.Policies {
		names = append(names, p.Name+":"+string(p.Source))
	}
	if strings.Join(names, " ") != "a-first:api burst:api fifty:config login:config one:config soft:config trial:config" {
		t.Fatalf("list: %v", names)
	}
	// The new policy decides at once.
	if d, _ := e.decision(check("a-first", "k")); !d.Allowed || d.Limit != 1 {
		t.Fatalf("check on an API policy: %+v", d)
	}
	if d, _ := e.decision(check("a-first", "k")); d.Allowed || d.RetryAfterMs != 7*24*3600*1000 {
		t.Fatalf("second check on a-first: %+v", d)
	}
}

func TestConfigPoliciesAreReadOnly(t *testing.T) {
	e := newEnv(t)
	wantProblem(t, e.do("PUT", "/v1/policies/login", map[string]any{"limit": 50, "window": "1m"}), 409, "conflict", "")
	wantProblem(t, e.do("DELETE", "/v1/policies/login", nil), 409, "conflict", "")
	r := e.do("GET", "/v1/policies/login", nil)
	var p api.Policy
	r.json(t, &p)
	if p.Limit != 5 {
		t.Fatalf("a config policy changed: %+v", p)
	}
}

func TestPolicyNotFoundAndBadNames(t *testing.T) {
	e := newEnv(t)
	wantProblem(t, e.do("GET", "/v1/policies/nope", nil), 404, "not-found", "")
	wantProblem(t, e.do("DELETE", "/v1/policies/nope", nil), 404, "not-found", "")
	long := strings.Repeat("a", 65)
	for _, name := range []string{"Bad", "-lead", long, "a%21"} {
		wantProblem(t, e.do("GET", "/v1/policies/"+name, nil, invalidRequest()), 400, "validation", "name")
		wantProblem(t, e.do("DELETE", "/v1/policies/"+name, nil, invalidRequest()), 400, "validation", "name")
		wantProblem(t, e.do("PUT", "/v1/policies/"+name, map[string]any{"limit": 1, "window": "1m"}, invalidRequest()), 400, "validation", "name")
	}
}

func TestPutPolicyValidation(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		body  any
		slug  string
		field string
	}{
		{"limit 0", map[string]any{"limit": 0, "window": "1m"}, "validation", "limit"},
		{"limit missing", map[string]any{"window": "1m"}, "validation", "limit"},
		{"limit not an integer", `{"limit":"5","window":"1m"}`, "validation", "limit"},
		{"window missing", map[string]any{"limit": 1}, "validation", "window"},
		{"window below 1s", map[string]any{"limit": 1, "window": "999ms"}, "validation", "window"},
		{"window above 31d", map[string]any{"limit": 1, "window": "32d"}, "validation", "window"},
		{"window not a duration", map[string]any{"limit": 1, "window": "soon"}, "validation", "window"},
		{"unknown algorithm", map[string]any{"limit": 1, "window": "1m", "algorithm": "leaky_bucket"}, "validation", "algorithm"},
		{"limit above 2^53-1", `{"limit":9007199254740992,"window":"1m"}`, "validation", "limit"},
		{"limit 2^63-1", `{"limit":9223372036854775807,"window":"1m"}`, "validation", "limit"},
		{"resolution without sliding_window", map[string]any{"limit": 1, "window": "1m", "algorithm": "token_bucket", "resolution": "1s"}, "validation", "resolution"},
		{"resolution above the window", map[string]any{"limit": 1, "window": "1m", "algorithm": "sliding_window", "resolution": "2m"}, "validation", "resolution"},
		{"unknown failure_mode", map[string]any{"limit": 1, "window": "1m", "failure_mode": "maybe"}, "validation", "failure_mode"},
		{"unknown field", `{"limit":1,"window":"1m","windw":"2m"}`, "validation", "windw"},
		{"malformed", `{"limit":`, "malformed", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.in(t)
			wantProblem(t, e.do("PUT", "/v1/policies/new", c.body, invalidRequest()), 400, c.slug, c.field)
		})
	}
	wantProblem(t, e.do("GET", "/v1/policies/new", nil), 404, "not-found", "")
	wantProblem(t, e.do("PUT", "/v1/policies/new", map[string]any{"limit": 1, "window": "1m"}, header("Content-Type", "text/plain"), invalidRequest()), 415, "unsupported-media-type", "")
	wantProblem(t, e.do("PUT", "/v1/policies/new", `{"limit":1,"window":"1m","x":"`+strings.Repeat("x", 5000)+`"}`, invalidRequest()), 413, "body-too-large", "")
}

func TestChangingAPolicyKeepsItsKeysHistory(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("burst", map[string]any{"limit": 5, "window": "1m"}, 201)
	for range 3 {
		e.decision(check("burst", "k"))
	}
	e.clock.Advance(30 * time.Second)
	// A higher limit counts the 3 units already admitted.
	e.putPolicy("burst", map[string]any{"limit": 4, "window": "1m"}, 200)
	if d, _ := e.decision(check("burst", "k")); !d.Allowed || d.Remaining != 0 || d.Limit != 4 {
		t.Fatalf("limit 4 after 3 units: %+v", d)
	}
	if d, _ := e.decision(check("burst", "k")); d.Allowed || d.RetryAfterMs != 30000 {
		t.Fatalf("limit 4 after 4 units: %+v", d)
	}
	// A longer window keeps the same instants: units at t=0 (×3) and t=30s, now t=30s, window 2m.
	e.putPolicy("burst", map[string]any{"limit": 10, "window": "2m"}, 200)
	d := e.peek("burst", "k")
	if !d.Allowed || d.Remaining != 5 || d.ResetAfterMs != 120000 {
		t.Fatalf("window 2m with 4 units: %+v (want remaining 5 = 10 - 4 - 1 for a peek)", d)
	}
	// A shorter window lets the old units go: window 20s at t=30s holds only... nothing from t=0; the t=30s unit stays.
	e.putPolicy("burst", map[string]any{"limit": 10, "window": "20s"}, 200)
	if d := e.peek("burst", "k"); d.Remaining != 8 {
		t.Fatalf("window 20s: %+v (want remaining 8 = 10 - 1 - 1)", d)
	}
}

func TestDeletePolicyDropsItsKeys(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("tmp", map[string]any{"limit": 1, "window": "1h"}, 201)
	e.decision(check("tmp", "k"))
	if r := e.do("DELETE", "/v1/policies/tmp", nil); r.Status != 204 || len(r.Body) != 0 {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	wantProblem(t, e.do("GET", "/v1/policies/tmp", nil), 404, "not-found", "")
	wantProblem(t, e.do("POST", "/v1/check", check("tmp", "k")), 404, "not-found", "")
	wantProblem(t, e.do("DELETE", "/v1/policies/tmp", nil), 404, "not-found", "")
	// Made again with the same name, it starts from nothing.
	e.putPolicy("tmp", map[string]any{"limit": 1, "window": "1h"}, 201)
	if d, _ := e.decision(check("tmp", "k")); !d.Allowed {
		t.Fatalf("the deleted policy's key kept its units: %+v", d)
	}
}

// Lowering a limit below the units a key holds must deny with remaining 0 (the contract's minimum), not a
// negative number, until enough units leave the window.
func TestLoweringALimitBelowUsage(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("burst", map[string]any{"limit": 5, "window": "1m"}, 201)
	for range 3 {
		e.decision(check("burst", "k"))
	}
	e.clock.Advance(30 * time.Second)
	e.decision(check("burst", "k"))
	e.putPolicy("burst", map[string]any{"limit": 2, "window": "1m"}, 200)
	// 3 units at t=0 and 1 at t=30s: a cost of 1 fits under 2 when the three leave, at t=60s.
	if d, _ := e.decision(check("burst", "k")); d.Allowed || d.Remaining != 0 || d.RetryAfterMs != 30000 {
		t.Fatalf("limit 2 with 4 units in the window: %+v", d)
	}
	if d := e.peek("burst", "k"); d.Allowed || d.Remaining != 0 {
		t.Fatalf("peek: %+v", d)
	}
	wantProblem(t, e.do("GET", authorizePath("burst", "k"), nil), 429, "rate-limited", "")
	e.clock.Advance(30 * time.Second)
	if d, _ := e.decision(check("burst", "k")); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after the old units left: %+v", d)
	}
}

// Every algorithm is a policy field: created over the API, it decides as the domain defines it.
func TestEveryAlgorithmOverTheAPI(t *testing.T) {
	e := newEnv(t)
	for _, alg := range []string{"sliding_log", "sliding_window", "token_bucket", "fixed_window"} {
		name := strings.ReplaceAll(alg, "_", "-")
		e.putPolicy(name, map[string]any{"limit": 2, "window": "1h", "algorithm": alg}, 201)
		for i := range 3 {
			d, _ := e.decision(check(name, "k"))
			if want := i < 2; d.Allowed != want {
				t.Fatalf("%s check %d: allowed=%v, want %v", alg, i, d.Allowed, want)
			}
		}
	}
	var p api.Policy
	r := e.do("GET", "/v1/policies/sliding-window", nil)
	if r.Status != 200 {
		t.Fatalf("GET: %d %s", r.Status, r.Body)
	}
	r.json(t, &p)
	if p.Algorithm != api.Algorithm("sliding_window") || p.Resolution == nil || *p.Resolution != "1m" {
		t.Fatalf("sliding_window policy body %+v (resolution %v)", p, p.Resolution)
	}
}

package httpapi_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/api"
)

// Overrides over the API: create, replace, read, list in pages, delete; every decision names the override that
// decided it; a bad body changes nothing and names its fields; a config policy's are read-only.
func TestOverridesOverTheAPI(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("tiers", map[string]any{"limit": 2, "window": "1h"}, 201)
	path := func(match string) string { return "/v1/policies/tiers/overrides/" + url.PathEscape(match) }
	var o api.Override
	r := e.do("PUT", path("tenant:42:*"), map[string]any{"limit": 5})
	r.json(t, &o)
	if r.Status != 201 || o.Match != "tenant:42:*" || o.Limit != 5 || o.Window != nil {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	r = e.do("PUT", path("tenant:42:*"), map[string]any{"limit": 3, "window": "2m"})
	r.json(t, &o)
	if r.Status != 200 || o.Limit != 3 || o.Window == nil || *o.Window != "2m" {
		t.Fatalf("replace: %d %s", r.Status, r.Body)
	}
	e.do("PUT", path("tenant:7"), map[string]any{"limit": 1})
	r = e.do("GET", path("tenant:42:*"), nil)
	r.json(t, &o)
	if r.Status != 200 || o.Limit != 3 {
		t.Fatalf("get: %d %s", r.Status, r.Body)
	}
	// Decisions: the override's limit and window, and its name in the body.
	for i := range 4 {
		d, _ := e.decision(check("tiers", "tenant:42:bob"))
		if d.Allowed != (i < 3) || d.Limit != 3 || d.Override == nil || *d.Override != "tenant:42:*" {
			t.Fatalf("check %d under tenant:42:*: %+v", i, d)
		}
	}
	if d, _ := e.decision(check("tiers", "guest")); d.Override != nil || d.Limit != 2 {
		t.Fatalf("a key without an override: %+v", d)
	}
	e.clock.Advance(2 * time.Minute) // the override's window
	if d, _ := e.decision(check("tiers", "tenant:42:bob")); !d.Allowed {
		t.Fatalf("after the override's 2m window: %+v", d)
	}
	// Pages of one.
	var page api.OverridePage
	r = e.do("GET", "/v1/policies/tiers/overrides?limit=1", nil)
	r.json(t, &page)
	if r.Status != 200 || len(page.Overrides) != 1 || page.Overrides[0].Match != "tenant:42:*" || page.Next == nil {
		t.Fatalf("page 1: %d %s", r.Status, r.Body)
	}
	r = e.do("GET", "/v1/policies/tiers/overrides?limit=1&after="+url.QueryEscape(*page.Next), nil)
	page = api.OverridePage{}
	r.json(t, &page)
	if r.Status != 200 || len(page.Overrides) != 1 || page.Overrides[0].Match != "tenant:7" || page.Next != nil {
		t.Fatalf("page 2: %d %s", r.Status, r.Body)
	}
	wantProblem(t, e.do("GET", "/v1/policies/tiers/overrides?limit=0", nil, invalidRequest()), 400, "validation", "limit")
	// Bad bodies change nothing.
	wantProblem(t, e.do("PUT", path("x"), map[string]any{"limit": 0}, invalidRequest()), 400, "validation", "limit")
	wantProblem(t, e.do("PUT", path("x"), map[string]any{"limit": 1, "window": "1.5h"}, invalidRequest()), 400, "validation", "window")
	wantProblem(t, e.do("PUT", path("*"), map[string]any{"limit": 1}), 400, "validation", "match")
	wantProblem(t, e.do("GET", path("x"), nil), 404, "not-found", "")
	// A match with a slash travels percent-encoded, as a key does.
	r = e.do("PUT", "/v1/policies/tiers/overrides/a%2Fb%3A*", map[string]any{"limit": 1})
	r.json(t, &o)
	if r.Status != 201 || o.Match != "a/b:*" {
		t.Fatalf("a match with a slash: %d %s", r.Status, r.Body)
	}
	if d, _ := e.decision(check("tiers", "a/b:c")); d.Override == nil || *d.Override != "a/b:*" || d.Limit != 1 {
		t.Fatalf("a key under a match with a slash: %+v", d)
	}
	e.do("DELETE", "/v1/policies/tiers/overrides/a%2Fb%3A*", nil)
	// Deleted: the key is back under the policy, keeping what it spent in the hour.
	if r := e.do("DELETE", path("tenant:7"), nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	wantProblem(t, e.do("DELETE", path("tenant:7"), nil), 404, "not-found", "")
	// A config policy's overrides are read-only; an unknown policy has none.
	wantProblem(t, e.do("PUT", "/v1/policies/login/overrides/x", map[string]any{"limit": 1}), 409, "conflict", "")
	wantProblem(t, e.do("DELETE", "/v1/policies/login/overrides/x", nil), 409, "conflict", "")
	wantProblem(t, e.do("GET", "/v1/policies/nope/overrides", nil), 404, "not-found", "")
	r = e.do("GET", "/v1/policies/login/overrides", nil)
	page = api.OverridePage{}
	r.json(t, &page)
	if r.Status != 200 || len(page.Overrides) != 0 {
		t.Fatalf("a config policy without overrides: %d %s", r.Status, r.Body)
	}
}

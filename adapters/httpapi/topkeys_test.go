package httpapi_test

import (
	"testing"

	"github.com/sluice-dev/sluice/api"
)

// GET /v1/policies/{name}/top: who is being limited (issue 25). The keys with the most denials (shadow denials
// included) or admissions on this replica, highest first; an unknown policy is 404, a bad parameter 400.
func TestTopKeys(t *testing.T) {
	e := newEnv(t)
	for range 8 { // login admits 5 a minute: 5 admitted, 3 denied
		e.decision(check("login", "mallory"))
	}
	for range 6 {
		e.decision(check("login", "trudy"))
	}
	e.decision(check("login", "alice"))
	e.decision(check("trial", "eve")) // shadow: admitted, counted as denied on its second check
	e.decision(check("trial", "eve"))

	var top api.TopKeys
	r := e.do("GET", "/v1/policies/login/top", nil)
	if r.Status != 200 {
		t.Fatalf("top: %d %s", r.Status, r.Body)
	}
	r.json(t, &top)
	if top.Policy != "login" || top.By != "denied" || len(top.Keys) != 2 || top.Keys[0].Key != "mallory" || top.Keys[0].Count != 3 ||
		top.Keys[1].Key != "trudy" || top.Keys[1].Count != 1 || top.Keys[0].Error != 0 || top.IntervalMs <= 0 {
		t.Fatalf("top denied: %+v", top)
	}
	r = e.do("GET", "/v1/policies/login/top?by=allowed&limit=2", nil)
	r.json(t, &top)
	if r.Status != 200 || len(top.Keys) != 2 || top.Keys[0].Key != "mallory" || top.Keys[0].Count != 5 || top.Keys[1].Key != "trudy" {
		t.Fatalf("top allowed, limit 2: %d %+v", r.Status, top)
	}
	r = e.do("GET", "/v1/policies/trial/top", nil)
	r.json(t, &top)
	if len(top.Keys) != 1 || top.Keys[0].Key != "eve" || top.Keys[0].Count != 1 {
		t.Fatalf("shadow denials: %+v", top)
	}
	if r := e.do("GET", "/v1/policies/nope/top", nil); r.Status != 404 {
		t.Fatalf("unknown policy: %d %s", r.Status, r.Body)
	}
	for _, q := range []string{"?by=rejected", "?limit=0", "?limit=65", "?limit=x"} {
		if r := e.do("GET", "/v1/policies/login/top"+q, nil, invalidRequest()); r.Status != 400 {
			t.Fatalf("%s: %d %s", q, r.Status, r.Body)
		}
	}
}

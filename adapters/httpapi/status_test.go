package httpapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// TestWrongMethodIs405: a known path with a method it does not serve is a 405 problem with Allow, before the
// token, the media type or the body are looked at.
func TestWrongMethodIs405(t *testing.T) {
	tokens := withTokens(httpapi.Token{Name: "edge", Secret: "check-secret", Role: httpapi.RoleCheck})
	e := newEnv(t, tokens)
	for _, c := range []struct {
		method, path, allow string
		body                any
	}{
		{"GET", "/v1/check", "POST", nil},
		{"DELETE", "/v1/checks", "POST", nil},
		{"POST", "/healthz", "GET", nil},
		{"POST", "/metrics", "GET", nil},
		{"POST", "/readyz", "GET", `{}`},
		{"POST", "/v1/authorize", "GET", nil}, // body-less, no Content-Type: was 415
		{"PATCH", "/v1/policies/login", "GET, PUT, DELETE", nil},
		{"POST", "/v1/policies", "GET", nil},
		{"PUT", "/v1/policies/login/keys/k", "GET, DELETE", nil},
		{"HEAD", "/v1/authorize?policy=login&key=k", "GET", nil},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := e.in(t).do(c.method, c.path, c.body)
			if r.Status != 405 || r.Header.Get("Allow") != c.allow {
				t.Fatalf("%d Allow %q, want 405 Allow %q: %s", r.Status, r.Header.Get("Allow"), c.allow, r.Body)
			}
			if c.method != "HEAD" {
				wantProblem(t, r, 405, "method-not-allowed", "")
			}
		})
	}
}

// TestHeadAuthorizeSpendsNothing: HEAD /v1/authorize is refused (405) rather than answered by the GET handler,
// which spent a unit.
func TestHeadAuthorizeSpendsNothing(t *testing.T) {
	e := newEnv(t)
	for range 3 {
		if r := e.do("HEAD", authorizePath("one", "k"), nil); r.Status != 405 {
			t.Fatalf("HEAD: %d", r.Status)
		}
	}
	// "one" admits 1 per 1.5 s: the unit is still there.
	if r := e.do("GET", authorizePath("one", "k"), nil); r.Status != 204 {
		t.Fatalf("GET after HEADs: %d %s", r.Status, r.Body)
	}
}

// TestUnknownPathIs404ForEveryToken: an unknown path is a 404, also for a check-role token (was 403 "needs role
// admin") and without a token.
func TestUnknownPathIs404ForEveryToken(t *testing.T) {
	e := newEnv(t, withTokens(httpapi.Token{Name: "edge", Secret: "check-secret", Role: httpapi.RoleCheck}))
	for _, opts := range [][]reqOpt{{bearer("check-secret")}, {bearer("wrong")}, nil} {
		for _, p := range []string{"/v1/nope", "/v1/policies/login/key", "/v1/policies/login/keys/k/more", "/nope"} {
			wantProblem(t, e.do("GET", p, nil, opts...), 404, "not-found", "")
		}
	}
	// A known admin path still needs an admin token.
	wantProblem(t, e.do("GET", "/v1/policies", nil, bearer("check-secret")), 403, "forbidden", "")
}

// TestQueryErrorsInPlainWords: bad percent-encoding names the parameter (was "key: is required"), and a cost
// that is not an integer says so without strconv's text.
func TestQueryErrorsInPlainWords(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ query, field, want string }{
		{"policy=login&key=%zz", "key", "percent-encoding"},
		{"policy=login&key=a%2", "key", "percent-encoding"},
		{"policy=log%G1n&key=k", "policy", "percent-encoding"},
		{"policy=login&key=k&cost=1.5", "cost", "must be an integer"},
		{"policy=login&key=k&cost=ten", "cost", "must be an integer"},
		{"policy=login&key=k&cost=99999999999999999999", "cost", "must be an integer"},
	} {
		r := e.do("GET", "/v1/authorize?"+c.query, nil, invalidRequest())
		wantProblem(t, r, 400, "validation", c.field)
		var p api.Problem
		r.json(t, &p)
		d := (*p.Errors)[0].Detail
		if !strings.Contains(d, c.want) || strings.Contains(d, "strconv") || strings.Contains(d, "Parse") {
			t.Errorf("%s: detail %q, want %q in plain words", c.query, d, c.want)
		}
	}
}

// TestStoreFailuresNameTheirCause: a timeout, a full memory store and any other failure each get their own
// detail (none of which repeats the store's words, which may name hosts) and their own metric reason.
func TestStoreFailuresNameTheirCause(t *testing.T) {
	e := newRichEnv(t)
	for _, c := range []struct {
		name   string
		err    error
		detail string
	}{
		{"timeout", &domain.UnavailableError{Err: fmt.Errorf("postgres decide: no answer within 250ms: %w", context.DeadlineExceeded)}, "did not answer in time"},
		{"full", domain.ErrStoreFull, "memory store is full"},
		{"failed", fmt.Errorf("statement failed on 10.1.2.3:5432: %w", errStoreDown), "failed to answer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.flaky.failWith(c.err)
			r := e.in(t).do("POST", "/v1/check", check("login", "k"))
			p := r.problem(t)
			wantProblem(t, r, 503, "store-unavailable", "")
			if p.Detail == nil || !strings.Contains(*p.Detail, c.detail) || strings.Contains(*p.Detail, "10.1.2.3") {
				t.Fatalf("detail %v, want %q and no address", p.Detail, c.detail)
			}
		})
	}
	e.flaky.failing.Store(false)
	body := string(e.do("GET", "/metrics", nil).Body)
	for _, reason := range []string{"timeout", "full", "failed"} {
		if want := `sluice_store_errors_total{op="decide",reason="` + reason + `"} 1`; !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

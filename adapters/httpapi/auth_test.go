package httpapi_test

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/adapters/httpapi"
)

const (
	checkSecret = "check-secret-0123456789abcdef"
	adminSecret = "admin-secret-0123456789abcdef"
)

func withTestTokens() envOption {
	return withTokens(
		httpapi.Token{Name: "edge", Secret: checkSecret, Role: httpapi.RoleCheck},
		httpapi.Token{Name: "ops", Secret: adminSecret, Role: httpapi.RoleAdmin},
	)
}

// TestAuthEveryOperation sends every operation with no token, a wrong token, a check token and an admin token.
func TestAuthEveryOperation(t *testing.T) {
	e := newEnv(t, withTestTokens())
	type op struct {
		id           string
		method, path string
		body         any
		role         httpapi.Role // "" public, check, admin
		ok           []int
	}
	ops := []op{
		{"check", "POST", "/v1/check", check("fifty", "k"), httpapi.RoleCheck, []int{200}},
		{"checkMany", "POST", "/v1/checks", map[string]any{"checks": []any{check("fifty", "k")}}, httpapi.RoleCheck, []int{200}},
		{"authorize", "GET", authorizePath("fifty", "k"), nil, httpapi.RoleCheck, []int{204}},
		{"getKey", "GET", "/v1/policies/fifty/keys/k", nil, httpapi.RoleCheck, []int{200}},
		{"resetKey", "DELETE", "/v1/policies/fifty/keys/k", nil, httpapi.RoleAdmin, []int{204}},
		{"getKeyByQuery", "GET", "/v1/policies/fifty/keys?key=..", nil, httpapi.RoleCheck, []int{200}},
		{"resetKeyByQuery", "DELETE", "/v1/policies/fifty/keys?key=..", nil, httpapi.RoleAdmin, []int{204}},
		{"listPolicies", "GET", "/v1/policies", nil, httpapi.RoleAdmin, []int{200}},
		{"getPolicy", "GET", "/v1/policies/login", nil, httpapi.RoleAdmin, []int{200}},
		{"topKeys", "GET", "/v1/policies/login/top", nil, httpapi.RoleAdmin, []int{200}},
		{"putPolicy", "PUT", "/v1/policies/made", map[string]any{"limit": 1, "window": "1m"}, httpapi.RoleAdmin, []int{200, 201}},
		{"deletePolicy", "DELETE", "/v1/policies/made", nil, httpapi.RoleAdmin, []int{204}},
		{"healthz", "GET", "/healthz", nil, "", []int{200}},
		{"readyz", "GET", "/readyz", nil, "", []int{200}},
		{"storeHealth", "GET", "/healthz/store", nil, "", []int{200}},
		{"metrics", "GET", "/metrics", nil, "", []int{200}},
		{"openapiSpec", "GET", "/openapi.yaml", nil, "", []int{200}},
	}
	callers := []struct {
		name string
		opts []reqOpt
		role httpapi.Role // what the caller may do; "none" for no or a wrong token
	}{
		{"no token", nil, "none"},
		{"unknown token", []reqOpt{bearer("not-a-token-0123456789abcdef")}, "none"},
		{"admin secret with a typo", []reqOpt{bearer(adminSecret + "x")}, "none"},
		{"empty bearer", []reqOpt{header("Authorization", "Bearer ")}, "none"},
		{"basic auth", []reqOpt{header("Authorization", "Basic "+adminSecret)}, "none"},
		{"check token", []reqOpt{bearer(checkSecret)}, httpapi.RoleCheck},
		{"admin token", []reqOpt{bearer(adminSecret)}, httpapi.RoleAdmin},
		{"admin token, lower-case scheme", []reqOpt{header("Authorization", "bearer "+adminSecret)}, httpapi.RoleAdmin},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			e := e.in(t)
			for _, o := range ops {
				if o.id == "deletePolicy" && c.role == httpapi.RoleAdmin {
					// make sure there is something to delete
					e.do("PUT", "/v1/policies/made", map[string]any{"limit": 1, "window": "1m"}, bearer(adminSecret))
				}
				r := e.do(o.method, o.path, o.body, c.opts...)
				switch {
				case o.role == "" || o.role == c.role || c.role == httpapi.RoleAdmin:
					if !containsInt(o.ok, r.Status) {
						t.Fatalf("%s: %d %s, want %v", o.id, r.Status, r.Body, o.ok)
					}
				case c.role == "none":
					wantProblem(t, r, 401, "unauthenticated", "")
					if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
						t.Fatalf("%s: 401 with WWW-Authenticate %q", o.id, got)
					}
				default:
					wantProblem(t, r, 403, "forbidden", "")
				}
			}
		})
	}
}

// TestBadInputsTokensAndRoles extends TestBadCheckInputs with the rows about tokens and roles: authentication
// comes before everything else, so a bad body without a token is 401, not 400.
func TestBadInputsTokensAndRoles(t *testing.T) {
	e := newEnv(t, withTestTokens())
	cases := []struct {
		name         string
		method, path string
		body         any
		opts         []reqOpt
		status       int
		slug         string
	}{
		{"missing token", "POST", "/v1/check", check("login", "k"), nil, 401, "unauthenticated"},
		{"wrong token", "POST", "/v1/check", check("login", "k"), []reqOpt{bearer("wrong-token-0123456789")}, 401, "unauthenticated"},
		{"missing token, malformed body", "POST", "/v1/check", `{"policy":`, []reqOpt{invalidRequest()}, 401, "unauthenticated"},
		{"missing token, authorize", "GET", authorizePath("login", "k"), nil, nil, 401, "unauthenticated"},
		{"wrong role: check token resets a key", "DELETE", "/v1/policies/login/keys/k", nil, []reqOpt{bearer(checkSecret)}, 403, "forbidden"},
		{"wrong role: check token writes a policy", "PUT", "/v1/policies/x", map[string]any{"limit": 1, "window": "1m"}, []reqOpt{bearer(checkSecret)}, 403, "forbidden"},
		{"wrong role: check token lists policies", "GET", "/v1/policies", nil, []reqOpt{bearer(checkSecret)}, 403, "forbidden"},
		// The role is the matched route's, not the path's spelling: this is GET /v1/policies/{name} of a policy
		// named "keys" (issue 27), though the path ends as the key route's does.
		{"wrong role: check token reads the policy named keys", "GET", "/v1/policies/keys", nil, []reqOpt{bearer(checkSecret)}, 403, "forbidden"},
		{"wrong role: check token reads the policy named keys, trailing slash", "GET", "/v1/policies/keys/", nil, []reqOpt{bearer(checkSecret)}, 404, "not-found"},
		{"right token, bad body", "POST", "/v1/check", `{"policy":`, []reqOpt{bearer(checkSecret), invalidRequest()}, 400, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantProblem(t, e.in(t).do(c.method, c.path, c.body, c.opts...), c.status, c.slug, "")
		})
	}
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

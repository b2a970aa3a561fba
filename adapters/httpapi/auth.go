package httpapi

import (
	"net/http"
	"strings"

	"github.com/sluice-dev/sluice/adapters/bearer"
)

// Role is what a token may do.
type Role string

const (
	// RoleCheck may check, multi-check, authorize, hold and peek at keys.
	RoleCheck Role = "check"
	// RoleAdmin may do everything, including policy changes and key resets.
	RoleAdmin Role = "admin"
)

// Token is a bearer token and its role. Name is for logs; the secret never is.
type Token struct {
	Name   string
	Secret string
	Role   Role
}

// authenticator checks bearer tokens with adapters/bearer (shared with the Envoy RLS listener): secrets kept only
// as SHA-256 digests, compared in constant time.
type authenticator struct {
	tokens *bearer.Set
}

// BearerTokens converts tokens for bearer.New and bearer.Set.Replace.
func BearerTokens(tokens []Token) []bearer.Token {
	bt := make([]bearer.Token, len(tokens))
	for i, t := range tokens {
		bt[i] = bearer.Token{Secret: t.Secret, Role: string(t.Role)}
	}
	return bt
}

// checkRoutes are the routes (ServeMux patterns of openapi.yaml) a token with role check may use: check,
// checks, authorize, holds and a key's state (openapi.yaml's securitySchemes). Every other route under /v1/ needs role
// admin; the others (health, metrics, the spec) are public.
var checkRoutes = map[string]bool{
	"POST /v1/check":                     true,
	"POST /v1/checks":                    true,
	"GET /v1/authorize":                  true,
	"GET /v1/policies/{name}/keys":       true,
	"GET /v1/policies/{name}/keys/{key}": true,
	"POST /v1/holds":                     true,
	"POST /v1/holds/{id}/settle":         true,
	"POST /v1/holds/{id}/renew":          true,
	"DELETE /v1/holds/{id}":              true,
}

// required reports the role the route pattern needs, or "" for a public one. It is decided on the route the
// ServeMux matched, never on the path's spelling: GET /v1/policies/keys is the policy named "keys" (admin),
// though its path ends as a key route's does.
func required(pattern string) Role {
	_, path, _ := strings.Cut(pattern, " ")
	switch {
	case !strings.HasPrefix(path, "/v1/"):
		return ""
	case checkRoutes[pattern]:
		return RoleCheck
	}
	return RoleAdmin
}

// role returns the role of the request's bearer token and whether one matched.
func (a *authenticator) role(r *http.Request) (Role, bool) {
	role, ok := a.tokens.Role(r.Header.Get("Authorization"))
	return Role(role), ok
}

// middleware enforces the role of route pattern. With no tokens configured every request passes: the app only
// allows that on a loopback listen address. The tokens are read per request, so a reload that replaces them
// binds the next request.
func (a *authenticator) middleware(pattern string, next http.Handler) http.Handler {
	need := required(pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if need == "" || a.tokens.Len() == 0 {
			next.ServeHTTP(w, r)
			return
		}
		role, ok := a.role(r)
		if !ok {
			writeProblem(w, problem(kindUnauthn, "send Authorization: Bearer <token> with a configured token", nil))
			return
		}
		if need == RoleAdmin && role != RoleAdmin {
			writeProblem(w, problem(kindForbidden, "this operation needs a token with role admin; this token has role "+string(role), nil))
			return
		}
		next.ServeHTTP(w, r)
	})
}

package httpapi

import (
	"net/http"
	"strings"

	"github.com/sluice-dev/sluice/adapters/bearer"
)

// Role is what a token may do.
type Role string

const (
	// RoleCheck may check, multi-check, authorize and peek at keys.
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

func newAuthenticator(tokens []Token) *authenticator {
	bt := make([]bearer.Token, len(tokens))
	for i, t := range tokens {
		bt[i] = bearer.Token{Secret: t.Secret, Role: string(t.Role)}
	}
	return &authenticator{tokens: bearer.New(bt)}
}

// required reports the role an endpoint needs, or "" for public ones (health, metrics, the spec).
func required(r *http.Request) Role {
	p := r.URL.Path
	if !strings.HasPrefix(p, "/v1/") {
		return ""
	}
	switch {
	case p == "/v1/check", p == "/v1/checks", p == "/v1/authorize":
		return RoleCheck
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/policies/") &&
		(strings.Contains(p[len("/v1/policies/"):], "/keys/") || strings.HasSuffix(p, "/keys")):
		return RoleCheck // peek, with the key in the path or the query
	}
	return RoleAdmin
}

// role returns the role of the request's bearer token and whether one matched.
func (a *authenticator) role(r *http.Request) (Role, bool) {
	role, ok := a.tokens.Role(r.Header.Get("Authorization"))
	return Role(role), ok
}

// middleware enforces roles. With no tokens configured every request passes: the app only allows that on a
// loopback listen address.
func (a *authenticator) middleware(next http.Handler) http.Handler {
	if a.tokens.Len() == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := required(r)
		if need == "" {
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

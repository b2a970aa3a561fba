// Package bearer checks `Authorization: Bearer <token>` credentials against configured tokens, for every front end
// (the HTTP API's header, the Envoy RLS listener's gRPC metadata), so both accept exactly the same tokens.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"sync/atomic"
)

// Token is a secret and the role it grants (the caller's own role names, e.g. "check", "admin").
type Token struct {
	Secret string
	Role   string
}

// Set holds tokens as SHA-256 digests only and compares a presented secret in constant time against every one,
// so neither the match nor its position leaks through timing. Safe for concurrent use; Replace swaps the whole
// table at once (a reload), so a request sees either the old tokens or the new ones.
type Set struct {
	tokens atomic.Pointer[[]hashed]
}

type hashed struct {
	digest [32]byte
	role   string
}

// New returns the set of tokens.
func New(tokens []Token) *Set {
	s := &Set{}
	s.Replace(tokens)
	return s
}

// Replace makes tokens the set's tokens, in place of all it held.
func (s *Set) Replace(tokens []Token) {
	hs := make([]hashed, 0, len(tokens))
	for _, t := range tokens {
		hs = append(hs, hashed{digest: sha256.Sum256([]byte(t.Secret)), role: t.Role})
	}
	s.tokens.Store(&hs)
}

// Len is the number of tokens (0: authentication is off).
func (s *Set) Len() int { return len(*s.tokens.Load()) }

// Role returns the role of the token in an authorization value ("Bearer <token>", the scheme case-insensitive)
// and whether one matched.
func (s *Set) Role(authorization string) (string, bool) {
	scheme, secret, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	var found string
	match := 0
	for _, t := range *s.tokens.Load() {
		eq := subtle.ConstantTimeCompare(d[:], t.digest[:])
		if eq == 1 && match == 0 {
			found = t.role
		}
		match |= eq
	}
	return found, match == 1
}

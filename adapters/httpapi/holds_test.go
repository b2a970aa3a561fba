package httpapi_test

import (
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// holdPolicies: a window policy and a concurrency policy (the config's, as in production).
var holdPolicies = []domain.Policy{
	{Name: "login", Limit: 5, Window: time.Minute},
	{Name: "slots", Limit: 2, Window: time.Minute, Algorithm: domain.Concurrency},
}

func acquire(t *testing.T, e *env, body map[string]any) (response, api.HoldDecision) {
	t.Helper()
	r := e.do("POST", "/v1/holds", body)
	if r.Status != 200 {
		t.Fatalf("acquire %v: %d %s", body, r.Status, r.Body)
	}
	var d api.HoldDecision
	r.json(t, &d)
	return r, d
}

func holdState(t *testing.T, r response) api.HoldState {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var s api.HoldState
	r.json(t, &s)
	return s
}

// peekRemaining is a peek's remaining: what a cost-1 check (on concurrency, a hold of 1) would leave, -1 when it
// would be denied.
func peekRemaining(t *testing.T, e *env, policy, key string) int64 {
	t.Helper()
	r := e.do("GET", "/v1/policies/"+policy+"/keys/"+key, nil)
	var d api.Decision
	r.json(t, &d)
	if !d.Allowed {
		return -1
	}
	return d.Remaining
}

// TestHoldSettleGivesBackTheDifference: on a window policy a hold charges its amount at once; settling for less
// gives the difference back, repeating the settle answers the same, another amount is a conflict.
func TestHoldSettleGivesBackTheDifference(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	r, d := acquire(t, e, map[string]any{"policy": "login", "key": "alice", "amount": 3, "ttl": "30s"})
	if !d.Allowed || d.Remaining != 2 || d.Limit != 5 || d.RetryAfterMs != 0 || d.Hold == nil {
		t.Fatalf("acquire: %s", r.Body)
	}
	if d.Hold.Amount != 3 || d.Hold.Settled || d.Hold.Replayed || d.Hold.ExpiresAt == nil ||
		!d.Hold.ExpiresAt.Equal(e.clock.Now().Add(30*time.Second)) {
		t.Fatalf("hold: %s", r.Body)
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"login";q=5;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := r.Header.Get("RateLimit"); got != `"login";r=2;t=60` {
		t.Fatalf("RateLimit %q", got)
	}
	if r.Header.Get("Retry-After") != "" {
		t.Fatal("Retry-After on an admitted acquire")
	}
	id := d.Hold.Id
	if strings.Contains(id, "alice") || strings.ContainsAny(id, "+/=%") {
		t.Fatalf("handle %q is not opaque base64url", id)
	}

	e.clock.Advance(5 * time.Second)
	s := holdState(t, e.do("POST", "/v1/holds/"+id+"/settle", map[string]any{"amount": 1}))
	if s.Remaining != 3 || s.Overdraft != 0 || s.Hold.Amount != 1 || !s.Hold.Settled || s.Hold.Replayed || s.Hold.Id != id ||
		s.Policy != "login" || s.Key != "alice" {
		t.Fatalf("settle: %+v", s)
	}
	if got := peekRemaining(t, e, "login", "alice"); got != 3 {
		t.Fatalf("peek after settle: remaining %d, want 3 (one unit charged, one more checked)", got)
	}
	s = holdState(t, e.do("POST", "/v1/holds/"+id+"/settle", map[string]any{"amount": 1}))
	if !s.Hold.Replayed || s.Remaining != 3 {
		t.Fatalf("repeated settle: %+v", s)
	}
	wantProblem(t, e.do("POST", "/v1/holds/"+id+"/settle", map[string]any{"amount": 2}), 409, "hold-conflict", "")
	// A settled hold has nothing left to renew.
	wantProblem(t, e.do("POST", "/v1/holds/"+id+"/renew", map[string]any{}), 409, "hold-conflict", "")
}

// TestHoldOverdraft: settling for more than the hold records the excess past the limit and reports it.
func TestHoldOverdraft(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	_, d := acquire(t, e, map[string]any{"policy": "login", "key": "bob", "amount": 4})
	s := holdState(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/settle", map[string]any{"amount": 7}))
	if s.Overdraft != 2 || s.Remaining != 0 || s.Allowed || s.Hold.Amount != 7 {
		t.Fatalf("settle past the limit: %+v", s)
	}
}

// TestHoldConcurrency: at most limit units held at once; a denial is a 200 with allowed false, Retry-After and no
// hold, and records nothing; a release gives the units back at once.
func TestHoldConcurrency(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	_, first := acquire(t, e, map[string]any{"policy": "slots", "key": "tenant", "amount": 1})
	_, second := acquire(t, e, map[string]any{"policy": "slots", "key": "tenant", "amount": 1})
	if !first.Allowed || !second.Allowed || second.Remaining != 0 || first.Hold.Id == second.Hold.Id {
		t.Fatalf("two acquisitions: %+v %+v", first, second)
	}
	r, denied := acquire(t, e, map[string]any{"policy": "slots", "key": "tenant", "amount": 1})
	if denied.Allowed || denied.Hold != nil || denied.RetryAfterMs <= 0 || denied.Remaining != 0 {
		t.Fatalf("third acquisition: %s", r.Body)
	}
	if got, want := r.Header.Get("Retry-After"), strconv.FormatInt((denied.RetryAfterMs+999)/1000, 10); got != want {
		t.Fatalf("Retry-After %q, want %q", got, want)
	}
	if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, `"slots";r=0;`) {
		t.Fatalf("RateLimit %q", got)
	}
	if got := peekRemaining(t, e, "slots", "tenant"); got != -1 {
		t.Fatalf("peek with two held: %d", got)
	}
	s := holdState(t, e.do("DELETE", "/v1/holds/"+first.Hold.Id, nil))
	if !s.Allowed || s.Remaining != 0 || s.Hold.Amount != 0 || !s.Hold.Settled || s.Overdraft != 0 {
		t.Fatalf("release: %+v", s)
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"slots";q=2;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if s := holdState(t, e.do("DELETE", "/v1/holds/"+first.Hold.Id, nil)); !s.Hold.Replayed {
		t.Fatalf("a second release: %+v", s)
	}
	if _, d := acquire(t, e, map[string]any{"policy": "slots", "key": "tenant", "amount": 1}); !d.Allowed {
		t.Fatalf("after the release: %+v", d)
	}
}

// TestHoldRenewAndExpiry: a renewal moves the deadline; past it a concurrency hold's units are back and a
// settle or renewal is a 409 hold-expired.
func TestHoldRenewAndExpiry(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	_, d := acquire(t, e, map[string]any{"policy": "slots", "key": "k", "amount": 2, "ttl": "10s"})
	e.clock.Advance(8 * time.Second)
	s := holdState(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/renew", map[string]any{"ttl": "20s"}))
	if s.Hold.ExpiresAt == nil || !s.Hold.ExpiresAt.Equal(e.clock.Now().Add(20*time.Second)) || s.Allowed {
		t.Fatalf("renew: %+v", s)
	}
	e.clock.Advance(15 * time.Second) // past the first deadline, within the renewed one
	if got := peekRemaining(t, e, "slots", "k"); got != -1 {
		t.Fatalf("peek within the renewed deadline: %d", got)
	}
	e.clock.Advance(6 * time.Second)
	if got := peekRemaining(t, e, "slots", "k"); got != 1 {
		t.Fatalf("peek past the deadline: %d", got)
	}
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/settle", map[string]any{"amount": 1}), 409, "hold-expired", "")
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/renew", map[string]any{}), 409, "hold-expired", "")
	wantProblem(t, e.do("DELETE", "/v1/holds/"+d.Hold.Id, nil), 409, "hold-expired", "")
}

// TestHoldIdempotentAcquire: the caller's id makes a retried acquire answer the same hold (admitted, even when
// the key is full with it), recording nothing; the same id with another amount is a conflict.
func TestHoldIdempotentAcquire(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	_, d := acquire(t, e, map[string]any{"policy": "slots", "key": "k", "amount": 2, "id": "job-7"})
	r, again := acquire(t, e, map[string]any{"policy": "slots", "key": "k", "amount": 2, "id": "job-7"})
	if !again.Allowed || again.Hold == nil || !again.Hold.Replayed || again.Hold.Id != d.Hold.Id || again.RetryAfterMs != 0 ||
		r.Header.Get("Retry-After") != "" || again.Remaining != 0 {
		t.Fatalf("retried acquire: %s", r.Body)
	}
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "slots", "key": "k", "amount": 1, "id": "job-7"}), 409, "hold-conflict", "")
	// The same id on another key is another hold.
	if _, other := acquire(t, e, map[string]any{"policy": "slots", "key": "k2", "amount": 1, "id": "job-7"}); !other.Allowed || other.Hold.Replayed || other.Hold.Id == d.Hold.Id {
		t.Fatalf("the id on another key: %+v", other)
	}
}

// TestHoldHandles: a handle leads to its policy and key without any lookup (a key of 512 bytes included); a
// handle the server could not have made is a 400 naming id; a well-formed handle of a hold never acquired is a
// 404 hold-not-found, and one of an unknown policy a 404 not-found.
func TestHoldHandles(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	long := strings.Repeat("κ", 256) // 512 bytes
	_, d := acquire(t, e, map[string]any{"policy": "slots", "key": long, "amount": 1, "id": strings.Repeat("i", 128)})
	if s := holdState(t, e.do("DELETE", "/v1/holds/"+d.Hold.Id, nil)); s.Key != long || s.Policy != "slots" || s.Remaining != 1 {
		t.Fatalf("release by a long handle: %+v", s)
	}
	for _, bad := range []string{
		"AAAA", // version 0
		base64.RawURLEncoding.EncodeToString([]byte{1, 200, 1}),                  // lengths past the end
		base64.RawURLEncoding.EncodeToString([]byte("\x01\x05slots\x01k")),       // no id
		base64.RawURLEncoding.EncodeToString([]byte("\x01\x05SLOTS\x01kid")),     // not a policy name
		httpapi.EncodeHandle("slots", "k", "\xff"),                               // an id of invalid UTF-8
		base64.URLEncoding.EncodeToString([]byte("\x01\x05slots\x01kid")) + "==", // padded
		base64.RawURLEncoding.EncodeToString([]byte("\x01\x85\x00slots\x01kid")), // a length not in the fewest bytes
	} {
		wantProblem(t, e.do("DELETE", "/v1/holds/"+bad, nil, invalidRequest()), 400, "validation", "id")
		wantProblem(t, e.do("POST", "/v1/holds/"+bad+"/settle", map[string]any{"amount": 0}, invalidRequest()), 400, "validation", "id")
		wantProblem(t, e.do("POST", "/v1/holds/"+bad+"/renew", map[string]any{}, invalidRequest()), 400, "validation", "id")
	}
	wantProblem(t, e.do("DELETE", "/v1/holds/"+httpapi.EncodeHandle("slots", "k", "never"), nil), 404, "hold-not-found", "")
	wantProblem(t, e.do("POST", "/v1/holds/"+httpapi.EncodeHandle("slots", "k", "never")+"/renew", map[string]any{"ttl": "5s"}), 404, "hold-not-found", "")
	wantProblem(t, e.do("POST", "/v1/holds/"+httpapi.EncodeHandle("nope", "k", "never")+"/settle", map[string]any{"amount": 1}), 404, "not-found", "")
}

// TestHoldValidation: every bad field is a 400 naming it.
func TestHoldValidation(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 6}), 400, "validation", "amount")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 0}, invalidRequest()), 400, "validation", "amount")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 1, "ttl": "1.5s"}, invalidRequest()), 400, "validation", "ttl")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 1, "id": ""}, invalidRequest()), 400, "validation", "id")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 1, "id": "\x00rls"}), 400, "validation", "id")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "nope", "key": "k", "amount": 1}), 404, "not-found", "")
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k"}, invalidRequest()), 400, "validation", "amount")
	_, d := acquire(t, e, map[string]any{"policy": "login", "key": "k", "amount": 1})
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/settle", map[string]any{"amount": -1}, invalidRequest()), 400, "validation", "amount")
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/renew", map[string]any{"ttl": "soon"}, invalidRequest()), 400, "validation", "ttl")
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/settle", map[string]any{"amount": 1, "extra": 1}, invalidRequest()), 400, "validation", "extra")
}

// TestChecksOnConcurrencyAreRefused: a check that would spend units on a concurrency policy is a 400 naming the
// policy (its units are held, never spent); a peek (cost 0) answers the units held.
func TestChecksOnConcurrencyAreRefused(t *testing.T) {
	e := newEnvWith(t, holdPolicies)
	wantProblem(t, e.do("POST", "/v1/check", map[string]any{"policy": "slots", "key": "k"}), 400, "validation", "policy")
	wantProblem(t, e.do("POST", "/v1/check", map[string]any{"policy": "slots", "key": "k", "cost": 2}), 400, "validation", "policy")
	wantProblem(t, e.do("POST", "/v1/checks", map[string]any{"checks": []map[string]any{
		{"policy": "login", "key": "k"}, {"policy": "slots", "key": "k", "cost": 1}}}), 400, "validation", "checks[1].policy")
	wantProblem(t, e.do("GET", authorizePath("slots", "k"), nil), 400, "validation", "policy")
	if got := peekRemaining(t, e, "login", "k"); got != 4 {
		t.Fatalf("a refused multi-check spent units: remaining %d", got)
	}
	r := e.do("POST", "/v1/check", map[string]any{"policy": "slots", "key": "k", "cost": 0})
	var d api.Decision
	r.json(t, &d)
	if r.Status != 200 || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("peek: %d %s", r.Status, r.Body)
	}
}

// TestHoldsNeedRoleCheck: the hold routes take a check token, like /v1/check, and refuse a request without one.
func TestHoldsNeedRoleCheck(t *testing.T) {
	e := newEnvWith(t, holdPolicies, withTokens(httpapi.Token{Name: "edge", Secret: "check-token-0123456789", Role: httpapi.RoleCheck}))
	body := map[string]any{"policy": "slots", "key": "k", "amount": 1}
	wantProblem(t, e.do("POST", "/v1/holds", body), 401, "unauthenticated", "")
	r := e.do("POST", "/v1/holds", body, bearer("check-token-0123456789"))
	var d api.HoldDecision
	r.json(t, &d)
	if r.Status != 200 || d.Hold == nil {
		t.Fatalf("acquire with a check token: %d %s", r.Status, r.Body)
	}
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/renew", map[string]any{}), 401, "unauthenticated", "")
	wantProblem(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/settle", map[string]any{"amount": 0}), 401, "unauthenticated", "")
	wantProblem(t, e.do("DELETE", "/v1/holds/"+d.Hold.Id, nil), 401, "unauthenticated", "")
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/holds/" + d.Hold.Id + "/renew", map[string]any{}},
		{"POST", "/v1/holds/" + d.Hold.Id + "/settle", map[string]any{"amount": 1}},
		{"DELETE", "/v1/holds/" + d.Hold.Id, nil},
	} {
		if r := e.do(c.method, c.path, c.body, bearer("check-token-0123456789")); r.Status != 200 {
			t.Fatalf("%s %s with a check token: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
}

// TestHoldHandlesAreNotLogged: a handle encodes its key, so the access log redacts it as it redacts the key of
// a key route.
func TestHoldHandlesAreNotLogged(t *testing.T) {
	var logs lockedBuffer
	e := newEnvWith(t, holdPolicies, func(o *httpapi.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	_, d := acquire(t, e, map[string]any{"policy": "slots", "key": "secret-key", "amount": 1})
	holdState(t, e.do("POST", "/v1/holds/"+d.Hold.Id+"/renew", map[string]any{}))
	holdState(t, e.do("DELETE", "/v1/holds/"+d.Hold.Id, nil))
	out := logs.String()
	if strings.Contains(out, d.Hold.Id) || strings.Contains(out, "secret-key") {
		t.Fatalf("the log holds the handle or the key:\n%s", out)
	}
	if !strings.Contains(out, "path=/v1/holds/…/renew") || !strings.Contains(out, "path=/v1/holds/…") {
		t.Fatalf("the log lacks the redacted paths:\n%s", out)
	}
}

// TestHoldsShadowAndFailureMode: a hold that recorded nothing (shadow mode would have denied; the store failed
// and failure_mode allow admitted) is admitted without expires_at; failure_mode deny answers 503.
func TestHoldsShadowAndFailureMode(t *testing.T) {
	e := newRichEnv(t)
	// trial: limit 1 per hour, shadow.
	if _, d := acquire(t, e.env, map[string]any{"policy": "trial", "key": "k", "amount": 1}); d.Hold == nil || d.Hold.ExpiresAt == nil {
		t.Fatalf("first shadow acquire: %+v", d)
	}
	r, d := acquire(t, e.env, map[string]any{"policy": "trial", "key": "k", "amount": 1})
	if !d.Allowed || d.ShadowDenied == nil || !*d.ShadowDenied || d.Hold == nil || d.Hold.ExpiresAt != nil || r.Header.Get("Retry-After") != "" {
		t.Fatalf("shadow-denied acquire: %s", r.Body)
	}
	wantProblem(t, e.do("DELETE", "/v1/holds/"+d.Hold.Id, nil), 404, "hold-not-found", "")

	_, soft := acquire(t, e.env, map[string]any{"policy": "soft", "key": "k", "amount": 1})
	_, login := acquire(t, e.env, map[string]any{"policy": "login", "key": "k", "amount": 1})
	e.flaky.failing.Store(true)
	// soft: failure_mode allow; login: deny.
	r, d = acquire(t, e.env, map[string]any{"policy": "soft", "key": "k", "amount": 1})
	if !d.Allowed || d.Degraded == nil || !*d.Degraded || d.Hold == nil || d.Hold.ExpiresAt != nil || r.Header.Get("RateLimit") != "" {
		t.Fatalf("degraded acquire: %s", r.Body)
	}
	s := holdState(t, e.do("POST", "/v1/holds/"+soft.Hold.Id+"/settle", map[string]any{"amount": 0}))
	if s.Degraded == nil || !*s.Degraded || s.Hold.Id != soft.Hold.Id {
		t.Fatalf("degraded settle: %+v", s)
	}
	wantProblem(t, e.do("POST", "/v1/holds", map[string]any{"policy": "login", "key": "k", "amount": 1}), 503, "store-unavailable", "")
	wantProblem(t, e.do("DELETE", "/v1/holds/"+login.Hold.Id, nil), 503, "store-unavailable", "")
	e.flaky.failing.Store(false)
	if s := holdState(t, e.do("DELETE", "/v1/holds/"+login.Hold.Id, nil)); s.Hold.Amount != 0 || !s.Hold.Settled {
		t.Fatalf("release once the store answers: %+v", s)
	}
}

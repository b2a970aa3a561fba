package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// Holds over HTTP (shared/design.md, "Holds"): POST /v1/holds acquires, POST /v1/holds/{id}/settle and /renew
// and DELETE /v1/holds/{id} (a settle of 0) act on one hold. The {id} is a handle this package makes from the
// policy, the key and the hold's own id (the caller's or the domain's), so that an operation on a hold reaches
// its key directly: no store is ever scanned for a hold id.

// handleVersion is the first byte of every handle, so that another layout can be told apart later.
const handleVersion = 1

// encodeHandle is the handle of hold id on key of policy: base64url (no padding) of the version byte, then the
// policy and the key each preceded by its length as a uvarint, then the id. The longest (a 64-byte policy name, a
// 512-byte key, a 128-byte id: 708 bytes) is 944 characters.
func encodeHandle(policy, key, id string) string {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen16+len(policy)+len(key)+len(id))
	b = append(b, handleVersion)
	b = binary.AppendUvarint(b, uint64(len(policy)))
	b = append(b, policy...)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = append(b, id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeHandle is encodeHandle's inverse. A handle that encodeHandle could not have made (not canonical
// base64url, another version, lengths that do not fit or are not written in the fewest bytes, or parts the
// domain would refuse) is a validation error
// naming the path parameter id: the client is told its handle is broken, not that a policy or key it never sent
// is invalid.
func decodeHandle(h string) (domain.HoldRef, error) {
	bad := func(why string) (domain.HoldRef, error) {
		return domain.HoldRef{}, domain.Invalid("id", "is not a hold handle this server made ("+why+"); send hold.id as POST /v1/holds answered it")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(h)
	if err != nil {
		return bad("not base64url without padding")
	}
	if len(raw) == 0 || raw[0] != handleVersion {
		return bad("unknown version")
	}
	rest := raw[1:]
	part := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	policy, ok := part()
	if !ok {
		return bad("truncated")
	}
	key, ok := part()
	if !ok {
		return bad("truncated")
	}
	ref := domain.HoldRef{Policy: policy, Key: key, ID: string(rest)}
	if domain.ValidatePolicyName(ref.Policy) != nil || domain.ValidateKey(ref.Key) != nil || domain.ValidateHoldID(ref.ID) != nil {
		return bad("its parts are not a policy, a key and an id")
	}
	if encodeHandle(ref.Policy, ref.Key, ref.ID) != h {
		return bad("not in its canonical form") // one hold, one handle
	}
	return ref, nil
}

// holdBody is the hold as a response shows it; h.Expires 0 means nothing was recorded.
func holdBody(policy, key string, h domain.Hold, status domain.HoldStatus) *api.Hold {
	b := &api.Hold{Id: encodeHandle(policy, key, h.ID), Amount: h.Amount, Settled: h.Settled, Replayed: status == domain.HoldReplayed}
	if h.Expires > 0 {
		t := time.UnixMicro(h.Expires).UTC()
		b.ExpiresAt = &t
	}
	return b
}

// parseTTL reads an optional Duration field named ttl (nil: 0, the policy's window).
func parseTTL(s *string) (time.Duration, error) {
	if s == nil {
		return 0, nil
	}
	d, err := domain.ParseDuration(*s)
	if err != nil {
		return 0, domain.Invalid("ttl", err.Error())
	}
	return d, nil
}

// AcquireHold implements POST /v1/holds: presented as POST /v1/check presents a decision (the same body fields and
// headers, Retry-After when denied), with the hold when admitted (a replayed acquire is admitted: the domain says
// so).
func (s *server) AcquireHold(ctx context.Context, req api.AcquireHoldRequestObject) (api.AcquireHoldResponseObject, error) {
	b := req.Body
	ttl, err := parseTTL(b.Ttl)
	if err != nil {
		return nil, err
	}
	r := domain.AcquireRequest{Policy: b.Policy, Key: b.Key, Amount: b.Amount, TTL: ttl}
	if b.Id != nil {
		r.ID = *b.Id
		if r.ID == "" {
			return nil, domain.Invalid("id", "must not be empty (leave it out for a hold id made by the server)")
		}
	}
	hr, err := s.lim.Acquire(ctx, r)
	if err != nil {
		return nil, err
	}
	res := hr.Result
	d := decisionBody(res)
	out := api.HoldDecision{Allowed: d.Allowed, Policy: d.Policy, Key: d.Key, Limit: d.Limit, Remaining: d.Remaining,
		ResetAfterMs: d.ResetAfterMs, RetryAfterMs: d.RetryAfterMs, ShadowDenied: d.ShadowDenied, Degraded: d.Degraded}
	if res.Allowed {
		out.Hold = holdBody(res.Policy.Name, res.Key, hr.Hold, hr.Status)
	}
	policy := rateLimitPolicy(res)
	h := api.AcquireHold200ResponseHeaders{RateLimitPolicy: &policy}
	if !res.Degraded {
		rl := rateLimit(res)
		h.RateLimit = &rl
	}
	if !res.Allowed {
		ra := retryAfterSeconds(res)
		h.RetryAfter = &ra
	}
	return api.AcquireHold200JSONResponse{Body: out, Headers: h}, nil
}

// SettleHold implements POST /v1/holds/{id}/settle.
func (s *server) SettleHold(ctx context.Context, req api.SettleHoldRequestObject) (api.SettleHoldResponseObject, error) {
	ref, err := decodeHandle(req.Id)
	if err != nil {
		return nil, err
	}
	hr, err := s.lim.Settle(ctx, ref, req.Body.Amount)
	if err != nil {
		return nil, err
	}
	return api.SettleHold200JSONResponse{HoldStateJSONResponse: holdState(ref, hr)}, nil
}

// ReleaseHold implements DELETE /v1/holds/{id}: a settle of 0.
func (s *server) ReleaseHold(ctx context.Context, req api.ReleaseHoldRequestObject) (api.ReleaseHoldResponseObject, error) {
	ref, err := decodeHandle(req.Id)
	if err != nil {
		return nil, err
	}
	hr, err := s.lim.Settle(ctx, ref, 0)
	if err != nil {
		return nil, err
	}
	return api.ReleaseHold200JSONResponse{HoldStateJSONResponse: holdState(ref, hr)}, nil
}

// RenewHold implements POST /v1/holds/{id}/renew.
func (s *server) RenewHold(ctx context.Context, req api.RenewHoldRequestObject) (api.RenewHoldResponseObject, error) {
	ref, err := decodeHandle(req.Id)
	if err != nil {
		return nil, err
	}
	ttl, err := parseTTL(req.Body.Ttl)
	if err != nil {
		return nil, err
	}
	hr, err := s.lim.Renew(ctx, ref, ttl)
	if err != nil {
		return nil, err
	}
	return api.RenewHold200JSONResponse{HoldStateJSONResponse: holdState(ref, hr)}, nil
}

// holdState is the answer of a settle, renewal or release: the hold, the overdraft, and the key's state after
// the operation with the headers a peek (GET /v1/policies/{name}/keys/{key}) carries.
func holdState(ref domain.HoldRef, hr domain.HoldResult) api.HoldStateJSONResponse {
	d := decisionBody(hr.Result)
	hold := hr.Hold
	if hold.ID == "" {
		hold.ID = ref.ID
	}
	body := api.HoldState{Allowed: d.Allowed, Policy: ref.Policy, Key: ref.Key, Limit: d.Limit, Remaining: d.Remaining,
		ResetAfterMs: d.ResetAfterMs, RetryAfterMs: d.RetryAfterMs, Degraded: d.Degraded,
		Hold: *holdBody(ref.Policy, ref.Key, hold, hr.Status), Overdraft: hr.Overdraft}
	policy := rateLimitPolicy(hr.Result)
	h := api.HoldStateResponseHeaders{RateLimitPolicy: &policy}
	if !hr.Degraded {
		rl := rateLimit(hr.Result)
		h.RateLimit = &rl
	}
	return api.HoldStateJSONResponse{Body: body, Headers: h}
}

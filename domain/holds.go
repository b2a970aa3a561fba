package domain

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// The Limiter's hold operations (shared/design.md, "Holds"): validation, policy resolution, shadow mode and
// failure_mode as for a check, then one store call running Bucket.ApplyHold's step on the key.

// MaxHoldIDBytes bounds a hold id.
const MaxHoldIDBytes = 128

// AcquireRequest asks for a hold of Amount units of Policy for Key. ID (optional) makes retries idempotent: an
// acquire with an id already held returns that hold; without one the Limiter makes one. TTL 0 or past the
// policy's window is the window.
type AcquireRequest struct {
	Policy, Key, ID string
	Amount          int64
	TTL             time.Duration
}

// HoldRef names one hold.
type HoldRef struct {
	Policy, Key, ID string
}

// HoldResult is a hold operation's outcome: the decision (an acquire's; for a settle or renewal, the key's state
// after it, as a peek reports it), the hold as it stands, whether the call repeated an earlier one (Status
// HoldReplayed: nothing recorded), and the units the key holds over its limit after a settle.
type HoldResult struct {
	Result
	Hold      Hold
	Status    HoldStatus
	Overdraft int64
}

// ValidateHoldID checks a caller's hold id: valid UTF-8 of 1 to MaxHoldIDBytes bytes.
func ValidateHoldID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("must not be empty")
	case len(id) > MaxHoldIDBytes:
		return fmt.Errorf("must be at most %d bytes, got %d", MaxHoldIDBytes, len(id))
	case !utf8.ValidString(id):
		return fmt.Errorf("must be valid UTF-8")
	case anonymous(id):
		return fmt.Errorf("must not start with a NUL byte (reserved for the anonymous holds of Envoy RLS)")
	}
	return nil
}

// newHoldID is a random id (128 bits, base64url) for an acquire that brought none.
func newHoldID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// resolveHold validates the parts of a hold operation every one shares and resolves the policy.
func (s *Service) resolveHold(ctx context.Context, policy, key, id string, v *ValidationError) (Policy, error) {
	nameErr := ValidatePolicyName(policy)
	if nameErr != nil {
		v.Add("policy", nameErr.Error())
	}
	if err := ValidateKey(key); err != nil {
		v.Add("key", err.Error())
	}
	if err := ValidateHoldID(id); err != nil {
		v.Add("id", err.Error())
	}
	if nameErr != nil {
		return Policy{}, nil
	}
	p, err := s.policies.ForCheck(ctx, policy)
	if err != nil {
		if errors.Is(err, ErrPolicyNotFound) {
			return Policy{}, fmt.Errorf("%w: %q", ErrPolicyNotFound, policy)
		}
		return Policy{}, &UnavailableError{Policy: policy, Err: err}
	}
	return s.policies.ForKey(p, key), nil
}

// Acquire decides a hold of r.Amount units like a check of that cost and, when admitted, records it.
func (s *Service) Acquire(ctx context.Context, r AcquireRequest) (HoldResult, error) {
	if r.ID == "" {
		r.ID = newHoldID()
	}
	var v ValidationError // on the stack: a pointer returned on every call would move it to the heap
	p, err := s.resolveHold(ctx, r.Policy, r.Key, r.ID, &v)
	if r.Amount < 1 {
		v.Add("amount", fmt.Sprintf("must be ≥ 1, got %d", r.Amount))
	} else if err == nil && p.Name != "" && r.Amount > p.Limit {
		v.Add("amount", fmt.Sprintf("%d exceeds the limit %d of policy %q: it can never be admitted", r.Amount, p.Limit, p.Name))
	}
	if r.TTL < 0 {
		v.Add("ttl", "must not be negative")
	}
	if len(v.Fields) > 0 {
		return HoldResult{}, &ValidationError{Fields: v.Fields}
	}
	if err != nil {
		return HoldResult{}, err
	}
	return s.acquire(ctx, p, r)
}

// acquire is Acquire with its policy resolved and its request valid.
func (s *Service) acquire(ctx context.Context, p Policy, r AcquireRequest) (HoldResult, error) {
	q := BucketHold{BucketRequest: BucketRequest{Policy: p.Name, Key: r.Key, Rule: p.Rule(), Cost: r.Amount, Shadow: p.Shadow,
		Stored: p.Source == SourceAPI}, Op: OpAcquire, ID: r.ID, TTL: r.TTL}
	hd, res, err := s.hold(ctx, p, q)
	if err != nil {
		return HoldResult{}, err
	}
	if res.Degraded {
		// The store failed and failure_mode is allow: admitted, nothing recorded.
		return HoldResult{Result: res, Hold: Hold{ID: r.ID, Amount: r.Amount}}, nil
	}
	switch hd.Status {
	case HoldConflict:
		return HoldResult{}, &HoldError{Kind: ErrHoldConflict, Hold: hd.Hold,
			Detail: fmt.Sprintf("hold %q is held with amount %d, not %d: an id names one acquisition", r.ID, hd.Hold.Amount, r.Amount)}
	case HoldsFull:
		// A denial: the key keeps MaxHolds open holds already. Presented like any denial (a value, not an
		// error); the caller can retry when holds settle or expire.
		res = s.finish(p, r.Key, Decision{Limit: hd.Limit, Remaining: hd.Remaining, ResetAfter: hd.ResetAfter, Period: hd.Period, RetryAfter: max(hd.ResetAfter, time.Second)})
	case HoldReplayed:
		// The hold exists: the retried acquire is admitted, whatever the key holds now. The store's decision is a
		// peek (it answers for a cost-1 acquire): what is left now is one more when that would fit.
		d := hd.Decision
		if d.Allowed {
			d.Remaining++
		}
		d.Allowed, d.RetryAfter = true, 0
		res = s.finish(p, r.Key, d)
	case HoldOK, HoldUnknown, HoldExpired, HoldConverted:
		res = s.finish(p, r.Key, hd.Decision)
	}
	out := HoldResult{Result: res, Hold: hd.Hold, Status: hd.Status}
	if hd.Status == HoldOK && !hd.Allowed {
		out.Hold = Hold{ID: r.ID, Amount: r.Amount} // denied (or shadow-denied): nothing recorded
	}
	return out, nil
}

// PolicyHold is a hold operation whose policy the caller resolved (the Envoy RLS front end, as CheckPolicies).
type PolicyHold struct {
	Policy Policy
	Key    string
	Op     HoldOp
	// ID names the hold (an anonymous one's may come from AnonymousHoldID); none for OpReleaseAnonymous.
	ID string
	// Amount to acquire, to settle to, or to give back (OpReleaseAnonymous).
	Amount int64
	TTL    time.Duration
}

// HoldPolicy implements Limiter. For OpReleaseAnonymous, Hold.Amount is the units given back (0 when the key
// held none: their holds had expired, which is not an error).
func (s *Service) HoldPolicy(ctx context.Context, h PolicyHold) (HoldResult, error) {
	v := &ValidationError{}
	p := h.Policy.WithDefaults()
	p.validateInto(v, "policy.")
	if err := ValidateKey(h.Key); err != nil {
		v.Add("key", err.Error())
	}
	switch h.Op {
	case OpAcquire, OpSettle, OpRenew:
		if h.ID == "" || len(h.ID) > MaxHoldIDBytes+1 {
			v.Add("id", fmt.Sprintf("must be 1 to %d bytes, got %d", MaxHoldIDBytes+1, len(h.ID)))
		}
	case OpReleaseAnonymous:
	default:
		v.Add("op", fmt.Sprintf("unknown hold operation %d", h.Op))
	}
	if h.Amount < 0 || h.Amount > p.Limit && h.Op == OpAcquire || h.Amount > MaxLimit {
		v.Add("amount", fmt.Sprintf("must be from 0 to the limit %d of policy %q, got %d", p.Limit, p.Name, h.Amount))
	}
	if err := v.Err(); err != nil {
		return HoldResult{}, err
	}
	switch h.Op {
	case OpAcquire:
		return s.acquire(ctx, p, AcquireRequest{Policy: p.Name, Key: h.Key, ID: h.ID, Amount: h.Amount, TTL: h.TTL})
	case OpReleaseAnonymous:
		hd, res, err := s.hold(ctx, p, BucketHold{BucketRequest: BucketRequest{Policy: p.Name, Key: h.Key, Rule: p.Rule(), Cost: h.Amount}, Op: OpReleaseAnonymous})
		if err != nil || res.Degraded {
			return HoldResult{Result: res}, err
		}
		res.Decision = hd.Decision
		return HoldResult{Result: res, Hold: hd.Hold, Status: hd.Status}, nil
	default: // OpSettle, OpRenew: OpCheck was refused above
	}
	return s.holdOp(ctx, p, BucketHold{BucketRequest: BucketRequest{Policy: p.Name, Key: h.Key, Rule: p.Rule(), Cost: h.Amount},
		Op: h.Op, ID: h.ID, TTL: h.TTL}, h.Amount)
}

// Settle makes the hold charge actual units (0: release).
func (s *Service) Settle(ctx context.Context, ref HoldRef, actual int64) (HoldResult, error) {
	var v ValidationError
	p, err := s.resolveHold(ctx, ref.Policy, ref.Key, ref.ID, &v)
	if actual < 0 || actual > MaxLimit {
		v.Add("amount", fmt.Sprintf("must be an integer from 0 to 9007199254740991 (2^53-1), got %d", actual))
	}
	if len(v.Fields) > 0 {
		return HoldResult{}, &ValidationError{Fields: v.Fields}
	}
	if err != nil {
		return HoldResult{}, err
	}
	return s.holdOp(ctx, p, BucketHold{BucketRequest: BucketRequest{Policy: p.Name, Key: ref.Key, Rule: p.Rule(), Cost: actual,
		Stored: p.Source == SourceAPI}, Op: OpSettle, ID: ref.ID}, actual)
}

// Renew moves the hold's deadline to now + ttl (0 or past the window: the window).
func (s *Service) Renew(ctx context.Context, ref HoldRef, ttl time.Duration) (HoldResult, error) {
	var v ValidationError
	p, err := s.resolveHold(ctx, ref.Policy, ref.Key, ref.ID, &v)
	if ttl < 0 {
		v.Add("ttl", "must not be negative")
	}
	if len(v.Fields) > 0 {
		return HoldResult{}, &ValidationError{Fields: v.Fields}
	}
	if err != nil {
		return HoldResult{}, err
	}
	return s.holdOp(ctx, p, BucketHold{BucketRequest: BucketRequest{Policy: p.Name, Key: ref.Key, Rule: p.Rule(),
		Stored: p.Source == SourceAPI}, Op: OpRenew, ID: ref.ID, TTL: ttl}, 0)
}

// holdOp runs a settle or a renewal and turns a refusal into its HoldError.
func (s *Service) holdOp(ctx context.Context, p Policy, q BucketHold, actual int64) (HoldResult, error) {
	hd, res, err := s.hold(ctx, p, q)
	if err != nil {
		return HoldResult{}, err
	}
	if res.Degraded {
		// The store failed and failure_mode is allow: nothing is known of the hold; the caller carries on.
		return HoldResult{Result: res, Hold: Hold{ID: q.ID}}, nil
	}
	what := "settled"
	if q.Op == OpRenew {
		what = "renewed"
	}
	switch hd.Status {
	case HoldUnknown:
		return HoldResult{}, &HoldError{Kind: ErrHoldNotFound, Detail: fmt.Sprintf("no hold %q on key %q of policy %q (never acquired, its policy re-created, or past its deadline and forgotten)", q.ID, q.Key, p.Name)}
	case HoldExpired:
		detail := fmt.Sprintf("hold %q passed its deadline: nothing was %s", q.ID, what)
		if q.Op == OpSettle && !p.Algorithm.HoldsOnly() {
			detail = fmt.Sprintf("hold %q passed its refund deadline: it stays charged %d (an excess would still be recorded)", q.ID, hd.Hold.Amount)
		} else if q.Op == OpSettle {
			detail = fmt.Sprintf("hold %q passed its deadline: its units are back already", q.ID)
		}
		return HoldResult{}, &HoldError{Kind: ErrHoldExpired, Hold: hd.Hold, Detail: detail}
	case HoldConflict:
		detail := fmt.Sprintf("hold %q was settled with %d, not %d", q.ID, hd.Hold.Amount, actual)
		if q.Op == OpRenew {
			detail = fmt.Sprintf("hold %q is settled: nothing is left to renew", q.ID)
		}
		return HoldResult{}, &HoldError{Kind: ErrHoldConflict, Hold: hd.Hold, Detail: detail}
	case HoldConverted:
		return HoldResult{}, &HoldError{Kind: ErrHoldConflict, Hold: hd.Hold,
			Detail: fmt.Sprintf("a change of policy %q converted hold %q's units: a refund gives nothing back", p.Name, q.ID)}
	case HoldOK, HoldReplayed, HoldsFull:
	}
	res.Decision = hd.Decision
	res.Policy.Limit = hd.Limit
	return HoldResult{Result: res, Hold: hd.Hold, Status: hd.Status, Overdraft: hd.Overdraft}, nil
}

// hold sends q to the store, as Check sends a check: a store failure goes to the policy's failure_mode, a refused
// policy is an error, and an acquire's decision is finished (shadow mode, the outcome counted).
func (s *Service) hold(ctx context.Context, p Policy, q BucketHold) (HoldDecision, Result, error) {
	start := s.clock.Now()
	hd, err := s.store.Hold(ctx, q)
	if err != nil && callerGone(ctx) {
		return HoldDecision{}, Result{}, ctx.Err()
	}
	if err == nil && hd.Decision.Status == StatusInvalidRule {
		err = errUndecidable(p.Algorithm)
	}
	s.obs.StoreCall("hold", s.clock.Now().Sub(start), err)
	if err != nil {
		res, err := s.failed(p, q.Key, err)
		return HoldDecision{}, res, err
	}
	if hd.Decision.Status != StatusOK {
		return HoldDecision{}, Result{}, refused(p, q.Cost, hd.Decision, "")
	}
	if q.Op != OpAcquire {
		return hd, Result{Decision: hd.Decision, Policy: p, Key: q.Key}, nil
	}
	return hd, Result{}, nil
}

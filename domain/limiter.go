package domain

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// CheckRequest asks whether Key may spend Cost against Policy now. Cost 0 peeks.
type CheckRequest struct {
	Policy string
	Key    string
	Cost   int64
}

// PolicyCheck is a check whose policy the caller has resolved.
type PolicyCheck struct {
	Policy Policy
	Key    string
	Cost   int64
}

// Result is a Decision with what the caller needs to present it.
type Result struct {
	Decision
	Policy Policy
	Key    string
	// ShadowDenied: the policy is in shadow mode and would have denied; Allowed is true.
	ShadowDenied bool
	// Degraded: the store failed and failure_mode allow admitted the request.
	Degraded bool
}

// Limiter is the port the API adapter calls.
type Limiter interface {
	// Check decides one request. Cost 0 peeks: the decision a cost-1 check would get, nothing recorded.
	Check(ctx context.Context, r CheckRequest) (Result, error)
	// CheckMany decides several requests in order; with atomic, nothing is recorded unless all are admitted, and
	// a batch that recorded nothing is presented as such (RolledBack). allowed reports whether every check was
	// admitted (shadow denials count as admitted).
	CheckMany(ctx context.Context, rs []CheckRequest, atomic bool) (results []Result, allowed bool, err error)
	// CheckPolicies is CheckMany for callers that resolve policies themselves (the Envoy RLS adapter maps
	// descriptors onto policies of its own config, or onto a descriptor's limit override). Each policy must pass
	// Policy.Validate; the checks are validated as CheckMany's.
	CheckPolicies(ctx context.Context, cs []PolicyCheck, atomic bool) (results []Result, allowed bool, err error)
	// Acquire decides a hold like a check of its amount and records it when admitted (holds.go).
	Acquire(ctx context.Context, r AcquireRequest) (HoldResult, error)
	// Settle makes a hold charge actual units; 0 releases it. A refusal is a *HoldError.
	Settle(ctx context.Context, ref HoldRef, actual int64) (HoldResult, error)
	// Renew moves a hold's deadline to now + ttl (0: the policy's window, the most it may be). A refusal is a
	// *HoldError.
	Renew(ctx context.Context, ref HoldRef, ttl time.Duration) (HoldResult, error)
	// HoldPolicy applies one hold operation under a policy the caller resolved (the Envoy RLS front end), as
	// CheckPolicies checks; OpReleaseAnonymous gives back units of the key's anonymous holds.
	HoldPolicy(ctx context.Context, h PolicyHold) (HoldResult, error)
	// Reset forgets a key's admitted units and its holds.
	Reset(ctx context.Context, policy, key string) error
	// PutOverride creates or replaces a policy's override (override.go) and reports whether it is new; a config
	// policy's are read-only (ErrReadOnlyPolicy).
	PutOverride(ctx context.Context, policy string, o Override) (created bool, err error)
	// GetOverride returns the override of policy with the given match (ErrOverrideNotFound when none).
	GetOverride(ctx context.Context, policy, match string) (Override, error)
	// DeleteOverride deletes a policy's override (ErrOverrideNotFound when none).
	DeleteOverride(ctx context.Context, policy, match string) error
	// ListOverrides returns up to n of a policy's overrides in order after the match after ("": from the first),
	// and whether more follow.
	ListOverrides(ctx context.Context, policy, after string, n int) (overrides []Override, more bool, err error)
	ListPolicies(ctx context.Context) ([]Policy, error)
	GetPolicy(ctx context.Context, name string) (Policy, error)
	// PutPolicy creates or replaces an API policy; config policies are read-only (ErrReadOnlyPolicy).
	PutPolicy(ctx context.Context, p Policy) (stored Policy, created bool, err error)
	// DeletePolicy deletes an API policy and its keys' state.
	DeletePolicy(ctx context.Context, name string) error
	// Ready reports whether the store answers and the API policies are loaded (PoliciesLoaded).
	Ready(ctx context.Context) error
	// PoliciesLoaded reports whether the API policies are loaded: whether every policy name can be resolved
	// without the store answering (for readiness during a store outage).
	PoliciesLoaded(ctx context.Context) error
}

// Service implements Limiter over a BucketStore and a PolicyLifecycle, applying validation, shadow mode and each
// policy's failure_mode the same way for every store.
type Service struct {
	policies *PolicyLifecycle
	store    BucketStore
	obs      Observer
	clock    Clock
}

var _ Limiter = (*Service)(nil)

// NewService returns a Limiter over the given stores, with a PolicyLifecycle of configPolicies (checked with
// ConfigPolicies) and policies, for a store that is not shared (NewServiceWith takes a lifecycle).
func NewService(configPolicies []Policy, policies PolicyStore, store BucketStore, obs Observer, clock Clock) (*Service, error) {
	l, err := NewPolicyLifecycle(configPolicies, policies, clock, LifecycleOptions{})
	if err != nil {
		return nil, err
	}
	return NewServiceWith(l, store, obs, clock), nil
}

// NewServiceWith returns a Limiter deciding the policies of l with store.
func NewServiceWith(l *PolicyLifecycle, store BucketStore, obs Observer, clock Clock) *Service {
	s := &Service{policies: l, store: store, obs: obs, clock: clock}
	if s.obs == nil {
		s.obs = NopObserver{}
	}
	return s
}

// Policies returns the lifecycle of the policies s decides with (the RLS front end installs its policies there).
func (s *Service) Policies() *PolicyLifecycle { return s.policies }

// ConfigPolicies applies defaults to the config file's policies, marks them read-only, and checks them all: every
// rule of Validate plus unique names. Field names are "policies[i].field".
func ConfigPolicies(ps []Policy) ([]Policy, error) {
	out := make([]Policy, len(ps))
	seen := make(map[string]bool, len(ps))
	v := &ValidationError{}
	for i, p := range ps {
		p = p.WithDefaults()
		p.Source = SourceConfig
		prefix := "policies[" + strconv.Itoa(i) + "]."
		p.validateInto(v, prefix)
		if seen[p.Name] {
			v.Add(prefix+"name", fmt.Sprintf("duplicate policy name %q", p.Name))
		}
		seen[p.Name] = true
		out[i] = p
	}
	return out, v.Err()
}

// prepare validates one check and resolves its policy. prefix names the request's position ("checks[3].").
func (s *Service) prepare(ctx context.Context, r CheckRequest, prefix string, v *ValidationError) (Policy, BucketRequest, error) {
	nameErr := ValidatePolicyName(r.Policy)
	if nameErr != nil {
		v.Add(prefix+"policy", nameErr.Error())
	}
	if err := ValidateKey(r.Key); err != nil {
		v.Add(prefix+"key", err.Error())
	}
	if r.Cost < 0 {
		v.Add(prefix+"cost", fmt.Sprintf("must be ≥ 0, got %d", r.Cost))
	}
	if nameErr != nil {
		return Policy{}, BucketRequest{}, nil
	}
	p, err := s.policies.ForCheck(ctx, r.Policy)
	if err != nil {
		if errors.Is(err, ErrPolicyNotFound) {
			return Policy{}, BucketRequest{}, fmt.Errorf("%w: %q", ErrPolicyNotFound, r.Policy)
		}
		return Policy{}, BucketRequest{}, &UnavailableError{Policy: r.Policy, Err: err}
	}
	p = s.policies.ForKey(p, r.Key)
	if r.Cost > p.Limit {
		v.Add(prefix+"cost", fmt.Sprintf("%d exceeds the limit %d of policy %q: it can never be admitted", r.Cost, p.Limit, p.Name))
	}
	if r.Cost > 0 && p.Algorithm.HoldsOnly() {
		v.Add(prefix+"policy", holdsOnlyCheck(p))
	}
	return p, BucketRequest{Policy: p.Name, Key: r.Key, Rule: p.Rule(), Cost: r.Cost, Shadow: p.Shadow, Stored: p.Source == SourceAPI}, nil
}

// Check implements Limiter.
func (s *Service) Check(ctx context.Context, r CheckRequest) (Result, error) {
	var v ValidationError
	p, br, err := s.prepare(ctx, r, "", &v)
	if len(v.Fields) > 0 { // not v.Err(): returning &v would move v to the heap on every call, even a valid one
		return Result{}, &ValidationError{Fields: v.Fields}
	}
	if err != nil {
		return Result{}, err
	}
	start := s.clock.Now()
	d, err := s.store.Decide(ctx, br)
	if err != nil && callerGone(ctx) {
		return Result{}, ctx.Err()
	}
	if err == nil && d.Status == StatusInvalidRule {
		err = errUndecidable(p.Algorithm)
	}
	s.obs.StoreCall("decide", s.clock.Now().Sub(start), err)
	if err != nil {
		return s.failed(p, r.Key, err)
	}
	if d.Status != StatusOK {
		return Result{}, refused(p, r.Cost, d, "")
	}
	return s.finish(p, r.Key, d), nil
}

// holdsOnlyCheck is the problem of a check of cost > 0 on a concurrency policy.
func holdsOnlyCheck(p Policy) string {
	return fmt.Sprintf("policy %q is a %s policy: a check has nothing to release; acquire a hold (POST /v1/holds) or peek (cost 0)", p.Name, p.Algorithm)
}

// errUndecidable is the store failure of a check whose algorithm the store cannot decide (StatusInvalidRule):
// a store older than the policy fails it, and the policy's failure_mode answers, as for any store failure.
func errUndecidable(a Algorithm) error {
	return fmt.Errorf("the store cannot decide algorithm %q (not in its algorithm table)", a)
}

// refused is the error of a check the store refused: the policy it was resolved with is gone (the store's copy, or
// the key's newer generation, says so: StatusPolicyNotFound) or the store's copy puts the cost over its limit
// (StatusCostOverLimit).
func refused(p Policy, cost int64, d Decision, prefix string) error {
	if d.Status == StatusPolicyNotFound {
		return fmt.Errorf("%w: %q", ErrPolicyNotFound, p.Name)
	}
	return Invalid(prefix+"cost", fmt.Sprintf("%d exceeds the limit %d of policy %q: it can never be admitted", cost, d.Limit, p.Name))
}

// callerGone reports whether the caller cancelled (a client that disconnected). Its store error is not the
// store's fault: it is neither counted as a store error nor decided by failure_mode; nobody reads the answer.
func callerGone(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

// failed applies the policy's failure_mode to a store error. A calendar policy's degraded result reports the
// length of the period holding this replica's now (no store answered), for RateLimit-Policy's w.
func (s *Service) failed(p Policy, key string, err error) (Result, error) {
	if p.FailureMode == FailAllow {
		s.obs.Decided(p.metric(), key, OutcomeDegraded)
		d := Decision{Allowed: true, Limit: p.Limit}
		if p.Period != nil {
			start, end := p.Period.Bounds(s.clock.Now())
			d.Period = end.Sub(start)
		}
		return Result{Decision: d, Policy: p, Key: key, Degraded: true}, nil
	}
	s.obs.Decided(p.metric(), key, OutcomeError)
	return Result{}, &UnavailableError{Policy: p.Name, Err: err}
}

// finish applies shadow mode and counts the outcome. The limit is the one the store decided with (for an API
// policy on a shared store, the policy in force there).
func (s *Service) finish(p Policy, key string, d Decision) Result {
	p.Limit = d.Limit
	res := Result{Decision: d, Policy: p, Key: key}
	switch {
	case d.Allowed:
		s.obs.Decided(p.metric(), key, OutcomeAllowed)
	case p.Shadow:
		res.Allowed, res.ShadowDenied, res.RetryAfter = true, true, 0
		s.obs.Decided(p.metric(), key, OutcomeShadowDenied)
	default:
		s.obs.Decided(p.metric(), key, OutcomeDenied)
	}
	return res
}

// CheckMany implements Limiter. Every field problem of every check is reported at once; an unknown policy is
// reported only when no check has a field problem.
func (s *Service) CheckMany(ctx context.Context, rs []CheckRequest, atomic bool) ([]Result, bool, error) {
	v := &ValidationError{}
	if len(rs) == 0 {
		v.Add("checks", "must hold at least one check")
	}
	ps := make([]Policy, len(rs))
	brs := make([]BucketRequest, len(rs))
	var lookupErr error
	for i, r := range rs {
		p, br, err := s.prepare(ctx, r, "checks["+strconv.Itoa(i)+"].", v)
		if err != nil && lookupErr == nil {
			lookupErr = err
		}
		ps[i], brs[i] = p, br
	}
	if err := v.Err(); err != nil {
		return nil, false, err
	}
	if lookupErr != nil {
		return nil, false, lookupErr
	}
	return s.decideMany(ctx, ps, brs, atomic)
}

// CheckPolicies implements Limiter.
func (s *Service) CheckPolicies(ctx context.Context, cs []PolicyCheck, atomic bool) ([]Result, bool, error) {
	v := &ValidationError{}
	if len(cs) == 0 {
		v.Add("checks", "must hold at least one check")
	}
	ps := make([]Policy, len(cs))
	brs := make([]BucketRequest, len(cs))
	for i, c := range cs {
		prefix := "checks[" + strconv.Itoa(i) + "]."
		p := c.Policy.WithDefaults()
		p.validateInto(v, prefix+"policy.")
		if err := ValidateKey(c.Key); err != nil {
			v.Add(prefix+"key", err.Error())
		}
		if c.Cost < 0 || c.Cost > p.Limit {
			v.Add(prefix+"cost", fmt.Sprintf("must be from 0 to the limit %d of policy %q, got %d", p.Limit, p.Name, c.Cost))
		}
		if c.Cost > 0 && p.Algorithm.HoldsOnly() {
			v.Add(prefix+"policy", holdsOnlyCheck(p))
		}
		ps[i] = p
		brs[i] = BucketRequest{Policy: p.Name, Key: c.Key, Rule: p.Rule(), Cost: c.Cost, Shadow: p.Shadow}
	}
	if err := v.Err(); err != nil {
		return nil, false, err
	}
	return s.decideMany(ctx, ps, brs, atomic)
}

// decideMany sends validated checks to the store as one batch and applies shadow mode and failure_mode.
func (s *Service) decideMany(ctx context.Context, ps []Policy, brs []BucketRequest, atomic bool) ([]Result, bool, error) {
	start := s.clock.Now()
	ds, err := s.store.DecideBatch(ctx, brs, atomic)
	if err != nil && callerGone(ctx) {
		return nil, false, ctx.Err()
	}
	for i := range ds {
		if err == nil && ds[i].Status == StatusInvalidRule {
			err = errUndecidable(ps[i].Algorithm)
		}
	}
	s.obs.StoreCall("decide_batch", s.clock.Now().Sub(start), err)
	results := make([]Result, len(brs))
	if err != nil {
		// One failure covers the batch: any policy with failure_mode deny refuses it, else all are degraded.
		for _, p := range ps {
			if p.FailureMode == FailDeny {
				return nil, false, &UnavailableError{Policy: p.Name, Err: err}
			}
		}
		for i, p := range ps {
			results[i], _ = s.failed(p, brs[i].Key, err)
		}
		return results, true, nil
	}
	for i, d := range ds {
		if d.Status != StatusOK {
			// The store's copy of a policy refused a check: the batch fails as a whole, as it would have had
			// this replica known; with atomic set the store recorded nothing.
			return nil, false, refused(ps[i], brs[i].Cost, d, "checks["+strconv.Itoa(i)+"].")
		}
	}
	allowed := true
	for i, d := range ds {
		results[i] = s.finish(ps[i], brs[i].Key, d)
		allowed = allowed && results[i].Allowed
	}
	if atomic && !allowed {
		costs := make([]int64, len(brs))
		for i, br := range brs {
			costs[i] = br.Cost
		}
		RolledBack(results, costs)
	}
	return results, allowed, nil
}

// RolledBack presents the results of an atomic batch that recorded nothing (some check was denied): every check
// is reported as not having consumed anything, because nothing was (shared/design.md: with atomic, nothing is
// consumed unless all are admitted). A check admitted as evaluated keeps Allowed (it would fit on its own) but its
// Remaining is what its key has left now, the state before the batch: the Remaining of the key's first check in
// the batch plus what that check took as evaluated (its cost when admitted, 1 for an admitted peek, which reports
// a cost-1 check). Denied checks, peeks, and degraded results are left as they are: a denial records nothing
// anyway, and its Remaining and RetryAfter say why the batch failed. costs[i] is results[i]'s cost. Both protocol
// adapters (HTTP /v1/checks and Envoy RLS) present what the Limiter returns, so they agree.
func RolledBack(results []Result, costs []int64) {
	type at struct{ policy, key string }
	before := make(map[at]int64, len(results))
	for i, r := range results {
		k := at{r.Policy.Name, r.Key}
		if _, ok := before[k]; ok || r.Degraded {
			continue
		}
		took := int64(0)
		if r.Allowed && !r.ShadowDenied {
			took = max(costs[i], 1)
		}
		before[k] = min(r.Remaining+took, r.Limit)
	}
	for i := range results {
		r := &results[i]
		if r.Degraded || !r.Allowed || r.ShadowDenied || costs[i] == 0 {
			continue
		}
		r.Remaining = before[at{r.Policy.Name, r.Key}]
	}
}

// Reset implements Limiter.
func (s *Service) Reset(ctx context.Context, policy, key string) error {
	v := &ValidationError{}
	if err := ValidatePolicyName(policy); err != nil {
		v.Add("name", err.Error())
	}
	if err := ValidateKey(key); err != nil {
		v.Add("key", err.Error())
	}
	if err := v.Err(); err != nil {
		return err
	}
	p, err := s.policies.Get(ctx, policy)
	if err != nil {
		return err
	}
	if err := s.store.Reset(ctx, p.Name, key); err != nil {
		return &UnavailableError{Policy: p.Name, Err: err}
	}
	return nil
}

// ListPolicies implements Limiter: config and API policies, sorted by name.
func (s *Service) ListPolicies(ctx context.Context) ([]Policy, error) {
	out, err := s.policies.List(ctx)
	if err != nil {
		return nil, &UnavailableError{Err: err}
	}
	return out, nil
}

// GetPolicy implements Limiter.
func (s *Service) GetPolicy(ctx context.Context, name string) (Policy, error) {
	if err := ValidatePolicyName(name); err != nil {
		return Policy{}, Invalid("name", err.Error())
	}
	p, err := s.policies.Get(ctx, name)
	if err != nil && !errors.Is(err, ErrPolicyNotFound) {
		return Policy{}, &UnavailableError{Policy: name, Err: err}
	}
	return p, err
}

// PutPolicy implements Limiter.
func (s *Service) PutPolicy(ctx context.Context, p Policy) (Policy, bool, error) {
	p = p.WithDefaults()
	p.Source = SourceAPI
	if err := p.Validate(""); err != nil {
		return Policy{}, false, err
	}
	created, err := s.policies.Put(ctx, p)
	if errors.Is(err, ErrReadOnlyPolicy) {
		return Policy{}, false, err
	}
	if err != nil {
		return Policy{}, false, &UnavailableError{Policy: p.Name, Err: err}
	}
	return p, created, nil
}

// DeletePolicy implements Limiter.
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	if err := ValidatePolicyName(name); err != nil {
		return Invalid("name", err.Error())
	}
	if err := s.policies.Delete(ctx, name); err != nil {
		if errors.Is(err, ErrPolicyNotFound) || errors.Is(err, ErrReadOnlyPolicy) {
			return err
		}
		return &UnavailableError{Policy: name, Err: err}
	}
	if err := s.store.DropPolicy(ctx, name); err != nil {
		return &UnavailableError{Policy: name, Err: err}
	}
	return nil
}

// Ready implements Limiter: the store answers and the API policies are loaded. A replica that has been ready
// decides through a later outage by each policy's failure_mode from its copy of the policies, so it must not be
// ready before that copy exists (at start-up the first load runs in the background, racing the first probe).
func (s *Service) Ready(ctx context.Context) error {
	if err := s.store.Ping(ctx); err != nil {
		return &UnavailableError{Err: err}
	}
	return s.PoliciesLoaded(ctx)
}

// PoliciesLoaded implements Limiter.
func (s *Service) PoliciesLoaded(ctx context.Context) error {
	if err := s.policies.Loaded(ctx); err != nil {
		return &UnavailableError{Err: err}
	}
	return nil
}

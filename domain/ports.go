package domain

import (
	"context"
	"time"
)

// Clock is the time source of the memory store and of every test (tests move a fake clock; they never sleep). The
// Postgres store ignores it and decides with the database's clock inside its statement, so replicas whose clocks
// disagree still enforce one cap.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock, optionally shifted by Offset (a test-only setting used to skew replicas).
type SystemClock struct{ Offset time.Duration }

// Now returns the wall-clock time plus the offset.
func (c SystemClock) Now() time.Time { return time.Now().Add(c.Offset) }

// Rule is what a store needs to apply a policy's algorithm: the algorithm and its parameters. It travels with
// every check, so stores hold no policy of their own and a changed policy applies at the next decision.
type Rule struct {
	Algorithm Algorithm
	// Limit in [1, MaxLimit].
	Limit int64
	// Window in [MinWindow, MaxWindow], whole milliseconds.
	Window time.Duration
	// Resolution is sliding_window's bucket width (whole milliseconds, 1ms to Window); 0 for other algorithms.
	Resolution time.Duration
	// Period (fixed_window only; nil: none) counts per calendar period instead of per Window, which is then the
	// period's Bound. The step finds the period holding the store's now with Calendar.Bounds.
	Period *Calendar
	// Floor (unix microseconds; 0 = none) is the expiry rule's memory: a unit recorded at or before Floor never
	// counts again. A change of window, algorithm or calendar period (CountingChanged) raises it to the newest
	// instant whose units had already stopped counting (NextFloor: the API PolicyStore at the change, PolicyLifecycle.InstallRLS at an RLS reload, the
	// shared stores' RegisterConfigPolicies for config policies), so growing a window never brings them back.
	Floor int64
	// Generation tells incarnations of one policy name apart (0 for config-file policies; RLS policies get theirs
	// from PolicyLifecycle.InstallRLS, 0 on a shared store). State recorded under
	// another generation is not counted: a deleted policy's keys never count against a later policy of the same
	// name, whatever a janitor or a slow DropPolicy has left behind.
	Generation int64
}

// BucketRequest is one check as a store sees it: the rule travels with every request, so a changed policy
// applies at once and keeps its keys' history (state is keyed by policy name and key only).
type BucketRequest struct {
	Policy string
	Key    string
	Rule
	// Cost in [0, Limit]; 0 peeks.
	Cost int64
	// Shadow checks never make an atomic batch fail: their denial is reported but the batch still commits.
	Shadow bool
	// Stored says the policy lives in the store (an API policy of a shared store): such a store decides with the
	// policy as it holds it at that decision, not with Rule (this replica's copy, possibly stale), and answers
	// StatusPolicyNotFound or StatusCostOverLimit when its copy says so. Stores that keep policies in-process
	// (memory) use Rule, which is then current by construction.
	Stored bool
}

// BucketStore holds every key's state and hold records. Every method is atomic per (policy, key): read state,
// decide, write, as one step, so two concurrent callers (goroutines or replicas) can never both take the last
// unit. Implementations are held to domain/storetest's conformance suite.
type BucketStore interface {
	// Decide applies one check. A denial and a peek record nothing.
	Decide(ctx context.Context, r BucketRequest) (Decision, error)
	// DecideBatch applies checks in order, each seeing the units recorded by the ones before it. With atomic set,
	// it records nothing unless every non-shadow check is admitted; the decisions it returns are then as
	// evaluated in order. Keys are locked in one fixed order, so concurrent batches cannot deadlock.
	DecideBatch(ctx context.Context, rs []BucketRequest, atomic bool) ([]Decision, error)
	// Hold applies one hold operation (Bucket.ApplyHold's step) atomically with the key's state: the hold's units
	// and its record change in the same step as any check of the key. An OpCheck is applied as Decide applies it.
	Hold(ctx context.Context, q BucketHold) (HoldDecision, error)
	// Reset forgets the key's admitted units and its holds.
	Reset(ctx context.Context, policy, key string) error
	// DropPolicy forgets every key of a deleted policy.
	DropPolicy(ctx context.Context, policy string) error
	// Ping reports whether the store can answer now (for /readyz).
	Ping(ctx context.Context) error
}

// PolicyStore holds the policies created over the API. Config-file policies never reach it.
type PolicyStore interface {
	ListPolicies(ctx context.Context) ([]Policy, error)
	// GetPolicy returns ErrPolicyNotFound when no API policy has the name.
	GetPolicy(ctx context.Context, name string) (Policy, error)
	// PutPolicy creates or replaces the policy and reports whether it was created.
	PutPolicy(ctx context.Context, p Policy) (created bool, err error)
	// DeletePolicy returns ErrPolicyNotFound when no API policy has the name.
	DeletePolicy(ctx context.Context, name string) error
}

// CheckPolicyGetter is implemented by a PolicyStore whose BucketStore decides API policies with its own copy
// (BucketRequest.Stored). The PolicyLifecycle resolves a check's policy through it: the policy to send the check with,
// which for a name the PolicyStore does not hold in memory may be provisional (the store answers with the policy
// in force, or StatusPolicyNotFound), so a policy created through another replica binds at the next check.
type CheckPolicyGetter interface {
	CheckPolicy(ctx context.Context, name string) (Policy, error)
}

// Outcome classifies a decision for metrics.
type Outcome string

const (
	OutcomeAllowed      Outcome = "allowed"
	OutcomeDenied       Outcome = "denied"
	OutcomeShadowDenied Outcome = "shadow_denied"
	// OutcomeDegraded: the store failed and failure_mode allow admitted the request.
	OutcomeDegraded Outcome = "degraded"
	// OutcomeError: the store failed and failure_mode deny refused the request.
	OutcomeError Outcome = "error"
)

// Observer receives what the Limiter saw, for metrics and the top keys. Implementations must be cheap and safe for
// concurrent use. policy is the policy's label (Policy.Metric, else its name: bounded by the policies configured,
// whatever clients send). key is the decision's key, for in-process consumers only (adapters/topkeys counts keys in
// fixed memory): it is never a metric label.
type Observer interface {
	Decided(policy, key string, o Outcome)
	StoreCall(op string, d time.Duration, err error)
}

// NopObserver discards observations.
type NopObserver struct{}

func (NopObserver) Decided(string, string, Outcome)        {}
func (NopObserver) StoreCall(string, time.Duration, error) {}

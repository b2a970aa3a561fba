// Package tracing is a domain.BucketStore decorator that puts every store call in an OpenTelemetry span: one span
// per call, a child of the span in the caller's context (the HTTP request's or the RLS call's), carrying the
// policy, the algorithm, the outcome and the store's name. The raw key never becomes an attribute; with
// Options.KeyAttr set (the operator's tracing.key_hash) a function of it does, such as a hash.
//
// app installs it only when tracing is on, outermost: between the limiter and the store it was given (the memory
// store, or the coalescer in front of Postgres and Redis), so a span measures the call as the decision waited for
// it, batching included, and nothing that type-asserts the store (the coalescer asserts its own inner store) sees
// the decorator. The optional ApplyBatch (coalesce.OpBatcher, storetest.OpBatcher) is kept: New's result offers
// it exactly when the wrapped store does. With tracing off app installs nothing, so the decision path is
// unchanged.
package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/domain"
)

// ScopeName is the instrumentation scope of the store spans.
const ScopeName = "github.com/sluice-dev/sluice/adapters/tracing"

// The attribute keys of a store span.
const (
	// AttrStore is the store's name (memory, postgres, redis).
	AttrStore = attribute.Key("sluice.store")
	// AttrPolicy is the policy's name (a batch of several policies: every distinct name, in order).
	AttrPolicy = attribute.Key("sluice.policy")
	// AttrAlgorithm is the policy's algorithm (a batch: every distinct one, in order).
	AttrAlgorithm = attribute.Key("sluice.algorithm")
	// AttrOutcome is allowed, denied or error (see outcome).
	AttrOutcome = attribute.Key("sluice.outcome")
	// AttrKey is Options.KeyAttr of the key (a batch: one per check, in order); absent unless KeyAttr is set.
	AttrKey = attribute.Key("sluice.key_hash")
	// AttrChecks is the number of checks or operations of a batch.
	AttrChecks = attribute.Key("sluice.checks")
	// AttrHoldOp is a hold operation's kind (check, acquire, settle, renew, release_anonymous).
	AttrHoldOp = attribute.Key("sluice.hold_op")
	// attrErrorType is the semantic conventions' error.type: the Go type of a failed call's error. The error's
	// message is not recorded: a store's message may quote what it was sent, keys included.
	attrErrorType = attribute.Key("error.type")
)

// Outcomes of a store span.
const (
	OutcomeAllowed = "allowed"
	OutcomeDenied  = "denied"
	// OutcomeError: the call failed, or the store could not decide (a Decision status other than StatusOK).
	OutcomeError = "error"
)

// Options configure a Store.
type Options struct {
	// Store is the store's name, the sluice.store attribute of every span.
	Store string
	// KeyAttr, when set, turns a key into the sluice.key_hash attribute (app passes metrics.HashedKey when
	// tracing.key_hash is on); nil (the default) records nothing of the key.
	KeyAttr func(key string) string
}

// Store decorates a domain.BucketStore with a span per call.
type Store struct {
	next   domain.BucketStore
	tracer trace.Tracer
	store  attribute.KeyValue
	key    func(string) string
	// kind is the start options of every span, made once (a variadic slice built per call would escape).
	kind []trace.SpanStartOption
}

// opStore is a Store over a store with ApplyBatch, which it keeps.
type opStore struct {
	*Store
	ops opBatcher
}

// opBatcher is the optional mixed batch of checks and hold operations (coalesce.OpBatcher).
type opBatcher interface {
	ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error)
}

// New wraps next: its spans come from tp's tracer of ScopeName. The result offers ApplyBatch when next does.
func New(next domain.BucketStore, tp trace.TracerProvider, o Options) domain.BucketStore {
	s := &Store{next: next, tracer: tp.Tracer(ScopeName), store: AttrStore.String(o.Store), key: o.KeyAttr,
		kind: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}}
	if ob, ok := next.(opBatcher); ok {
		return opStore{Store: s, ops: ob}
	}
	return s
}

// start opens a store span; the attributes are built only when the span records.
func (s *Store) start(ctx context.Context, name string) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, name, s.kind...)
}

// request records one request's policy, algorithm and (when enabled) key.
func (s *Store) request(span trace.Span, r domain.BucketRequest) {
	span.SetAttributes(s.store, AttrPolicy.String(r.Policy), AttrAlgorithm.String(string(r.Algorithm)))
	s.keyOf(span, r.Key)
}

// keyOf records KeyAttr(key) when the operator turned it on.
func (s *Store) keyOf(span trace.Span, key string) {
	if s.key != nil {
		span.SetAttributes(AttrKey.String(s.key(key)))
	}
}

// requests records a batch's policies, algorithms and (when enabled) keys.
func (s *Store) requests(span trace.Span, rs []domain.BucketRequest) {
	var policies, algorithms, keys []string
	for _, r := range rs {
		policies = appendNew(policies, r.Policy)
		algorithms = appendNew(algorithms, string(r.Algorithm))
		if s.key != nil {
			keys = append(keys, s.key(r.Key))
		}
	}
	span.SetAttributes(s.store, AttrChecks.Int(len(rs)), AttrPolicy.StringSlice(policies), AttrAlgorithm.StringSlice(algorithms))
	if s.key != nil {
		span.SetAttributes(AttrKey.StringSlice(keys))
	}
}

func appendNew(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

// end records the outcome (err, else o) and ends the span.
func end(span trace.Span, o string, err error) {
	if err != nil {
		span.SetAttributes(AttrOutcome.String(OutcomeError), attrErrorType.String(fmt.Sprintf("%T", err)))
		span.SetStatus(codes.Error, "store call failed")
	} else if o != "" {
		span.SetAttributes(AttrOutcome.String(o))
	}
	span.End()
}

// outcome classifies one decision.
func outcome(d domain.Decision) string {
	switch {
	case d.Status != domain.StatusOK:
		return OutcomeError
	case d.Allowed:
		return OutcomeAllowed
	default:
		return OutcomeDenied
	}
}

// worse combines the outcomes of a batch's members: error if any could not be decided, else denied if any was
// denied, else allowed ("" if no member has an outcome).
func worse(a, b string) string {
	switch {
	case a == OutcomeError || b == OutcomeError:
		return OutcomeError
	case a == OutcomeDenied || b == OutcomeDenied:
		return OutcomeDenied
	case a == OutcomeAllowed || b == OutcomeAllowed:
		return OutcomeAllowed
	}
	return ""
}

// Decide implements domain.BucketStore.
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	ctx, span := s.start(ctx, "store.decide")
	if !span.IsRecording() {
		d, err := s.next.Decide(ctx, r)
		span.End()
		return d, err
	}
	s.request(span, r)
	d, err := s.next.Decide(ctx, r)
	end(span, outcome(d), err)
	return d, err
}

// DecideBatch implements domain.BucketStore.
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	ctx, span := s.start(ctx, "store.decide_batch")
	if !span.IsRecording() {
		ds, err := s.next.DecideBatch(ctx, rs, atomic)
		span.End()
		return ds, err
	}
	s.requests(span, rs)
	span.SetAttributes(attribute.Bool("sluice.atomic", atomic))
	ds, err := s.next.DecideBatch(ctx, rs, atomic)
	o := ""
	for _, d := range ds {
		o = worse(o, outcome(d))
	}
	end(span, o, err)
	return ds, err
}

// holdOps names the hold operations for AttrHoldOp.
var holdOps = map[domain.HoldOp]string{
	domain.OpCheck: "check", domain.OpAcquire: "acquire", domain.OpSettle: "settle", domain.OpRenew: "renew",
	domain.OpReleaseAnonymous: "release_anonymous",
}

// Hold implements domain.BucketStore.
func (s *Store) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	ctx, span := s.start(ctx, "store.hold")
	if !span.IsRecording() {
		hd, err := s.next.Hold(ctx, q)
		span.End()
		return hd, err
	}
	s.request(span, q.BucketRequest)
	span.SetAttributes(AttrHoldOp.String(holdOps[q.Op]))
	hd, err := s.next.Hold(ctx, q)
	end(span, holdOutcome(q.Op, hd), err)
	return hd, err
}

// holdOutcome is the outcome of a check or an acquire (allowed or denied, as its decision says; an acquire the
// key's full hold book refused is denied); a settle, a renewal or a release decides nothing, so it has an outcome
// only when the store could not apply it (error).
func holdOutcome(op domain.HoldOp, hd domain.HoldDecision) string {
	switch {
	case hd.Decision.Status != domain.StatusOK:
		return OutcomeError
	case op == domain.OpCheck:
		return outcome(hd.Decision)
	case op == domain.OpAcquire && hd.Status == domain.HoldsFull:
		return OutcomeDenied
	case op == domain.OpAcquire:
		return outcome(hd.Decision)
	}
	return ""
}

// Reset implements domain.BucketStore (its span has no algorithm: a reset is told no rule).
func (s *Store) Reset(ctx context.Context, policy, key string) error {
	ctx, span := s.start(ctx, "store.reset")
	if span.IsRecording() {
		span.SetAttributes(s.store, AttrPolicy.String(policy))
		s.keyOf(span, key)
	}
	err := s.next.Reset(ctx, policy, key)
	end(span, "", err)
	return err
}

// DropPolicy implements domain.BucketStore.
func (s *Store) DropPolicy(ctx context.Context, policy string) error {
	ctx, span := s.start(ctx, "store.drop_policy")
	span.SetAttributes(s.store, AttrPolicy.String(policy))
	err := s.next.DropPolicy(ctx, policy)
	end(span, "", err)
	return err
}

// Ping implements domain.BucketStore, untraced: only the probes ask it (/readyz, /healthz/store), and the HTTP
// handler leaves them out of traces, so each ping would be a root span of its own every few seconds.
func (s *Store) Ping(ctx context.Context) error { return s.next.Ping(ctx) }

// ApplyBatch applies ops with the wrapped store's ApplyBatch, in one span.
func (s opStore) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	ctx, span := s.start(ctx, "store.apply_batch")
	if !span.IsRecording() {
		hds, err := s.ops.ApplyBatch(ctx, ops)
		span.End()
		return hds, err
	}
	rs := make([]domain.BucketRequest, len(ops))
	for i, q := range ops {
		rs[i] = q.BucketRequest
	}
	s.requests(span, rs)
	hds, err := s.ops.ApplyBatch(ctx, ops)
	o := ""
	for i, hd := range hds {
		o = worse(o, holdOutcome(ops[i].Op, hd))
	}
	end(span, o, err)
	return hds, err
}

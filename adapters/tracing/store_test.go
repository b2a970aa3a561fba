package tracing_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/tracing"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

const secretKey = "user-4711@example.com"

var rule = domain.Rule{Algorithm: domain.TokenBucket, Limit: 1, Window: time.Minute}

func recorder() (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	sr := tracetest.NewSpanRecorder()
	return sr, sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
}

// attrs maps a span's attributes by key.
func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// requireNoRawKey fails if any attribute, event or the name of any span holds the raw key.
func requireNoRawKey(t *testing.T, spans []sdktrace.ReadOnlySpan, key string) {
	t.Helper()
	for _, s := range spans {
		if strings.Contains(s.Name(), key) || strings.Contains(s.Status().Description, key) {
			t.Errorf("span %q names the raw key", s.Name())
		}
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), key) {
				t.Errorf("span %q: attribute %s holds the raw key: %s", s.Name(), kv.Key, kv.Value.String())
			}
		}
		for _, e := range s.Events() {
			for _, kv := range e.Attributes {
				if strings.Contains(kv.Value.String(), key) {
					t.Errorf("span %q: event %s holds the raw key", s.Name(), e.Name)
				}
			}
		}
	}
}

// A decision is a child span of the caller's with the store, policy, algorithm and outcome, and nothing of the key.
func TestDecideSpan(t *testing.T) {
	sr, tp := recorder()
	s := tracing.New(memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{MaxKeys: 10}), tp, tracing.Options{Store: "memory"})
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	for range 2 {
		if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1}); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()
	spans := sr.Ended()
	if len(spans) != 3 {
		t.Fatalf("want 2 store spans and the parent, got %d", len(spans))
	}
	for i, want := range []string{tracing.OutcomeAllowed, tracing.OutcomeDenied} {
		sp := spans[i]
		if sp.Name() != "store.decide" || sp.Parent().SpanID() != parent.SpanContext().SpanID() || sp.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d: %q kind %s parent %s, want store.decide, client, a child of the request", i, sp.Name(), sp.SpanKind(), sp.Parent().SpanID())
		}
		a := attrs(sp)
		if a[tracing.AttrStore].AsString() != "memory" || a[tracing.AttrPolicy].AsString() != "login" ||
			a[tracing.AttrAlgorithm].AsString() != "token_bucket" || a[tracing.AttrOutcome].AsString() != want {
			t.Errorf("span %d attributes: %v", i, sp.Attributes())
		}
		if _, ok := a[tracing.AttrKey]; ok {
			t.Errorf("span %d has %s though KeyAttr is not set", i, tracing.AttrKey)
		}
	}
	requireNoRawKey(t, spans, secretKey)
}

// With KeyAttr set (tracing.key_hash), the span carries metrics.HashedKey of the key, in a batch one per check.
func TestKeyHashOnlyWhenEnabled(t *testing.T) {
	sr, tp := recorder()
	s := tracing.New(memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{MaxKeys: 10}), tp,
		tracing.Options{Store: "memory", KeyAttr: metrics.HashedKey})
	ctx := context.Background()
	if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	other := domain.Rule{Algorithm: domain.FixedWindow, Limit: 5, Window: time.Minute}
	if _, err := s.DecideBatch(ctx, []domain.BucketRequest{
		{Policy: "login", Key: secretKey, Rule: rule, Cost: 1},
		{Policy: "api", Key: "k2", Rule: other, Cost: 1},
	}, true); err != nil {
		t.Fatal(err)
	}
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("want 2 spans, got %d", len(spans))
	}
	if got := attrs(spans[0])[tracing.AttrKey].AsString(); got != metrics.HashedKey(secretKey) || got == "" {
		t.Errorf("decide: key hash %q, want %q", got, metrics.HashedKey(secretKey))
	}
	b := attrs(spans[1])
	if got := b[tracing.AttrKey].AsStringSlice(); !slices.Equal(got, []string{metrics.HashedKey(secretKey), metrics.HashedKey("k2")}) {
		t.Errorf("batch: key hashes %q", got)
	}
	// The atomic batch is denied: login's one unit was taken by the first check.
	if b[tracing.AttrOutcome].AsString() != tracing.OutcomeDenied || b[tracing.AttrChecks].AsInt64() != 2 ||
		!slices.Equal(b[tracing.AttrPolicy].AsStringSlice(), []string{"login", "api"}) ||
		!slices.Equal(b[tracing.AttrAlgorithm].AsStringSlice(), []string{"token_bucket", "fixed_window"}) {
		t.Errorf("batch attributes: %v", spans[1].Attributes())
	}
	requireNoRawKey(t, spans, secretKey)
}

// failing is a store whose every call fails, with the key in its message (as a careless driver's could).
type failing struct{ domain.BucketStore }

func (failing) Decide(_ context.Context, r domain.BucketRequest) (domain.Decision, error) {
	return domain.Decision{}, errors.New("connection lost while deciding " + r.Key)
}

// A failed call is outcome error, status Error and error.type; the error's message (which may quote the key) is not
// recorded.
func TestFailedCall(t *testing.T) {
	sr, tp := recorder()
	s := tracing.New(failing{}, tp, tracing.Options{Store: "postgres"})
	if _, err := s.Decide(context.Background(), domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1}); err == nil {
		t.Fatal("want the store's error")
	}
	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("want 1 span, got %d", len(spans))
	}
	a := attrs(spans[0])
	if a[tracing.AttrOutcome].AsString() != tracing.OutcomeError || spans[0].Status().Code != codes.Error || a["error.type"].AsString() != "*errors.errorString" {
		t.Errorf("attributes %v, status %v", spans[0].Attributes(), spans[0].Status())
	}
	requireNoRawKey(t, spans, secretKey)
}

// plain is a BucketStore and nothing more (no ApplyBatch).
type plain struct{ domain.BucketStore }

// The decorator keeps the optional ApplyBatch exactly when the wrapped store has it.
func TestOptionalApplyBatchKept(t *testing.T) {
	type opBatcher interface {
		ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error)
	}
	mem := memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{MaxKeys: 10})
	var _ opBatcher = mem
	sr, tp := recorder()
	wrapped := tracing.New(mem, tp, tracing.Options{Store: "memory"})
	ob, ok := wrapped.(opBatcher)
	if !ok {
		t.Fatal("the decorator hides the memory store's ApplyBatch")
	}
	hds, err := ob.ApplyBatch(context.Background(), []domain.BucketHold{
		{BucketRequest: domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1}, Op: domain.OpCheck},
		{BucketRequest: domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1}, Op: domain.OpCheck},
	})
	if err != nil || len(hds) != 2 || !hds[0].Allowed || hds[1].Allowed {
		t.Fatalf("ApplyBatch: %v %+v", err, hds)
	}
	if spans := sr.Ended(); len(spans) != 1 || spans[0].Name() != "store.apply_batch" || attrs(spans[0])[tracing.AttrOutcome].AsString() != tracing.OutcomeDenied {
		t.Errorf("spans: %v", spans)
	}
	if _, ok := tracing.New(plain{mem}, tp, tracing.Options{}).(opBatcher); ok {
		t.Error("the decorator offers ApplyBatch over a store that has none")
	}
}

// The decorated store passes the store conformance suite: it changes no decision.
func TestConformance(t *testing.T) {
	_, tp := recorder()
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return tracing.New(memory.New(clock, memory.Options{MaxKeys: 10_000}), tp, tracing.Options{Store: "memory", KeyAttr: metrics.HashedKey})
	})
}

// Under a provider that records nothing (the no-op provider), the decorator only passes calls through: no
// attribute is built, and the one allocation it adds is the context that carries the (no-op) span. (app does not
// install the decorator at all when tracing is off; BenchmarkDecide measures both.)
func TestNoopProviderRecordsNothing(t *testing.T) {
	s := tracing.New(memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{MaxKeys: 10}), noop.NewTracerProvider(), tracing.Options{Store: "memory"})
	d, err := s.Decide(context.Background(), domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1})
	if err != nil || !d.Allowed {
		t.Fatalf("%v %+v", err, d)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = s.Decide(context.Background(), domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 0})
	})
	bare := memory.New(clocktest.New(time.Unix(1e9, 0)), memory.Options{MaxKeys: 10})
	_, _ = bare.Decide(context.Background(), domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 1})
	bareAllocs := testing.AllocsPerRun(100, func() {
		_, _ = bare.Decide(context.Background(), domain.BucketRequest{Policy: "login", Key: secretKey, Rule: rule, Cost: 0})
	})
	if allocs > bareAllocs+1 {
		t.Errorf("a decision through the decorator under the no-op provider allocates %v times, the bare store %v", allocs, bareAllocs)
	}
}

package domain_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

func holdService(t *testing.T) (*domain.Service, *clocktest.Clock) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	s, err := domain.NewService([]domain.Policy{
		{Name: "streams", Limit: 2, Window: time.Minute, Algorithm: domain.Concurrency},
		{Name: "tokens", Limit: 1000, Window: time.Hour, Algorithm: domain.SlidingWindow},
		{Name: "trial", Limit: 1, Window: time.Minute, Algorithm: domain.Concurrency, Shadow: true},
	}, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	return s, clock
}

// Reserve → settle through the Limiter: the worst case held, the actual charged, the rest given back at once; a
// retried settle counts once; an overdraft is reported.
func TestLimiterReserveSettle(t *testing.T) {
	s, _ := holdService(t)
	ctx := context.Background()
	res, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "tenant-1", ID: "req-1", Amount: 800})
	if err != nil || !res.Allowed || res.Remaining != 200 || res.Hold.ID != "req-1" || res.Status != domain.HoldOK {
		t.Fatalf("acquire 800: %+v %v", res, err)
	}
	if res, _ := s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "tenant-1", Amount: 300}); res.Allowed {
		t.Fatalf("300 more admitted with 800 of 1000 held: %+v", res)
	}
	s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "tenant-1", ID: "fill", Amount: 200})
	// A retried acquire (its answer was lost) is the same hold, admitted, even with the key full now.
	res, err = s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "tenant-1", ID: "req-1", Amount: 800})
	if err != nil || !res.Allowed || res.Status != domain.HoldReplayed || res.Remaining != 0 || res.Hold.Amount != 800 {
		t.Fatalf("retried acquire: %+v %v", res, err)
	}
	s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "fill"}, 0)
	res, err = s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "req-1"}, 120)
	if err != nil || res.Status != domain.HoldOK || res.Remaining != 879 || res.Overdraft != 0 {
		t.Fatalf("settle 120: %+v %v (want remaining 879: a peek after reports a cost-1 check)", res, err)
	}
	if res, err := s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "req-1"}, 120); err != nil || res.Status != domain.HoldReplayed || res.Remaining != 879 {
		t.Fatalf("retried settle: %+v %v", res, err)
	}
	_, err = s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "req-1"}, 90)
	var he *domain.HoldError
	if !errors.Is(err, domain.ErrHoldConflict) || !errors.As(err, &he) || he.Hold.Amount != 120 {
		t.Fatalf("settle with another amount: %v", err)
	}
	s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "tenant-1", ID: "req-2", Amount: 800})
	res, err = s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "req-2"}, 1000)
	if err != nil || res.Overdraft != 120 {
		t.Fatalf("settle past the limit: %+v %v, want overdraft 120", res, err)
	}
	if _, err := s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "tenant-1", ID: "never"}, 0); !errors.Is(err, domain.ErrHoldNotFound) {
		t.Fatalf("unknown hold: %v", err)
	}
}

// Concurrency through the Limiter: acquisitions up to the limit, a check refused as a validation error naming the
// policy, a peek allowed, a release frees a slot, an expired hold's renewal is refused.
func TestLimiterConcurrency(t *testing.T) {
	s, clock := holdService(t)
	ctx := context.Background()
	for i, want := range []bool{true, true, false} {
		res, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "streams", Key: "t", Amount: 1, TTL: 10 * time.Second})
		if err != nil || res.Allowed != want {
			t.Fatalf("acquire %d: %+v %v", i, res, err)
		}
		if !want && res.RetryAfter != 10*time.Second {
			t.Fatalf("denied acquire: retry after %s, want 10s (the first deadline)", res.RetryAfter)
		}
	}
	_, err := s.Check(ctx, domain.CheckRequest{Policy: "streams", Key: "t", Cost: 1})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Fields[0].Field != "policy" || !strings.Contains(ve.Fields[0].Detail, "acquire a hold") {
		t.Fatalf("a check on a concurrency policy: %v", err)
	}
	if _, _, err := s.CheckMany(ctx, []domain.CheckRequest{{Policy: "streams", Key: "t", Cost: 1}}, false); !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("in a multi-check: %v", err)
	}
	if res, err := s.Check(ctx, domain.CheckRequest{Policy: "streams", Key: "t"}); err != nil || res.Allowed || res.Remaining != 0 {
		t.Fatalf("a peek: %+v %v", res, err)
	}
	res, _ := s.Acquire(ctx, domain.AcquireRequest{Policy: "streams", Key: "u", ID: "mine", Amount: 2, TTL: 10 * time.Second})
	if res.Hold.Expires != clock.Now().Add(10*time.Second).UnixMicro() {
		t.Fatalf("deadline %d", res.Hold.Expires)
	}
	if res, err := s.Settle(ctx, domain.HoldRef{Policy: "streams", Key: "u", ID: "mine"}, 0); err != nil || res.Remaining != 1 {
		t.Fatalf("release: %+v %v", res, err)
	}
	s.Acquire(ctx, domain.AcquireRequest{Policy: "streams", Key: "v", ID: "lease", Amount: 1, TTL: time.Second})
	clock.Advance(time.Second)
	if _, err := s.Renew(ctx, domain.HoldRef{Policy: "streams", Key: "v", ID: "lease"}, 0); !errors.Is(err, domain.ErrHoldExpired) {
		t.Fatalf("renew after the deadline: %v", err)
	}
}

// Every field of a hold request is validated, all at once; ids that start with NUL are the anonymous holds'.
func TestLimiterHoldValidation(t *testing.T) {
	s, _ := holdService(t)
	ctx := context.Background()
	_, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "", ID: "\x00x", Amount: 2000, TTL: -time.Second})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%v", err)
	}
	got := map[string]bool{}
	for _, f := range ve.Fields {
		got[f.Field] = true
	}
	for _, f := range []string{"key", "id", "amount", "ttl"} {
		if !got[f] {
			t.Errorf("no problem for %s in %v", f, err)
		}
	}
	if _, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "nope", Key: "k", Amount: 1}); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("unknown policy: %v", err)
	}
	if _, err := s.Settle(ctx, domain.HoldRef{Policy: "tokens", Key: "k", ID: "x"}, -1); !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("negative settle: %v", err)
	}
	if _, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "tokens", Key: "k", ID: strings.Repeat("i", domain.MaxHoldIDBytes+1), Amount: 1}); !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("long id: %v", err)
	}
}

// A shadow policy's denied acquire is admitted and records nothing; its settle then finds no hold.
func TestLimiterShadowHold(t *testing.T) {
	s, _ := holdService(t)
	ctx := context.Background()
	s.Acquire(ctx, domain.AcquireRequest{Policy: "trial", Key: "k", ID: "a", Amount: 1})
	res, err := s.Acquire(ctx, domain.AcquireRequest{Policy: "trial", Key: "k", ID: "b", Amount: 1})
	if err != nil || !res.Allowed || !res.ShadowDenied {
		t.Fatalf("shadow-denied acquire: %+v %v", res, err)
	}
	if _, err := s.Settle(ctx, domain.HoldRef{Policy: "trial", Key: "k", ID: "b"}, 0); !errors.Is(err, domain.ErrHoldNotFound) {
		t.Fatalf("its release: %v", err)
	}
}

// A change between concurrency and a window algorithm is refused, on the API and on a config reload.
func TestKindChangeRefused(t *testing.T) {
	s, _ := holdService(t)
	ctx := context.Background()
	if _, _, err := s.PutPolicy(ctx, domain.Policy{Name: "jobs", Limit: 3, Window: time.Minute, Algorithm: domain.Concurrency}); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.PutPolicy(ctx, domain.Policy{Name: "jobs", Limit: 3, Window: time.Minute, Algorithm: domain.TokenBucket})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Fields[0].Field != "algorithm" {
		t.Fatalf("API change of kind: %v", err)
	}
	if _, _, err := s.PutPolicy(ctx, domain.Policy{Name: "jobs", Limit: 9, Window: time.Hour, Algorithm: domain.Concurrency}); err != nil {
		t.Fatalf("a change within the kind: %v", err)
	}
	_, err = s.Policies().InstallConfig([]domain.Policy{{Name: "streams", Limit: 2, Window: time.Minute, Algorithm: domain.SlidingLog}})
	if !errors.As(err, &ve) || ve.Fields[0].Field != "policies[0].algorithm" {
		t.Fatalf("reload with a change of kind: %v", err)
	}
	if p, _ := s.GetPolicy(ctx, "streams"); p.Algorithm != domain.Concurrency {
		t.Fatalf("the refused reload changed the policy: %+v", p)
	}
}

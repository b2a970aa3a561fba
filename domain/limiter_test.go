package domain_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// failingStore fails every decision with err, after the caller's context ends when wait is set.
type failingStore struct {
	domain.BucketStore
	err  error
	wait bool
}

func (f failingStore) Decide(ctx context.Context, _ domain.BucketRequest) (domain.Decision, error) {
	if f.wait {
		<-ctx.Done()
		return domain.Decision{}, ctx.Err()
	}
	return domain.Decision{}, f.err
}

// countingObserver records outcomes and store errors.
type countingObserver struct {
	outcomes  map[domain.Outcome]int
	storeErrs int
}

func (c *countingObserver) Decided(_, _ string, o domain.Outcome) { c.outcomes[o]++ }
func (c *countingObserver) StoreCall(_ string, _ time.Duration, err error) {
	if err != nil {
		c.storeErrs++
	}
}

func newService(t *testing.T, store domain.BucketStore, obs domain.Observer) *domain.Service {
	t.Helper()
	s, err := domain.NewService([]domain.Policy{
		{Name: "strict", Limit: 1, Window: time.Minute},
		{Name: "lenient", Limit: 1, Window: time.Minute, FailureMode: domain.FailAllow},
	}, memory.NewPolicies(clocktest.New(time.Unix(1000, 0))), store, obs, clocktest.New(time.Unix(1000, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFailureModes(t *testing.T) {
	obs := &countingObserver{outcomes: map[domain.Outcome]int{}}
	s := newService(t, failingStore{err: errors.New("connection refused")}, obs)
	ctx := context.Background()
	if _, err := s.Check(ctx, domain.CheckRequest{Policy: "strict", Key: "k", Cost: 1}); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("deny: got %v, want ErrUnavailable", err)
	}
	res, err := s.Check(ctx, domain.CheckRequest{Policy: "lenient", Key: "k", Cost: 1})
	if err != nil || !res.Allowed || !res.Degraded {
		t.Fatalf("allow: %+v %v", res, err)
	}
	if obs.outcomes[domain.OutcomeError] != 1 || obs.outcomes[domain.OutcomeDegraded] != 1 || obs.storeErrs != 2 {
		t.Fatalf("observed %+v, %d store errors", obs.outcomes, obs.storeErrs)
	}
}

// A client that disconnects is not a store failure: no failure_mode, no error counted.
func TestCallerGoneIsNotAStoreFailure(t *testing.T) {
	obs := &countingObserver{outcomes: map[domain.Outcome]int{}}
	s := newService(t, failingStore{wait: true}, obs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Check(ctx, domain.CheckRequest{Policy: "lenient", Key: "k", Cost: 1})
	if !errors.Is(err, context.Canceled) || errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if len(obs.outcomes) != 0 || obs.storeErrs != 0 {
		t.Fatalf("a cancelled caller was counted: %+v, %d store errors", obs.outcomes, obs.storeErrs)
	}
	// A timeout, by contrast, is the store's failure.
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := s.Check(ctx, domain.CheckRequest{Policy: "strict", Key: "k", Cost: 1}); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("timeout: got %v, want ErrUnavailable", err)
	}
}

func TestValidationNamesEveryField(t *testing.T) {
	s := newService(t, memory.New(clocktest.New(time.Unix(1000, 0)), memory.Options{}), nil)
	_, _, err := s.CheckMany(context.Background(), []domain.CheckRequest{
		{Policy: "strict", Key: "ok", Cost: 1},
		{Policy: "Bad!", Key: "", Cost: -1},
		{Policy: "strict", Key: "k", Cost: 2},
	}, true)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	want := []string{"checks[1].policy", "checks[1].key", "checks[1].cost", "checks[2].cost"}
	if len(ve.Fields) != len(want) {
		t.Fatalf("fields %+v, want %v", ve.Fields, want)
	}
	for i, f := range ve.Fields {
		if f.Field != want[i] {
			t.Fatalf("field %d = %q, want %q", i, f.Field, want[i])
		}
	}
}

// An unknown policy in one check does not hide the field errors of the others (issue 12).
func TestUnknownPolicyDoesNotHideFieldErrors(t *testing.T) {
	s := newService(t, memory.New(clocktest.New(time.Unix(1000, 0)), memory.Options{}), nil)
	_, _, err := s.CheckMany(context.Background(), []domain.CheckRequest{
		{Policy: "nope", Key: "k", Cost: 1},
		{Policy: "strict", Key: "", Cost: 1},
	}, true)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "checks[1].key" {
		t.Fatalf("got %v, want the field error of checks[1].key", err)
	}
	_, _, err = s.CheckMany(context.Background(), []domain.CheckRequest{{Policy: "nope", Key: "k", Cost: 1}}, true)
	if !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("got %v, want ErrPolicyNotFound", err)
	}
}

// CheckPolicies decides under policies the caller resolved, validating them and the checks as CheckMany does.
func TestCheckPolicies(t *testing.T) {
	s := newService(t, memory.New(clocktest.New(time.Unix(1000, 0)), memory.Options{}), nil)
	ctx := context.Background()
	p := domain.Policy{Name: "rls.a", Limit: 2, Window: time.Minute, Algorithm: domain.SlidingLog}
	q := domain.Policy{Name: "rls.b", Limit: 1, Window: time.Minute, Algorithm: domain.SlidingLog}
	rs, allowed, err := s.CheckPolicies(ctx, []domain.PolicyCheck{{Policy: p, Key: "k", Cost: 1}, {Policy: q, Key: "k", Cost: 1}}, true)
	if err != nil || !allowed || rs[0].Remaining != 1 || rs[1].Remaining != 0 {
		t.Fatalf("first: %+v %v %v", rs, allowed, err)
	}
	rs, allowed, err = s.CheckPolicies(ctx, []domain.PolicyCheck{{Policy: p, Key: "k", Cost: 1}, {Policy: q, Key: "k", Cost: 1}}, true)
	if err != nil || allowed || !rs[0].Allowed || rs[1].Allowed {
		t.Fatalf("second: %+v %v %v", rs, allowed, err)
	}
	// The atomic batch recorded nothing: p still has one unit.
	rs, _, err = s.CheckPolicies(ctx, []domain.PolicyCheck{{Policy: p, Key: "k", Cost: 0}}, false)
	if err != nil || rs[0].Remaining != 0 || !rs[0].Allowed {
		t.Fatalf("peek: %+v %v", rs, err)
	}
	_, _, err = s.CheckPolicies(ctx, []domain.PolicyCheck{{Policy: domain.Policy{Name: "x", Limit: 0, Window: time.Minute}, Key: "k", Cost: 1}}, false)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Fields[0].Field != "checks[0].policy.limit" {
		t.Fatalf("invalid policy: got %v", err)
	}
}

// A grown window gives the same answer whether or not a check happened between the units' expiry and the
// change (issue 11, finding 2, on the memory store): units that had stopped counting never come back.
func TestGrownWindowSameAnswerWithOrWithoutAPeek(t *testing.T) {
	for _, peek := range []bool{false, true} {
		clock := clocktest.New(time.Unix(1_000_000, 0))
		store := memory.New(clock, memory.Options{})
		s, err := domain.NewService(nil, store.Policies(), store, nil, clock)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, _, err := s.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 3, Window: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if res, err := s.Check(ctx, domain.CheckRequest{Policy: "p", Key: "k", Cost: 1}); err != nil || !res.Allowed {
				t.Fatalf("admission: %+v %v", res, err)
			}
		}
		clock.Advance(6 * time.Second)
		if peek {
			s.Check(ctx, domain.CheckRequest{Policy: "p", Key: "k", Cost: 0})
		}
		if _, _, err := s.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 3, Window: time.Hour}); err != nil {
			t.Fatal(err)
		}
		res, err := s.Check(ctx, domain.CheckRequest{Policy: "p", Key: "k", Cost: 3})
		if err != nil || !res.Allowed {
			t.Fatalf("peek=%v: units that had stopped counting came back: %+v %v", peek, res, err)
		}
		// And a re-created policy never counts the deleted one's units.
		if err := s.DeletePolicy(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 3, Window: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if res, err := s.Check(ctx, domain.CheckRequest{Policy: "p", Key: "k", Cost: 3}); err != nil || !res.Allowed {
			t.Fatalf("re-created: %+v %v", res, err)
		}
	}
}

// Limits past 2^53-1 are refused before they reach a store (issue 11, finding 3).
func TestLimitAboveTheBoundIsRefused(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	store := memory.New(clock, memory.Options{})
	s, err := domain.NewService(nil, store.Policies(), store, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{domain.MaxLimit + 1, 1<<63 - 1} {
		_, _, err := s.PutPolicy(context.Background(), domain.Policy{Name: "p", Limit: limit, Window: time.Hour})
		var ve *domain.ValidationError
		if !errors.As(err, &ve) || ve.Fields[0].Field != "limit" {
			t.Fatalf("limit %d: got %v", limit, err)
		}
	}
	if _, err := domain.ConfigPolicies([]domain.Policy{{Name: "p", Limit: 1<<63 - 1, Window: time.Hour}}); err == nil {
		t.Fatal("a config policy with limit 2^63-1 was accepted")
	}
}

// unloadedPolicies is a policy store whose copy is not loaded until loaded is set (domain.PolicyLoader), as a
// shared store's before its first load.
type unloadedPolicies struct {
	domain.PolicyStore
	loaded bool
}

func (p *unloadedPolicies) Loaded(context.Context) error {
	if !p.loaded {
		return errors.New("API policies not loaded yet")
	}
	return nil
}

// TestReadyWaitsForThePolicies: a Service is not ready while its policy store has not loaded the API policies,
// though the bucket store answers; it is once the store has. Readiness asks the store (PoliciesLoaded), not a
// policy name: any name may be a policy, sluice.readiness-probe included.
func TestReadyWaitsForThePolicies(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	ps := &unloadedPolicies{PolicyStore: memory.NewPolicies(clock)}
	svc, err := domain.NewService(nil, ps, memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ue *domain.UnavailableError
	if err := svc.Ready(ctx); !errors.As(err, &ue) {
		t.Fatalf("Ready before the policies are loaded: %v, want an UnavailableError", err)
	}
	if err := svc.PoliciesLoaded(ctx); !errors.As(err, &ue) {
		t.Fatalf("PoliciesLoaded before the policies are loaded: %v, want an UnavailableError", err)
	}
	ps.loaded = true
	if err := svc.Ready(ctx); err != nil {
		t.Fatalf("Ready once they are: %v", err)
	}
	// The name the readiness check used to look up is an ordinary policy name now.
	if _, _, err := svc.PutPolicy(ctx, domain.Policy{Name: "sluice.readiness-probe", Limit: 1, Window: time.Minute}); err != nil {
		t.Fatalf("PUT sluice.readiness-probe: %v", err)
	}
	if res, err := svc.Check(ctx, domain.CheckRequest{Policy: "sluice.readiness-probe", Key: "k", Cost: 1}); err != nil || !res.Allowed {
		t.Fatalf("check of sluice.readiness-probe: %+v, %v", res, err)
	}
	if err := svc.Ready(ctx); err != nil {
		t.Fatalf("Ready with a policy named sluice.readiness-probe: %v", err)
	}
}

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

func (c *countingObserver) Decided(_ string, o domain.Outcome) { c.outcomes[o]++ }
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
	}, memory.NewPolicies(), store, obs, clocktest.New(time.Unix(1000, 0)))
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

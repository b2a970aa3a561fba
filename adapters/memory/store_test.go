package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return memory.New(clock, memory.Options{MaxKeys: 10_000})
	})
}

func TestConformanceOneShard(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return memory.New(clock, memory.Options{MaxKeys: 10_000, Shards: 1})
	})
}

func check(s *memory.Store, key string, cost int64) (domain.Decision, error) {
	return s.Decide(context.Background(), domain.BucketRequest{Policy: "p", Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 2, Window: time.Minute}, Cost: cost})
}

func TestFullStoreNeverEvictsLiveKeys(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	s := memory.New(clock, memory.Options{MaxKeys: 3, PolicyShare: 1})
	for i := 0; i < 3; i++ {
		if _, err := check(s, fmt.Sprint("k", i), 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := check(s, "new", 1); !errors.Is(err, domain.ErrStoreFull) {
		t.Fatalf("a new key in a store full of live keys: got %v, want ErrStoreFull", err)
	}
	if s.FullRejections() != 1 || s.Keys() != 3 {
		t.Fatalf("full rejections %d, keys %d", s.FullRejections(), s.Keys())
	}
	// The live keys kept their counters.
	if d, err := check(s, "k0", 1); err != nil || d.Allowed {
		t.Fatalf("live key lost its state: %+v %v", d, err)
	}
	// A peek of a new key needs no slot.
	if d, err := check(s, "new", 0); err != nil || !d.Allowed {
		t.Fatalf("peek in a full store: %+v %v", d, err)
	}
	// Once the window has passed, the dead keys are swept to make room.
	clock.Advance(time.Minute)
	if d, err := check(s, "new", 1); err != nil || !d.Allowed {
		t.Fatalf("after the window: %+v %v", d, err)
	}
	if s.Keys() != 1 {
		t.Fatalf("keys after sweep = %d, want 1", s.Keys())
	}
}

// Issue 27: checks of one policy cannot take the others' room. A shadow policy with a one-day window (anyone with
// a check token can make it track keys) stops at a tenth of the store, an enforcing one at half; the other
// policies' new keys are still tracked and limited, so neither failure_mode ever has to answer for them.
func TestOnePolicyCannotExhaustAnothersRoom(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	s := memory.New(clock, memory.Options{MaxKeys: 100})
	ctx := context.Background()
	day := domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: 24 * time.Hour}
	flood := func(policy string, shadow bool) (tracked int) {
		for i := range 1000 {
			_, err := s.Decide(ctx, domain.BucketRequest{Policy: policy, Key: fmt.Sprint("flood", i), Rule: day, Cost: 1, Shadow: shadow})
			switch {
			case err == nil:
				tracked++
			case !errors.Is(err, domain.ErrStoreFull):
				t.Fatal(err)
			}
		}
		return tracked
	}
	if n := flood("shadowed", true); n != 10 || s.PolicyKeys("shadowed") != 10 {
		t.Fatalf("a shadow policy tracked %d keys of 100 (held %d), want 10", n, s.PolicyKeys("shadowed"))
	}
	if n := flood("hostile", false); n != 50 {
		t.Fatalf("one policy tracked %d keys of 100, want 50", n)
	}
	for i := range 40 {
		r := domain.BucketRequest{Policy: "login", Key: fmt.Sprint("user", i), Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1, Window: time.Minute}, Cost: 1}
		if d, err := s.Decide(ctx, r); err != nil || !d.Allowed {
			t.Fatalf("another policy's new key %d after the floods: %+v %v", i, d, err)
		}
		if d, err := s.Decide(ctx, r); err != nil || d.Allowed {
			t.Fatalf("another policy's key %d is not limited after the floods: %+v %v", i, d, err)
		}
	}
	if s.Keys() != 100 || s.PolicyKeys("login") != 40 {
		t.Fatalf("keys %d, login's %d", s.Keys(), s.PolicyKeys("login"))
	}
	// Dropped keys give their room back to their policy.
	if err := s.DropPolicy(ctx, "hostile"); err != nil {
		t.Fatal(err)
	}
	if s.PolicyKeys("hostile") != 0 || s.Keys() != 50 {
		t.Fatalf("after DropPolicy: hostile holds %d, store %d", s.PolicyKeys("hostile"), s.Keys())
	}
	if n := flood("hostile", false); n != 50 {
		t.Fatalf("after DropPolicy the policy tracked %d, want its 50 again", n)
	}
}

func TestEmptyKeysAreDropped(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	s := memory.New(clock, memory.Options{})
	for i := 0; i < 100; i++ {
		check(s, fmt.Sprint("k", i), 1)
	}
	if s.Keys() != 100 {
		t.Fatalf("keys = %d", s.Keys())
	}
	clock.Advance(30 * time.Second)
	if n := s.Sweep(); n != 0 || s.Keys() != 100 {
		t.Fatalf("swept %d live keys", n)
	}
	clock.Advance(30 * time.Second)
	if n := s.Sweep(); n != 100 || s.Keys() != 0 {
		t.Fatalf("swept %d, %d left", n, s.Keys())
	}
	// A key whose window empties is dropped when it is next touched, too.
	check(s, "x", 1)
	clock.Advance(time.Minute)
	check(s, "x", 0)
	if s.Keys() != 0 {
		t.Fatalf("keys = %d after a peek of an expired key", s.Keys())
	}
}

func TestAtomicBatchInFullStoreRecordsNothing(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	s := memory.New(clock, memory.Options{MaxKeys: 1})
	ctx := context.Background()
	_, err := s.DecideBatch(ctx, []domain.BucketRequest{
		{Policy: "a", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Minute}, Cost: 1},
		{Policy: "b", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Minute}, Cost: 1},
	}, true)
	if !errors.Is(err, domain.ErrStoreFull) {
		t.Fatalf("got %v, want ErrStoreFull", err)
	}
	if s.Keys() != 0 {
		t.Fatalf("a failed batch left %d keys", s.Keys())
	}
}

// A check of an API policy decides only with the generation in force: one that resolved its policy before a DELETE
// (and re-create) reaches the store after DropPolicy emptied the key, and is refused instead of counting the deleted
// generation afresh (the churn test saw a deleted sliding_log of 8 admit a 9th that way).
func TestStoredCheckOfADeletedGenerationIsRefused(t *testing.T) {
	clock := clocktest.New(time.Unix(1_000_000, 0))
	s := memory.New(clock, memory.Options{})
	pols := s.Policies()
	ctx := context.Background()
	if _, err := pols.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 2, Window: time.Hour}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	old, _ := pols.GetPolicy(ctx, "p")
	req := domain.BucketRequest{Policy: "p", Key: "k", Rule: old.Rule(), Cost: 1, Stored: true}
	if d, err := s.Decide(ctx, req); err != nil || !d.Allowed {
		t.Fatalf("generation in force: %+v %v", d, err)
	}
	if err := pols.DeletePolicy(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPolicy(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(ctx, req); err != nil || d.Status != domain.StatusPolicyNotFound || s.Keys() != 0 {
		t.Fatalf("a check of the deleted policy: %+v %v (keys %d)", d, err, s.Keys())
	}
	if _, err := pols.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 2, Window: time.Hour}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	if d, err := s.DecideBatch(ctx, []domain.BucketRequest{req}, true); err != nil || d[0].Status != domain.StatusPolicyNotFound {
		t.Fatalf("a check of the deleted generation after the re-create: %+v %v", d, err)
	}
	cur, _ := pols.GetPolicy(ctx, "p")
	req.Rule = cur.Rule()
	if d, err := s.Decide(ctx, req); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("the new generation: %+v %v", d, err)
	}
}

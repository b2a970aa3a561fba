// Package storetest is the conformance suite every domain.BucketStore adapter runs, in the spirit of go-cloud's
// drivertest: one set of behaviours, written once, that every store (memory, Postgres, Redis and Redis Cluster)
// must show.
//
// An adapter's test calls Run with a constructor. Stores that decide with another clock in production (Postgres
// uses the database's) must offer a test mode that reads the given clock, so the suite can move time without
// sleeping. The suite uses millisecond steps, so stores may keep microsecond instants.
package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// NewStore returns an empty store whose time follows clock. Each call must be independent of the others.
type NewStore func(t *testing.T, clock domain.Clock) domain.BucketStore

// Run runs the whole suite against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(*testing.T, NewStore)
	}{
		{"Sequence", testSequence},
		{"ExactFieldsAtBoundaries", testBoundaries},
		{"RaceForLastUnits", testRace},
		{"PeekWritesNothing", testPeek},
		{"DenialWritesNothing", testDenialWritesNothing},
		{"Reset", testReset},
		{"IsolationAcrossPolicies", testIsolation},
		{"KeysStoredExactly", testKeysExact},
		{"PolicyChangeKeepsHistory", testPolicyChange},
		{"DropPolicy", testDropPolicy},
		{"BatchAtomicAllOrNothing", testBatchAtomic},
		{"BatchNonAtomic", testBatchNonAtomic},
		{"BatchSameKeyTwice", testBatchSameKey},
		{"BatchShadowDoesNotBlock", testBatchShadow},
		{"BatchOppositeOrderNoDeadlock", testBatchNoDeadlock},
		{"BatchRaceExact", testBatchRace},
		{"Ping", testPing},
		{"EveryAlgorithmMatchesTheDomainStep", testModel},
		{"EveryAlgorithmRaceForLastUnits", testRaceAlgorithms},
		{"EveryAlgorithmAtomicBatch", testBatchAlgorithms},
		{"NumericBounds", testNumericBounds},
		{"ExpiryRuleAndGenerations", testExpiryRule},
		{"ChangesKeepUnits", testChangesKeepUnits},
		{"UnknownAlgorithmIsNotDecided", testUnknownAlgorithm},
	}
	for _, tc := range append(append(append(tests, holdTests...), batchOpTests...), calendarTests...) {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func setup(t *testing.T, newStore NewStore) (domain.BucketStore, *clocktest.Clock, context.Context) {
	t.Helper()
	clock := clocktest.New(epoch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return newStore(t, clock), clock, ctx
}

func req(policy, key string, limit int64, window time.Duration, cost int64) domain.BucketRequest {
	return domain.BucketRequest{Policy: policy, Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: limit, Window: window}, Cost: cost}
}

func decide(t *testing.T, ctx context.Context, s domain.BucketStore, r domain.BucketRequest) domain.Decision {
	t.Helper()
	d, err := s.Decide(ctx, r)
	if err != nil {
		t.Fatalf("Decide(%+v): %v", r, err)
	}
	return d
}

func want(t *testing.T, what string, got, want domain.Decision) {
	t.Helper()
	if got != want {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testSequence(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	const w = 10 * time.Second
	for i := int64(1); i <= 3; i++ {
		want(t, fmt.Sprintf("check %d", i), decide(t, ctx, s, req("p", "k", 3, w, 1)),
			domain.Decision{Allowed: true, Limit: 3, Remaining: 3 - i, ResetAfter: w})
		clock.Advance(time.Second)
	}
	// t=3s: units at 0s, 1s, 2s. The next fits when the one at 0s leaves, at 10s.
	want(t, "4th check", decide(t, ctx, s, req("p", "k", 3, w, 1)),
		domain.Decision{Allowed: false, Limit: 3, Remaining: 0, ResetAfter: 9 * time.Second, RetryAfter: 7 * time.Second})
	clock.Advance(7 * time.Second)
	want(t, "after retry_after", decide(t, ctx, s, req("p", "k", 3, w, 1)),
		domain.Decision{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: w})
}

func testBoundaries(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	const w = time.Minute
	want(t, "cost 2 of 5", decide(t, ctx, s, req("p", "k", 5, w, 2)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 3, ResetAfter: w})
	clock.Advance(10 * time.Second)
	want(t, "cost 3 of 3 left", decide(t, ctx, s, req("p", "k", 5, w, 3)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 0, ResetAfter: w})
	clock.Advance(10 * time.Second)
	want(t, "cost 3 when full", decide(t, ctx, s, req("p", "k", 5, w, 3)),
		domain.Decision{Allowed: false, Limit: 5, Remaining: 0, ResetAfter: 50 * time.Second, RetryAfter: 50 * time.Second})
	want(t, "cost 1 when full", decide(t, ctx, s, req("p", "k", 5, w, 1)),
		domain.Decision{Allowed: false, Limit: 5, Remaining: 0, ResetAfter: 50 * time.Second, RetryAfter: 40 * time.Second})
	// One millisecond before the first units leave they still count; at exactly one window they are gone.
	clock.Advance(40*time.Second - time.Millisecond)
	want(t, "1ms before the boundary", decide(t, ctx, s, req("p", "k", 5, w, 1)),
		domain.Decision{Allowed: false, Limit: 5, Remaining: 0, ResetAfter: 10*time.Second + time.Millisecond, RetryAfter: time.Millisecond})
	clock.Advance(time.Millisecond)
	want(t, "at the boundary", decide(t, ctx, s, req("p", "k", 5, w, 2)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 0, ResetAfter: w})
	// limit 1, the edge that breaks limiters most often.
	want(t, "limit 1 first", decide(t, ctx, s, req("one", "k", 1, time.Second, 1)),
		domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Second})
	want(t, "limit 1 second", decide(t, ctx, s, req("one", "k", 1, time.Second, 1)),
		domain.Decision{Allowed: false, Limit: 1, Remaining: 0, ResetAfter: time.Second, RetryAfter: time.Second})
	clock.Advance(time.Second)
	want(t, "limit 1 after a window", decide(t, ctx, s, req("one", "k", 1, time.Second, 1)),
		domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Second})
}

func testRace(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	const limit, workers, tries = 50, 32, 8
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tries {
				d, err := s.Decide(ctx, req("race", "hot", limit, time.Hour, 1))
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := admitted.Load(); got != limit {
		t.Fatalf("%d workers × %d tries admitted %d, want exactly %d", workers, tries, got, limit)
	}
}

func testPeek(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	const w = time.Minute
	want(t, "peek of an unknown key", decide(t, ctx, s, req("p", "k", 2, w, 0)),
		domain.Decision{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: w})
	for i := 0; i < 5; i++ {
		decide(t, ctx, s, req("p", "k", 2, w, 0))
	}
	want(t, "check after peeks", decide(t, ctx, s, req("p", "k", 2, w, 2)),
		domain.Decision{Allowed: true, Limit: 2, Remaining: 0, ResetAfter: w})
	want(t, "peek when full", decide(t, ctx, s, req("p", "k", 2, w, 0)),
		domain.Decision{Allowed: false, Limit: 2, Remaining: 0, ResetAfter: w, RetryAfter: w})
}

func testDenialWritesNothing(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	const w = 10 * time.Second
	decide(t, ctx, s, req("p", "k", 2, w, 2))
	for i := 0; i < 20; i++ {
		clock.Advance(100 * time.Millisecond)
		if d := decide(t, ctx, s, req("p", "k", 2, w, 1)); d.Allowed {
			t.Fatalf("denial %d admitted", i)
		}
	}
	clock.Advance(8 * time.Second) // exactly one window after the admitted units
	want(t, "refill not delayed by denials", decide(t, ctx, s, req("p", "k", 2, w, 2)),
		domain.Decision{Allowed: true, Limit: 2, Remaining: 0, ResetAfter: w})
}

func testReset(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("p", "k", 3, time.Hour, 3))
	decide(t, ctx, s, req("p", "other", 3, time.Hour, 3))
	if err := s.Reset(ctx, "p", "k"); err != nil {
		t.Fatal(err)
	}
	want(t, "after reset", decide(t, ctx, s, req("p", "k", 3, time.Hour, 3)),
		domain.Decision{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: time.Hour})
	if d := decide(t, ctx, s, req("p", "other", 3, time.Hour, 1)); d.Allowed {
		t.Fatal("reset of one key reset another")
	}
	if err := s.Reset(ctx, "p", "never-seen"); err != nil {
		t.Fatalf("reset of an unknown key: %v", err)
	}
}

func testIsolation(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("login", "10.0.0.1", 1, time.Hour, 1))
	// The same key under another policy has its own state (certctl's limiters shared one key space).
	want(t, "same key, other policy", decide(t, ctx, s, req("signup", "10.0.0.1", 1, time.Hour, 1)),
		domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Hour})
	// Names that would collide if policy and key were joined with a separator.
	decide(t, ctx, s, req("a", "b:c", 1, time.Hour, 1))
	want(t, "no separator collision", decide(t, ctx, s, req("a:b", "c", 1, time.Hour, 1)),
		domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Hour})
	decide(t, ctx, s, req("x", "y.z", 1, time.Hour, 1))
	want(t, "no concatenation collision", decide(t, ctx, s, req("x.y", ".z", 1, time.Hour, 1)),
		domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Hour})
}

func testKeysExact(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	keys := []string{"a", "A", "a ", "a\x00b", "a\x00c", "\t\n\r", "ключ", "🔑", "e\u0301", "\u00e9", "a/b%2Fc", "'; DROP TABLE x; --"}
	for _, k := range keys {
		want(t, fmt.Sprintf("first check of %q", k), decide(t, ctx, s, req("p", k, 1, time.Hour, 1)),
			domain.Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: time.Hour})
	}
	for _, k := range keys {
		if d := decide(t, ctx, s, req("p", k, 1, time.Hour, 1)); d.Allowed {
			t.Fatalf("key %q shares state with another key", k)
		}
	}
}

func testPolicyChange(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	decide(t, ctx, s, req("p", "k", 5, time.Minute, 5))
	// Raising the limit keeps the 5 units already admitted.
	want(t, "limit raised to 8", decide(t, ctx, s, req("p", "k", 8, time.Minute, 3)),
		domain.Decision{Allowed: true, Limit: 8, Remaining: 0, ResetAfter: time.Minute})
	// Lowering the limit below what the window holds leaves nothing (never a negative remaining) and the key
	// waits until enough units leave: the 5 units at t=0 must go before 2 of 3 fit.
	want(t, "limit lowered to 3", decide(t, ctx, s, req("p", "k", 3, time.Minute, 1)),
		domain.Decision{Allowed: false, Limit: 3, Remaining: 0, ResetAfter: time.Minute, RetryAfter: time.Minute})
	clock.Advance(30 * time.Second)
	// Shrinking the window to 20s drops the units older than 20s.
	want(t, "window shrunk to 20s", decide(t, ctx, s, req("p", "k", 8, 20*time.Second, 8)),
		domain.Decision{Allowed: true, Limit: 8, Remaining: 0, ResetAfter: 20 * time.Second})
}

func testDropPolicy(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("gone", "k", 1, time.Hour, 1))
	decide(t, ctx, s, req("kept", "k", 1, time.Hour, 1))
	if err := s.DropPolicy(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, ctx, s, req("gone", "k", 1, time.Hour, 1)); !d.Allowed {
		t.Fatal("dropped policy kept its state")
	}
	if d := decide(t, ctx, s, req("kept", "k", 1, time.Hour, 1)); d.Allowed {
		t.Fatal("dropping one policy dropped another")
	}
}

func batch(t *testing.T, ctx context.Context, s domain.BucketStore, atomic bool, rs ...domain.BucketRequest) []domain.Decision {
	t.Helper()
	ds, err := s.DecideBatch(ctx, rs, atomic)
	if err != nil {
		t.Fatalf("DecideBatch: %v", err)
	}
	if len(ds) != len(rs) {
		t.Fatalf("DecideBatch returned %d decisions for %d checks", len(ds), len(rs))
	}
	return ds
}

func testBatchAtomic(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("daily", "u", 2, time.Hour, 2)) // the daily limit is spent
	ds := batch(t, ctx, s, true, req("burst", "u", 5, time.Second, 1), req("daily", "u", 2, time.Hour, 1))
	if !ds[0].Allowed || ds[1].Allowed {
		t.Fatalf("decisions as evaluated: %+v", ds)
	}
	// Nothing was recorded for the burst limit: the rejected request did not drain it.
	want(t, "burst untouched", decide(t, ctx, s, req("burst", "u", 5, time.Second, 0)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: time.Second})
	ds = batch(t, ctx, s, true, req("burst", "u", 5, time.Second, 1), req("other", "u", 2, time.Hour, 1))
	if !ds[0].Allowed || !ds[1].Allowed {
		t.Fatalf("admissible batch denied: %+v", ds)
	}
	want(t, "burst recorded", decide(t, ctx, s, req("burst", "u", 5, time.Second, 0)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 3, ResetAfter: time.Second})
}

func testBatchNonAtomic(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("daily", "u", 1, time.Hour, 1))
	ds := batch(t, ctx, s, false, req("burst", "u", 5, time.Second, 1), req("daily", "u", 1, time.Hour, 1))
	if !ds[0].Allowed || ds[1].Allowed {
		t.Fatalf("decisions: %+v", ds)
	}
	want(t, "burst recorded without atomic", decide(t, ctx, s, req("burst", "u", 5, time.Second, 0)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 3, ResetAfter: time.Second})
}

func testBatchSameKey(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	ds := batch(t, ctx, s, true, req("p", "k", 3, time.Minute, 2), req("p", "k", 3, time.Minute, 2))
	if !ds[0].Allowed || ds[1].Allowed || ds[1].Remaining != 1 {
		t.Fatalf("second check must see the first's units: %+v", ds)
	}
	want(t, "rolled back", decide(t, ctx, s, req("p", "k", 3, time.Minute, 3)),
		domain.Decision{Allowed: true, Limit: 3, Remaining: 0, ResetAfter: time.Minute})
}

func testBatchShadow(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	decide(t, ctx, s, req("trial", "u", 1, time.Hour, 1))
	shadow := req("trial", "u", 1, time.Hour, 1)
	shadow.Shadow = true
	ds := batch(t, ctx, s, true, req("real", "u", 5, time.Hour, 1), shadow)
	if !ds[0].Allowed || ds[1].Allowed {
		t.Fatalf("decisions: %+v", ds)
	}
	want(t, "shadow denial did not block the batch", decide(t, ctx, s, req("real", "u", 5, time.Hour, 0)),
		domain.Decision{Allowed: true, Limit: 5, Remaining: 3, ResetAfter: time.Hour})
}

func testBatchNoDeadlock(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, b := req("p", "x", 1_000_000, time.Hour, 1), req("p", "y", 1_000_000, time.Hour, 1)
			if g%2 == 1 {
				a, b = b, a // opposite order
			}
			for i := 0; i < 50; i++ {
				if _, err := s.DecideBatch(ctx, []domain.BucketRequest{a, b}, true); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opposite-order batches: %v", err)
	}
	want(t, "every batch applied", decide(t, ctx, s, req("p", "x", 1_000_000, time.Hour, 0)),
		domain.Decision{Allowed: true, Limit: 1_000_000, Remaining: 1_000_000 - 400 - 1, ResetAfter: time.Hour})
}

func testBatchRace(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	// Each batch takes one unit of a shared key and one of a private key; the shared limit must hold exactly.
	const limit, workers = 20, 16
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				ds, err := s.DecideBatch(ctx, []domain.BucketRequest{
					req("own", fmt.Sprint("w", w), 100, time.Hour, 1),
					req("shared", "k", limit, time.Hour, 1),
				}, true)
				if err != nil {
					t.Error(err)
					return
				}
				if ds[0].Allowed && ds[1].Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("admitted %d batches, want exactly %d", got, limit)
	}
}

func testPing(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func rule(alg domain.Algorithm, limit int64, window time.Duration) domain.Rule {
	p := domain.Policy{Name: "p", Limit: limit, Window: window, Algorithm: alg}.WithDefaults()
	return p.Rule()
}

// testModel drives the store and domain.Bucket (the reference step of every algorithm) with the same random
// checks over a few policies and keys, with limits raised and lowered, windows and algorithms changed (with the
// floor the policy store would set) and policies re-created (a new generation) on the way, and requires
// identical decisions: every store applies exactly the domain's steps and conversions. Each subtest starts
// every policy with one algorithm.
func testModel(t *testing.T, newStore NewStore) {
	for _, alg := range domain.WindowAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			s, clock, ctx := setup(t, newStore)
			rng := rand.New(rand.NewPCG(uint64(len(alg)), 42))
			type pk struct{ p, k string }
			ref := map[pk]*domain.Bucket{}
			policies := []domain.Policy{
				{Name: "a", Limit: 3, Window: 2 * time.Second, Algorithm: alg},
				{Name: "b", Limit: 7, Window: 5 * time.Second, Algorithm: alg},
				{Name: "c", Limit: 1_000_000, Window: time.Hour, Algorithm: alg},
			}
			for i := range policies {
				policies[i] = policies[i].WithDefaults()
			}
			for step := 0; step < 400; step++ {
				clock.Advance(time.Duration(rng.IntN(400)) * time.Millisecond)
				now := clock.Now().UnixMicro()
				i := rng.IntN(len(policies))
				if rng.IntN(25) == 0 { // a policy change
					policies[i] = changePolicy(policies[i], rng.IntN(4), int64(rng.IntN(5))-2, time.Duration(1+rng.IntN(8))*time.Second,
						domain.WindowAlgorithms[rng.IntN(len(domain.WindowAlgorithms))], now)
				}
				p := policies[i]
				key := fmt.Sprint("k", rng.IntN(3))
				cost := rng.Int64N(min(p.Limit, 4) + 1)
				r := domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule(), Cost: cost}
				b := ref[pk{p.Name, key}]
				if b == nil {
					b = &domain.Bucket{}
					ref[pk{p.Name, key}] = b
				}
				want(t, fmt.Sprintf("step %d %+v", step, r), decide(t, ctx, s, r), b.Decide(now, r.Rule, cost))
			}
		})
	}
}

// changePolicy is old changed as a policy store changes it (kind 0: the limit by delta, within 1 to MaxLimit; 1:
// the window; 2: re-created, a new generation; 3: the algorithm, to alg) at instant now. A change of window or
// algorithm raises the floor as the policy stores do (domain.NextFloor), so units that had stopped counting never
// count again.
func changePolicy(old domain.Policy, kind int, delta int64, window time.Duration, alg domain.Algorithm, now int64) domain.Policy {
	p := old
	switch kind {
	case 0:
		p.Limit = max(1, min(old.Limit+delta, domain.MaxLimit))
	case 1, 3:
		if kind == 1 {
			p.Window = window
		} else {
			p.Algorithm = alg
		}
		p.Resolution = 0
		p = p.WithDefaults()
		p.Floor = domain.NextFloor(old, now)
	case 2:
		p.Generation++
		p.Floor = 0
	}
	return p
}

func testRaceAlgorithms(t *testing.T, newStore NewStore) {
	for _, alg := range domain.WindowAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			s, _, ctx := setup(t, newStore)
			const limit, workers, tries = 40, 16, 6
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range tries {
						d, err := s.Decide(ctx, domain.BucketRequest{Policy: "race", Key: "hot", Rule: rule(alg, limit, time.Hour), Cost: 1})
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							admitted.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if got := admitted.Load(); got != limit {
				t.Fatalf("%d workers × %d tries admitted %d, want exactly %d", workers, tries, got, limit)
			}
		})
	}
}

func testBatchAlgorithms(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	// One request, one limit per algorithm: the last is spent, so nothing is recorded for the others.
	var rs []domain.BucketRequest
	for i, alg := range domain.WindowAlgorithms {
		rs = append(rs, domain.BucketRequest{Policy: fmt.Sprint("alg", i), Key: "u", Rule: rule(alg, 5, time.Hour), Cost: 2})
	}
	spent := domain.BucketRequest{Policy: "daily", Key: "u", Rule: rule(domain.FixedWindow, 1, time.Hour), Cost: 1}
	decide(t, ctx, s, spent)
	ds := batch(t, ctx, s, true, append(rs, spent)...)
	for i := range rs {
		if !ds[i].Allowed {
			t.Fatalf("check %d denied as evaluated: %+v", i, ds[i])
		}
	}
	if ds[len(rs)].Allowed {
		t.Fatalf("spent limit admitted: %+v", ds[len(rs)])
	}
	for i, r := range rs {
		peek := r
		peek.Cost = 0
		if d := decide(t, ctx, s, peek); d.Remaining != 4 {
			t.Fatalf("%s: the denied batch recorded units: %+v", domain.WindowAlgorithms[i], d)
		}
	}
	ds = batch(t, ctx, s, true, rs...)
	for i, r := range rs {
		peek := r
		peek.Cost = 0
		if d := decide(t, ctx, s, peek); !ds[i].Allowed || d.Remaining != 2 {
			t.Fatalf("%s: an admitted batch did not record: %+v then %+v", domain.WindowAlgorithms[i], ds[i], d)
		}
	}
}

// testNumericBounds: a limit of 2^53-1 over 31 days, the contract's bounds, decides exactly on every store.
func testNumericBounds(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	for _, alg := range domain.WindowAlgorithms {
		r := rule(alg, domain.MaxLimit, domain.MaxWindow)
		var ref domain.Bucket
		for i, cost := range []int64{domain.MaxLimit - 1, 1, 1, domain.MaxLimit, 0} {
			now := clock.Now().UnixMicro()
			req := domain.BucketRequest{Policy: "max", Key: string(alg), Rule: r, Cost: cost}
			want(t, fmt.Sprintf("%s check %d", alg, i), decide(t, ctx, s, req), ref.Decide(now, r, cost))
		}
	}
}

// testExpiryRule: growing a window never brings back units that had stopped counting; a re-created policy (a
// new generation) never counts the old one's keys.
func testExpiryRule(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	for _, alg := range []domain.Algorithm{domain.SlidingLog, domain.SlidingWindow, domain.FixedWindow} {
		p := domain.Policy{Name: "grow-" + string(alg), Limit: 3, Window: time.Second, Algorithm: alg}.WithDefaults()
		decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: 3})
		clock.Advance(2 * time.Second) // the units have stopped counting under 1s
		grown := p
		grown.Window, grown.Resolution = time.Hour, 0
		grown = grown.WithDefaults()
		grown.Floor = domain.NextFloor(p, clock.Now().UnixMicro())
		if d := decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: grown.Rule(), Cost: 3}); !d.Allowed {
			t.Fatalf("%s: units that had stopped counting came back when the window grew: %+v", alg, d)
		}
		if d := decide(t, ctx, s, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: grown.Rule(), Cost: 1}); d.Allowed {
			t.Fatalf("%s: the units admitted under the grown window do not count: %+v", alg, d)
		}
	}
	for _, alg := range domain.WindowAlgorithms {
		r := rule(alg, 2, time.Hour)
		decide(t, ctx, s, domain.BucketRequest{Policy: "again", Key: string(alg), Rule: r, Cost: 2})
		r.Generation = 9
		if d := decide(t, ctx, s, domain.BucketRequest{Policy: "again", Key: string(alg), Rule: r, Cost: 2}); !d.Allowed {
			t.Fatalf("%s: a re-created policy counted the deleted one's units: %+v", alg, d)
		}
	}
}

// decideN sends n checks of cost 1 under r and returns how many were admitted.
func decideN(t *testing.T, ctx context.Context, s domain.BucketStore, policy, key string, r domain.Rule, n int) int {
	t.Helper()
	admitted := 0
	for range n {
		if decide(t, ctx, s, domain.BucketRequest{Policy: policy, Key: key, Rule: r, Cost: 1}).Allowed {
			admitted++
		}
	}
	return admitted
}

// testChangesKeepUnits: the conversions of shared/design.md ("Algorithm and limit changes") on every store. A
// token bucket's units count under the limit that wrote them, never capped by a lower limit; a denial and a peek
// convert nothing (issue 22, findings 3 and 4).
func testChangesKeepUnits(t *testing.T, newStore NewStore) {
	s, clock, ctx := setup(t, newStore)
	day := 24 * time.Hour
	if n := decideN(t, ctx, s, "tb", "k", rule(domain.TokenBucket, 100, day), 50); n != 50 {
		t.Fatalf("token_bucket 100/1d admitted %d of 50", n)
	}
	clock.Advance(time.Second)
	if n := decideN(t, ctx, s, "tb", "k", rule(domain.SlidingLog, 3, day), 5); n != 0 {
		t.Fatalf("sliding_log 3/1d admitted %d with 50 units counting", n)
	}
	clock.Advance(time.Second)
	if n := decideN(t, ctx, s, "tb", "k", rule(domain.SlidingLog, 100, day), 100); n != 50 {
		t.Fatalf("back to sliding_log 100/1d: %d more admitted, want 50 (100 in all)", n)
	}

	decideN(t, ctx, s, "seq", "k", rule(domain.SlidingLog, 8, day), 8)
	for _, r := range []domain.Rule{rule(domain.TokenBucket, 7, day), rule(domain.SlidingLog, 6, day), rule(domain.FixedWindow, 7, day), rule(domain.SlidingWindow, 8, day)} {
		clock.Advance(time.Millisecond)
		if d := decide(t, ctx, s, domain.BucketRequest{Policy: "seq", Key: "k", Rule: r}); d.Allowed {
			t.Fatalf("%s: a peek of a spent key says admitted: %+v", r.Algorithm, d)
		}
		if n := decideN(t, ctx, s, "seq", "k", r, 2); n != 0 {
			t.Fatalf("%s: a spent key was admitted %d times after changes", r.Algorithm, n)
		}
	}

	if n := decideN(t, ctx, s, "rate", "k", rule(domain.TokenBucket, 8, day), 5); n != 5 {
		t.Fatalf("token_bucket 8/1d admitted %d of 5", n)
	}
	if n := decideN(t, ctx, s, "rate", "k", rule(domain.TokenBucket, 3, day), 3); n != 0 {
		t.Fatalf("token_bucket 3/1d admitted %d with 5 units outstanding", n)
	}
	if n := decideN(t, ctx, s, "rate", "k", rule(domain.SlidingLog, 8, day), 8); n != 3 {
		t.Fatalf("sliding_log 8/1d admitted %d, want 3", n)
	}

	// Units a log counts under a fixed_window policy that never recorded (so never converted) keep counting when
	// the policy changes again after that fixed window ended: every algorithm's floor is its window's age.
	clock.Advance(day - time.Duration(clock.Now().UnixMicro()%day.Microseconds())*time.Microsecond + 20*time.Hour)
	sw := domain.Policy{Name: "via", Limit: 8, Window: day, Algorithm: domain.SlidingWindow}.WithDefaults()
	if n := decideN(t, ctx, s, "via", "k", sw.Rule(), 7); n != 7 {
		t.Fatalf("sliding_window 8/1d admitted %d of 7", n)
	}
	clock.Advance(time.Hour)
	fw := domain.Policy{Name: "via", Limit: 1, Window: day, Algorithm: domain.FixedWindow}
	fw.Floor = domain.NextFloor(sw, clock.Now().UnixMicro())
	clock.Advance(time.Hour)
	if n := decideN(t, ctx, s, "via", "k", fw.Rule(), 1); n != 0 {
		t.Fatalf("fixed_window 1/1d admitted %d with 7 units counting", n)
	}
	clock.Advance(4 * time.Hour) // the next fixed window has begun; the units are 6 hours old
	sl := domain.Policy{Name: "via", Limit: 8, Window: day, Algorithm: domain.SlidingLog}
	sl.Floor = domain.NextFloor(fw, clock.Now().UnixMicro())
	if n := decideN(t, ctx, s, "via", "k", sl.Rule(), 8); n != 1 {
		t.Fatalf("sliding_log 8/1d admitted %d with 7 units counting through a fixed_window policy, want 1", n)
	}

	// A fixed window's units stop when the window that admitted them ends, whatever window the policy grows to,
	// as the key's expiry does on every store; a check that records under the new window before then carries them.
	clock.Advance(time.Hour - time.Duration(clock.Now().UnixMicro()%time.Hour.Microseconds())*time.Microsecond)
	hourly := domain.Policy{Name: "grow", Limit: 5, Window: time.Hour, Algorithm: domain.FixedWindow}
	decideN(t, ctx, s, "grow", "lazy", hourly.Rule(), 4)
	decideN(t, ctx, s, "grow", "eager", hourly.Rule(), 4)
	clock.Advance(30 * time.Minute)
	daily := hourly
	daily.Window, daily.Floor = day, domain.NextFloor(hourly, clock.Now().UnixMicro())
	if n := decideN(t, ctx, s, "grow", "eager", daily.Rule(), 5); n != 1 {
		t.Fatalf("fixed_window grown to 1d admitted %d with 4 of 5 units counting, want 1", n)
	}
	clock.Advance(31 * time.Minute)
	if n := decideN(t, ctx, s, "grow", "lazy", daily.Rule(), 5); n != 5 {
		t.Fatalf("fixed_window grown to 1d admitted %d after the hour that admitted 4 units ended, want 5", n)
	}
	if n := decideN(t, ctx, s, "grow", "eager", daily.Rule(), 5); n != 0 {
		t.Fatalf("fixed_window grown to 1d admitted %d with the units carried into the day window, want 0", n)
	}
}

// testUnknownAlgorithm: a rule whose algorithm the store does not know is answered StatusInvalidRule and
// records nothing, never decided by a default algorithm (issue 22, finding 6).
func testUnknownAlgorithm(t *testing.T, newStore NewStore) {
	s, _, ctx := setup(t, newStore)
	bad := rule(domain.SlidingLog, 5, time.Hour)
	bad.Algorithm = "leaky_bucket"
	d, err := s.Decide(ctx, domain.BucketRequest{Policy: "u", Key: "k", Rule: bad, Cost: 1})
	if err == nil && (d.Status != domain.StatusInvalidRule || d.Allowed) {
		t.Fatalf("an unknown algorithm was decided: %+v", d)
	}
	good := domain.BucketRequest{Policy: "u", Key: "k", Rule: rule(domain.SlidingLog, 5, time.Hour)}
	if d := decide(t, ctx, s, good); d.Remaining != 4 {
		t.Fatalf("the refused check recorded units: %+v", d)
	}
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{{Policy: "u", Key: "k", Rule: bad, Cost: 1}, {Policy: "u", Key: "k2", Rule: good.Rule, Cost: 1}}, false)
	if err == nil {
		if ds[0].Status != domain.StatusInvalidRule || ds[0].Allowed || ds[1].Status != domain.StatusOK || !ds[1].Allowed {
			t.Fatalf("batch with an unknown algorithm: %+v", ds)
		}
	}
}

package redis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// twoReplicas returns the policy stores of two stores ("replicas") sharing one Redis and one prefix.
func twoReplicas(t *testing.T, addrs []string, refresh time.Duration) (*redis.Policies, *redis.Policies) {
	t.Helper()
	prefix := redistest.Prefix()
	var ps []*redis.Policies
	for range 2 {
		s, err := redis.Open(context.Background(), redis.Options{Addrs: addrs, Prefix: prefix, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		p := s.NewPolicies(redis.PolicyOptions{Refresh: refresh})
		t.Cleanup(func() { p.Close(); s.Close() })
		ps = append(ps, p)
	}
	return ps[0], ps[1]
}

// seen waits until p reports what ok accepts and returns how long that took (the bound under test).
func seen(t *testing.T, p *redis.Policies, limit time.Duration, ok func(domain.Policy, error) bool) time.Duration {
	t.Helper()
	return seenNamed(t, p, "api", limit, ok)
}

func seenNamed(t *testing.T, p *redis.Policies, name string, limit time.Duration, ok func(domain.Policy, error) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if ok(p.GetPolicy(context.Background(), name)) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("change not seen within %s", limit)
		}
		time.Sleep(time.Millisecond) // polling another replica's copy, which real time updates
	}
}

// A change made through one replica reaches another replica's copy (listings, failure_mode) within the refresh
// bound (1 s by default; 200 ms here), and in practice within about a round trip, by the invalidation message.
// Decisions do not wait for it: TestPolicyChangeBindsAtNextDecision.
func TestPolicyChangeBindsOtherReplicas(t *testing.T) {
	for name, addrs := range map[string]func(testing.TB) []string{
		"single":  func(t testing.TB) []string { return []string{redistest.SingleAddr(t)} },
		"cluster": func(t testing.TB) []string { return redistest.ClusterAddrs(t)[:1] },
	} {
		t.Run(name, func(t *testing.T) {
			const refresh = 200 * time.Millisecond
			a, b := twoReplicas(t, addrs(t), refresh)
			ctx := context.Background()
			seen(t, b, 5*time.Second, func(_ domain.Policy, err error) bool { return errors.Is(err, domain.ErrPolicyNotFound) }) // loaded
			created, err := a.PutPolicy(ctx, domain.Policy{Name: "api", Limit: 5, Window: time.Minute})
			if err != nil || !created {
				t.Fatalf("PutPolicy: %v %v", created, err)
			}
			p, err := a.GetPolicy(ctx, "api")
			if err != nil || p.Limit != 5 || p.Generation == 0 || p.Source != domain.SourceAPI {
				t.Fatalf("the writing replica's own copy: %+v %v", p, err)
			}
			d := seen(t, b, refresh+time.Second, func(p domain.Policy, err error) bool { return err == nil && p.Limit == 5 })
			t.Logf("%s: a new policy reached the other replica in %s", name, d)
			if d > refresh+100*time.Millisecond {
				t.Errorf("took %s, above the bound of %s", d, refresh)
			}
			gen := p.Generation
			// A window change keeps the generation and raises the floor to about now minus the old window.
			if _, err := a.PutPolicy(ctx, domain.Policy{Name: "api", Limit: 7, Window: time.Hour}); err != nil {
				t.Fatal(err)
			}
			d = seen(t, b, refresh+time.Second, func(p domain.Policy, err error) bool { return err == nil && p.Limit == 7 })
			p, _ = b.GetPolicy(ctx, "api")
			if p.Generation != gen || p.Floor < time.Now().Add(-time.Minute-5*time.Second).UnixMicro() || p.Floor > time.Now().Add(-time.Minute+5*time.Second).UnixMicro() {
				t.Fatalf("after a window change: generation %d (was %d), floor %s", p.Generation, gen, time.UnixMicro(p.Floor))
			}
			t.Logf("%s: a changed policy reached the other replica in %s", name, d)
			// Deleted and made again: a new generation, so its old keys never count.
			if err := b.DeletePolicy(ctx, "api"); err != nil {
				t.Fatal(err)
			}
			seen(t, a, refresh+time.Second, func(_ domain.Policy, err error) bool { return errors.Is(err, domain.ErrPolicyNotFound) })
			if _, err := b.PutPolicy(ctx, domain.Policy{Name: "api", Limit: 7, Window: time.Hour}); err != nil {
				t.Fatal(err)
			}
			seen(t, a, refresh+time.Second, func(p domain.Policy, err error) bool { return err == nil && p.Generation > gen })
			if err := a.DeletePolicy(ctx, "nope"); !errors.Is(err, domain.ErrPolicyNotFound) {
				t.Fatalf("deleting an unknown policy: %v", err)
			}
			list, err := b.ListPolicies(ctx)
			if err != nil || len(list) != 1 || list[0].Name != "api" {
				t.Fatalf("ListPolicies: %+v %v", list, err)
			}
		})
	}
}

// A config-file policy whose window grows across a redeploy (RegisterConfigPolicies again with the new file)
// never counts the units that had stopped counting under the old window.
func TestConfigPolicyFloor(t *testing.T) {
	clock := clocktest.New(epoch)
	s := open(t, []string{redistest.SingleAddr(t)}, clock, redis.Options{})
	ctx := context.Background()
	old := domain.Policy{Name: "cfg", Limit: 3, Window: time.Second, Algorithm: domain.SlidingLog}
	if ch, err := s.RegisterConfigPolicies(ctx, []domain.Policy{old}); err != nil || len(ch) != 0 {
		t.Fatalf("first registration: %v %v", ch, err)
	}
	r := domain.BucketRequest{Policy: "cfg", Key: "k", Rule: old.WithDefaults().Rule(), Cost: 3}
	do(t, s, r)
	clock.Advance(2 * time.Second) // the units stop counting under 1s
	grown := old
	grown.Window = time.Hour
	ch, err := s.RegisterConfigPolicies(ctx, []domain.Policy{grown})
	if err != nil || len(ch) != 1 {
		t.Fatalf("re-registration with a grown window: %v %v", ch, err)
	}
	// The key's expiry was extended for the grown window (a real-time TTL, set from the test clock's instants).
	if v, err := s.Client().Do(ctx, s.Client().B().Pttl().Key(s.Key("cfg", "k")).Build()).AsInt64(); err != nil || v < int64(time.Hour/time.Millisecond)-60_000 {
		t.Fatalf("PTTL after the config window grew: %d %v", v, err)
	}
	r.Rule = grown.WithDefaults().Rule() // a config policy: Floor 0 in the rule; the store holds the floor
	if d := do(t, s, r); !d.Allowed {
		t.Fatalf("units that had stopped counting came back when the config window grew: %+v", d)
	}
	r.Cost = 1
	if d := do(t, s, r); d.Allowed {
		t.Fatalf("units admitted under the grown window do not count: %+v", d)
	}
}

// Growing an API policy's window extends its keys' expiry, so an idle key keeps the units the longer window
// still counts instead of expiring at the old window's end.
func TestWindowGrowthExtendsExpiry(t *testing.T) {
	s := open(t, []string{redistest.SingleAddr(t)}, nil, redis.Options{})
	p := s.NewPolicies(redis.PolicyOptions{Refresh: 100 * time.Millisecond})
	defer p.Close()
	ctx := context.Background()
	if _, err := p.PutPolicy(ctx, domain.Policy{Name: "grow", Limit: 5, Window: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	seenNamed(t, p, "grow", 5*time.Second, func(p domain.Policy, err error) bool { return err == nil })
	pol, _ := p.GetPolicy(ctx, "grow")
	do(t, s, domain.BucketRequest{Policy: "grow", Key: "idle", Rule: pol.Rule(), Cost: 2, Stored: true})
	pttl := func() int64 {
		v, err := s.Client().Do(ctx, s.Client().B().Pttl().Key(s.Key("grow", "idle")).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := pttl(); v > 10_001 {
		t.Fatalf("PTTL %d before the change", v)
	}
	if _, err := p.PutPolicy(ctx, domain.Policy{Name: "grow", Limit: 5, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if v := pttl(); v < int64(time.Hour/time.Millisecond)-60_000 {
		t.Fatalf("PTTL %d ms after the window grew to 1h: the idle key would expire with units the 1h window counts", v)
	}
}

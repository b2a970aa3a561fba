package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// TestRLSFloorsSharedThroughTheRegistry: on a shared store, an RLS policy's floor lives in the store's config
// registry (the app registers every installed RLS config: app/rls.go), so a replica that starts after a unit
// change, with no floor of its own, decides with the floor the change raised.
func TestRLSFloorsSharedThroughTheRegistry(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	replica := func() (*postgres.Store, *domain.Service) {
		s := open(t, postgres.Options{URL: url, Clock: clock})
		svc := domain.NewServiceWith(must(domain.NewPolicyLifecycle(nil, s, clock, domain.LifecycleOptions{SharedStore: true})), s, nil, clock)
		return s, svc
	}
	hour := domain.Policy{Name: "rls.d.0123456789abcdef", Limit: 3, Window: time.Hour, Algorithm: domain.SlidingLog, Source: domain.SourceConfig}.WithDefaults()
	minute := hour
	minute.Window = time.Minute
	install := func(s *postgres.Store, svc *domain.Service, who string, p domain.Policy) domain.Policy {
		t.Helper()
		ps := svc.Policies().InstallRLS([]domain.Policy{p})
		if _, err := s.RegisterConfigPolicies(ctx, ps, who); err != nil {
			t.Fatal(err)
		}
		return ps[0]
	}
	admitted := func(svc *domain.Service, p domain.Policy, n int) int {
		t.Helper()
		k := 0
		for range n {
			rs, _, err := svc.CheckPolicies(ctx, []domain.PolicyCheck{{Policy: p, Key: "k", Cost: 1}}, true)
			if err != nil {
				t.Fatal(err)
			}
			if rs[0].Allowed {
				k++
			}
		}
		return k
	}

	sa, a := replica()
	p := install(sa, a, "a", hour)
	if n := admitted(a, p, 5); n != 3 {
		t.Fatalf("3 per hour: %d admitted", n)
	}
	clock.Advance(2 * time.Minute)
	p = install(sa, a, "a", minute)
	if n := admitted(a, p, 1); n != 1 {
		t.Fatalf("3 per minute: %d admitted", n)
	}
	clock.Advance(time.Second)
	p = install(sa, a, "a", hour)
	if n := admitted(a, p, 1); n != 1 {
		t.Fatalf("back to an hour on A: %d admitted, want 1 (2 units count)", n)
	}
	// B starts now, with the hour config from the start: no floor of its own, the registry's.
	sb, b := replica()
	pb := install(sb, b, "b", hour)
	if pb.Floor != 0 {
		t.Fatalf("a first install on B has floor %d, want 0 (the store keeps the shared one)", pb.Floor)
	}
	if n := admitted(b, pb, 5); n != 1 {
		t.Fatalf("B: %d admitted, want 1 (the 2 units of the last minutes count, the first 3 never again)", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

package domain_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// TestHierarchicalBudgets is docs/recipes.md's "Hierarchical budgets": a request spends on its user, its team and
// its organisation in one atomic multi-check. Users race with random costs; at the end every level admitted at
// most its limit, and what each key holds is exactly the sum of the requests admitted on it: a request denied at
// any level recorded nothing at the others.
func TestHierarchicalBudgets(t *testing.T) {
	clock := clocktest.New(time.Unix(1_800_000_000, 0))
	limits := map[string]int64{"user": 9, "team": 25, "org": 40}
	var ps []domain.Policy
	for name, limit := range limits {
		ps = append(ps, domain.Policy{Name: "budget-" + name, Limit: limit, Window: time.Hour, Algorithm: domain.SlidingWindow})
	}
	// Overrides at every level: a user, a team (by prefix) and the organisation with budgets of their own.
	overrides := map[string][]domain.Override{
		"budget-user": {{Match: "user-0", Limit: 20}},
		"budget-team": {{Match: "team-0*", Limit: 60}},
		"budget-org":  {{Match: "acme", Limit: 120}},
	}
	lc, err := domain.NewPolicyLifecycle(ps, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.InstallConfigWith(ps, overrides); err != nil {
		t.Fatal(err)
	}
	svc := domain.NewServiceWith(lc, memory.New(clock, memory.Options{}), domain.NopObserver{}, clock)
	limitOf := func(policy, key string) int64 {
		for _, o := range overrides[policy] {
			if o.Match == key || o.Match == key+"*" {
				return o.Limit
			}
		}
		return limits[policy[len("budget-"):]]
	}
	type level struct{ policy, key string }
	var mu sync.Mutex
	admitted := map[level]int64{}
	denied := 0
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 24))
			for range 40 {
				u := rng.IntN(8) // users 0-7, teams of two users, one organisation
				cost := int64(1 + rng.IntN(3))
				path := []level{{"budget-user", fmt.Sprint("user-", u)}, {"budget-team", fmt.Sprint("team-", u/2)}, {"budget-org", "acme"}}
				var cs []domain.CheckRequest
				for _, l := range path {
					cs = append(cs, domain.CheckRequest{Policy: l.policy, Key: l.key, Cost: cost})
				}
				_, ok, err := svc.CheckMany(context.Background(), cs, true)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if ok {
					for _, l := range path {
						admitted[l] += cost
					}
				} else {
					denied++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if denied == 0 || admitted[level{"budget-org", "acme"}] < limitOf("budget-org", "acme")/2 || admitted[level{"budget-user", "user-0"}] <= limits["user"] {
		t.Fatalf("the budgets or the overrides never bound (denied %d, org admitted %d, user-0 admitted %d): the test proves little",
			denied, admitted[level{"budget-org", "acme"}], admitted[level{"budget-user", "user-0"}])
	}
	for l, n := range admitted {
		limit := limitOf(l.policy, l.key)
		if n > limit {
			t.Errorf("%s %s admitted %d, limit %d", l.policy, l.key, n, limit)
		}
		res, err := svc.Check(context.Background(), domain.CheckRequest{Policy: l.policy, Key: l.key})
		if err != nil {
			t.Fatal(err)
		}
		if left := max(limit-n-1, 0); res.Remaining != left {
			t.Errorf("%s %s holds %d units, want exactly the %d admitted (a peek's remaining %d, want %d)", l.policy, l.key, limit-res.Remaining-1, n, res.Remaining, left)
		}
	}
}

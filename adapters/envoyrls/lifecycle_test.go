package envoyrls_test

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// rlsConfig is a config with one limit on generic_key=api, or none when unit is "".
func rlsConfig(t *testing.T, unit string) *envoyrls.Rules {
	t.Helper()
	y := "domain: d\ndescriptors:\n  - key: generic_key\n    value: other\n"
	if unit != "" {
		y += "  - key: generic_key\n    value: api\n    rate_limit:\n      unit: " + unit + "\n      requests_per_unit: 3\n"
	}
	rules, err := envoyrls.Load([]string{"config.yaml"}, map[string][]byte{"config.yaml": []byte(y)}, envoyrls.LoadOptions{Algorithm: domain.SlidingLog})
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// TestReloadFloorsAndGenerations: RLS policies get floors and generations from the domain's PolicyLifecycle at
// every reload. A unit shrunk and grown back never brings back units that had stopped counting; a limit removed
// and re-added starts a new count; an unchanged reload keeps the counts.
func TestReloadFloorsAndGenerations(t *testing.T) {
	clock := clocktest.New(start)
	lim, err := domain.NewService(nil, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 100}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	svc := envoyrls.NewService(lim, rlsConfig(t, "hour"), envoyrls.ServiceOptions{Policies: lim.Policies()})
	h := &harness{t: t, clock: clock, svc: svc}
	api := desc("generic_key=api")
	admitted := func(n int) int {
		k := 0
		for range n {
			if h.ask("d", api).OverallCode == ok {
				k++
			}
		}
		return k
	}
	if n := admitted(5); n != 3 {
		t.Fatalf("3 per hour: %d admitted", n)
	}
	clock.Advance(2 * time.Minute)
	svc.SetRules(rlsConfig(t, "minute")) // the 3 units are 2 minutes old: they stop counting
	if n := admitted(1); n != 1 {
		t.Fatalf("3 per minute: %d admitted", n)
	}
	clock.Advance(time.Second)
	svc.SetRules(rlsConfig(t, "hour")) // without a floor the first 3 would count again and deny everything
	if n := admitted(5); n != 2 {
		t.Fatalf("back to 3 per hour: %d admitted, want 2 (the unit of the last minute counts, the first 3 never again)", n)
	}
	clock.Advance(30 * time.Minute)
	svc.SetRules(rlsConfig(t, "hour")) // unchanged: keeps its floor and generation
	if n := admitted(5); n != 0 {
		t.Fatalf("after an unchanged reload: %d admitted, want 0", n)
	}
	svc.SetRules(rlsConfig(t, ""))
	svc.SetRules(rlsConfig(t, "hour")) // removed and re-added: a new generation, the old counts are not its own
	if n := admitted(5); n != 3 {
		t.Fatalf("re-added: %d admitted, want 3", n)
	}
}

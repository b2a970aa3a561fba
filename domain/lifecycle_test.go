package domain_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

func rlsPolicy(name string, limit int64, window time.Duration, alg domain.Algorithm) domain.Policy {
	return domain.Policy{Name: name, Limit: limit, Window: window, Algorithm: alg, FailureMode: domain.FailDeny, Source: domain.SourceConfig}.WithDefaults()
}

func byName(ps []domain.Policy) map[string]domain.Policy {
	m := map[string]domain.Policy{}
	for _, p := range ps {
		m[p.Name] = p
	}
	return m
}

// TestInstallRLS: RLS policies get floors and generations from the lifecycle, reload after reload.
func TestInstallRLS(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	l, err := domain.NewPolicyLifecycle(nil, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.InstallRLS(nil); len(got) != 0 {
		t.Fatalf("empty install: %v", got)
	}
	a := rlsPolicy("rls.a", 3, time.Hour, domain.SlidingLog)
	b := rlsPolicy("rls.b", 5, time.Minute, domain.FixedWindow)
	first := byName(l.InstallRLS([]domain.Policy{a, b}))
	if first["rls.a"].Generation != 0 || first["rls.a"].Floor != 0 || first["rls.b"].Generation != 0 {
		t.Fatalf("first install (after an empty one): %+v", first)
	}

	// A changed limit keeps floor and generation; a changed unit (window) gets NextFloor at the reload instant.
	clock.Advance(10 * time.Minute)
	a2 := a
	a2.Limit = 7
	b2 := b
	b2.Window = time.Hour
	got := byName(l.InstallRLS([]domain.Policy{a2, b2}))
	if got["rls.a"].Floor != 0 || got["rls.a"].Generation != 0 || got["rls.a"].Limit != 7 {
		t.Fatalf("limit change: %+v", got["rls.a"])
	}
	wantFloor := domain.NextFloor(first["rls.b"], clock.Now().UnixMicro())
	if got["rls.b"].Floor != wantFloor || wantFloor == 0 || got["rls.b"].Generation != 0 {
		t.Fatalf("unit change: floor %d, want %d (gen %d)", got["rls.b"].Floor, wantFloor, got["rls.b"].Generation)
	}

	// Unchanged across a reload: both kept.
	clock.Advance(time.Hour)
	again := byName(l.InstallRLS([]domain.Policy{a2, b2}))
	if again["rls.b"] != got["rls.b"] || again["rls.a"] != got["rls.a"] {
		t.Fatalf("unchanged reload changed a policy: %+v, was %+v", again, got)
	}

	// An algorithm change raises the floor too.
	a3 := a2
	a3.Algorithm = domain.TokenBucket
	changed := byName(l.InstallRLS([]domain.Policy{a3, b2}))
	if changed["rls.a"].Floor != domain.NextFloor(got["rls.a"], clock.Now().UnixMicro()) {
		t.Fatalf("algorithm change: floor %d", changed["rls.a"].Floor)
	}

	// Removed, then back: a new generation (and a fresh floor); the rest keep theirs.
	l.InstallRLS([]domain.Policy{a3})
	back := byName(l.InstallRLS([]domain.Policy{a3, b2}))
	if back["rls.b"].Generation == 0 || back["rls.b"].Floor != 0 || back["rls.a"] != changed["rls.a"] {
		t.Fatalf("re-added: %+v", back)
	}
	l.InstallRLS([]domain.Policy{a3})
	if back2 := byName(l.InstallRLS([]domain.Policy{a3, b2})); back2["rls.b"].Generation == back["rls.b"].Generation {
		t.Fatalf("re-added twice: generation %d both times", back2["rls.b"].Generation)
	}
}

// TestInstallRLSShared: on a shared store every RLS generation stays 0 (replicas must agree), floors are kept.
func TestInstallRLSShared(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	l, err := domain.NewPolicyLifecycle(nil, memory.NewPolicies(clock), clock, domain.LifecycleOptions{SharedStore: true})
	if err != nil {
		t.Fatal(err)
	}
	b := rlsPolicy("rls.b", 5, time.Minute, domain.FixedWindow)
	l.InstallRLS([]domain.Policy{b})
	clock.Advance(time.Hour)
	l.InstallRLS(nil)
	if got := l.InstallRLS([]domain.Policy{b}); got[0].Generation != 0 {
		t.Fatalf("re-added on a shared store: generation %d, want 0", got[0].Generation)
	}
	b2 := b
	b2.Window = time.Hour
	if got := l.InstallRLS([]domain.Policy{b2}); got[0].Floor == 0 {
		t.Fatal("a unit change on a shared store got no floor")
	}
}

// TestRLSLifecycleDecides: the floors and generations InstallRLS gives bind the decisions (memory store).
func TestRLSLifecycleDecides(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	svc, err := domain.NewService(nil, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	admitted := func(p domain.Policy, n int) int {
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
	l := svc.Policies()
	hour := rlsPolicy("rls.a", 3, time.Hour, domain.SlidingLog)
	p := l.InstallRLS([]domain.Policy{hour})[0]
	if n := admitted(p, 5); n != 3 {
		t.Fatalf("3 per hour: %d admitted", n)
	}
	// The unit shrinks to a minute two minutes later: the 3 units have stopped counting, 3 more fit.
	clock.Advance(2 * time.Minute)
	minute := hour
	minute.Window = time.Minute
	p = l.InstallRLS([]domain.Policy{minute})[0]
	if n := admitted(p, 1); n != 1 {
		t.Fatalf("3 per minute: %d admitted", n)
	}
	// Back to an hour: the first 3 stopped counting and never count again (the floor); the last one counts.
	clock.Advance(time.Second)
	p = l.InstallRLS([]domain.Policy{hour})[0]
	if n := admitted(p, 5); n != 2 {
		t.Fatalf("back to 3 per hour: %d admitted, want 2 (1 unit still counts)", n)
	}
	clock.Advance(2 * time.Minute)
	if n := admitted(p, 5); n != 0 {
		t.Fatalf("3 per hour, 2 minutes on: %d admitted, want 0", n)
	}
	// Removed and re-added: a new generation; the removed policy's keys never count against it.
	l.InstallRLS(nil)
	p = l.InstallRLS([]domain.Policy{hour})[0]
	if n := admitted(p, 5); n != 3 {
		t.Fatalf("re-added: %d admitted, want 3 (a new generation)", n)
	}
}

// TestRolledBack: a denied atomic batch recorded nothing, and its admitted checks say so.
func TestRolledBack(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	cfg := []domain.Policy{{Name: "five", Limit: 5, Window: time.Minute}, {Name: "one", Limit: 1, Window: time.Minute}, {Name: "shadow", Limit: 2, Window: time.Minute, Shadow: true}}
	svc, err := domain.NewService(cfg, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(reqs []domain.CheckRequest, atomic bool) ([]domain.Result, bool) {
		t.Helper()
		rs, ok, err := svc.CheckMany(ctx, reqs, atomic)
		if err != nil {
			t.Fatal(err)
		}
		return rs, ok
	}
	check([]domain.CheckRequest{{Policy: "one", Key: "k", Cost: 1}, {Policy: "five", Key: "k", Cost: 1}}, false) // five: 4 left
	rs, ok := check([]domain.CheckRequest{
		{Policy: "five", Key: "k", Cost: 2}, {Policy: "five", Key: "k", Cost: 1}, {Policy: "five", Key: "k", Cost: 0},
		{Policy: "shadow", Key: "k", Cost: 1}, {Policy: "one", Key: "k", Cost: 1},
	}, true)
	if ok || !rs[0].Allowed || !rs[1].Allowed || rs[4].Allowed {
		t.Fatalf("batch: ok %v, %+v", ok, rs)
	}
	if rs[0].Remaining != 4 || rs[1].Remaining != 4 || rs[3].Remaining != 2 {
		t.Fatalf("rolled back: remaining %d, %d (five), %d (shadow); want 4, 4, 2: nothing was consumed", rs[0].Remaining, rs[1].Remaining, rs[3].Remaining)
	}
	if rs[2].Remaining != 0 { // the peek, as evaluated after the 3 units before it: 4 - 3 - 1
		t.Fatalf("peek in the batch: remaining %d, want 0 as evaluated", rs[2].Remaining)
	}
	if rs[4].Remaining != 0 || rs[4].RetryAfter <= 0 {
		t.Fatalf("the denial: %+v", rs[4])
	}
	// The truth: five still has 4.
	if r, err := svc.Check(ctx, domain.CheckRequest{Policy: "five", Key: "k", Cost: 0}); err != nil || r.Remaining != 3 {
		t.Fatalf("peek after: %+v %v, want remaining 3 (a cost-1 check of 4 left)", r, err)
	}
	// Not atomic: each admitted check was recorded and says so.
	rs, _ = check([]domain.CheckRequest{{Policy: "five", Key: "k", Cost: 2}, {Policy: "one", Key: "k", Cost: 1}}, false)
	if rs[0].Remaining != 2 {
		t.Fatalf("non-atomic: remaining %d, want 2", rs[0].Remaining)
	}
}

// TestPolicyCache: installs never undo a newer local write; unloaded until the first install; provisional
// lookups for names it does not hold.
func TestPolicyCache(t *testing.T) {
	notLoaded := errors.New("not loaded")
	c := domain.NewPolicyCache(notLoaded)
	ctx := context.Background()
	if _, err := c.Get("a"); !errors.Is(err, notLoaded) {
		t.Fatalf("Get before a load: %v", err)
	}
	if err := c.Loaded(ctx); !errors.Is(err, notLoaded) {
		t.Fatalf("Loaded before a load: %v", err)
	}
	if p := c.CheckPolicy("a"); p.Name != "a" || p.Limit != domain.MaxLimit || p.FailureMode != domain.FailDeny || p.Source != domain.SourceAPI {
		t.Fatalf("provisional: %+v", p)
	}
	a := domain.Policy{Name: "a", Limit: 3, Window: time.Minute, Generation: 1}
	tok := c.BeginReload()
	c.Put(a) // a local write while the reload reads the store
	if c.Install(nil, tok) {
		t.Fatal("a reload that raced a local write was installed")
	}
	if p, err := c.Get("a"); err != nil || p != a {
		t.Fatalf("after the raced reload: %+v %v", p, err)
	}
	if c.Loaded(ctx) == nil {
		t.Fatal("loaded by a reload that was not installed")
	}
	tok = c.BeginReload()
	b := domain.Policy{Name: "b", Limit: 1, Window: time.Second, Generation: 2}
	if !c.Install([]domain.Policy{b, a}, tok) {
		t.Fatal("a clean reload was not installed")
	}
	if err := c.Loaded(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("zzz"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("unknown name once loaded: %v", err)
	}
	if ps, err := c.List(); err != nil || len(ps) != 2 || ps[0].Name != "a" || ps[1].Name != "b" {
		t.Fatalf("List: %+v %v", ps, err)
	}
	if p := c.CheckPolicy("b"); p != b {
		t.Fatalf("CheckPolicy of a cached name: %+v", p)
	}
	tok = c.BeginReload()
	c.Remove("b")
	if c.Install([]domain.Policy{a, b}, tok) {
		t.Fatal("a reload that raced a delete was installed")
	}
	if _, err := c.Get("b"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("deleted b came back: %v", err)
	}
}

// TestRolledBackModel: for random atomic batches over every algorithm, a check admitted as evaluated in a batch
// that was denied reports exactly the units its key had before the batch (a peek taken just before, which answers
// for a cost-1 check, plus 1), and the batch changed nothing (the same peek after).
func TestRolledBackModel(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	var cfg []domain.Policy
	for _, alg := range domain.WindowAlgorithms {
		for _, limit := range []int64{1, 3, 7} {
			cfg = append(cfg, domain.Policy{Name: fmt.Sprintf("%s-%d", alg, limit), Limit: limit, Window: 10 * time.Second, Algorithm: alg})
		}
	}
	svc, err := domain.NewService(cfg, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	peek := func(policy, key string) domain.Result {
		r, err := svc.Check(ctx, domain.CheckRequest{Policy: policy, Key: key, Cost: 0})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	rolledBack := 0
	for step := range 3000 {
		clock.Advance(time.Duration(rng.IntN(1500)) * time.Millisecond)
		n := 1 + rng.IntN(4)
		reqs := make([]domain.CheckRequest, n)
		for i := range reqs {
			p := cfg[rng.IntN(len(cfg))]
			reqs[i] = domain.CheckRequest{Policy: p.Name, Key: fmt.Sprint("k", rng.IntN(2)), Cost: rng.Int64N(p.Limit + 1)}
		}
		before := map[string]domain.Result{}
		for _, r := range reqs {
			before[r.Policy+"/"+r.Key] = peek(r.Policy, r.Key)
		}
		rs, ok, err := svc.CheckMany(ctx, reqs, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			continue
		}
		rolledBack++
		for i, r := range rs {
			k := reqs[i].Policy + "/" + reqs[i].Key
			if after := peek(reqs[i].Policy, reqs[i].Key); after.Remaining != before[k].Remaining || after.Allowed != before[k].Allowed {
				t.Fatalf("seed %d step %d: a denied atomic batch changed %s: peek %+v, was %+v", seed, step, k, after.Decision, before[k].Decision)
			}
			if r.Allowed && reqs[i].Cost > 0 && r.Remaining != before[k].Remaining+1 {
				t.Fatalf("seed %d step %d: check %d (%s cost %d) admitted as evaluated in a denied batch reports remaining %d, want %d (its key's units before the batch)\nbatch %+v",
					seed, step, i, k, reqs[i].Cost, r.Remaining, before[k].Remaining+1, reqs)
			}
		}
	}
	if rolledBack < 100 {
		t.Fatalf("only %d denied batches: the generator does not exercise RolledBack", rolledBack)
	}
}

// TestInstallConfig: a reloaded config file's policies replace those in force at once; a changed window or
// algorithm gets NextFloor at the reload instant, a changed limit keeps the floor, a policy removed and back is
// compared with what it was; a bad set changes nothing; the keys' counts survive (memory store).
func TestInstallConfig(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	a := domain.Policy{Name: "a", Limit: 2, Window: time.Hour}
	b := domain.Policy{Name: "b", Limit: 5, Window: time.Minute, Algorithm: domain.FixedWindow}
	l, err := domain.NewPolicyLifecycle([]domain.Policy{a, b}, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New(clock, memory.Options{})
	svc := domain.NewServiceWith(l, store, nil, clock)
	for range 2 {
		if d, err := svc.Check(ctx, domain.CheckRequest{Policy: "a", Key: "k", Cost: 1}); err != nil || !d.Allowed {
			t.Fatalf("a: %+v %v", d, err)
		}
	}

	clock.Advance(10 * time.Minute)
	a2, b2 := a, b
	a2.Limit = 3
	b2.Algorithm = domain.SlidingLog
	c := domain.Policy{Name: "c", Limit: 1, Window: time.Second}
	got, err := l.InstallConfig([]domain.Policy{c, b2, a2})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(got)
	if len(got) != 3 || got[0].Name != "a" || m["a"].Limit != 3 || m["a"].Floor != 0 || !l.IsConfig("c") {
		t.Fatalf("installed: %+v", got)
	}
	if want := domain.NextFloor(b.WithDefaults(), clock.Now().UnixMicro()); m["b"].Floor != want || want == 0 {
		t.Fatalf("b's algorithm changed: floor %d, want %d", m["b"].Floor, want)
	}
	// The key's two units still count under the raised limit: one more, then denied.
	for i, want := range []bool{true, false} {
		if d, err := svc.Check(ctx, domain.CheckRequest{Policy: "a", Key: "k", Cost: 1}); err != nil || d.Allowed != want {
			t.Fatalf("a after the reload, check %d: %+v %v, want allowed %v", i, d, err, want)
		}
	}

	// A bad set (a duplicate name) changes nothing.
	if _, err := l.InstallConfig([]domain.Policy{a, a}); !errors.As(err, new(*domain.ValidationError)) {
		t.Fatalf("duplicate names: %v", err)
	}
	if !l.IsConfig("c") || len(l.Config()) != 3 {
		t.Fatalf("a refused install changed the policies: %+v", l.Config())
	}

	// Removed, then back with another window: compared with what it was when removed.
	if _, err := l.InstallConfig([]domain.Policy{a2}); err != nil || l.IsConfig("b") {
		t.Fatalf("removing b: %v", err)
	}
	if _, err := l.Get(ctx, "b"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("removed config policy still resolves: %v", err)
	}
	clock.Advance(time.Hour)
	b3 := b2
	b3.Window = time.Hour
	got, err = l.InstallConfig([]domain.Policy{a2, b3})
	if err != nil {
		t.Fatal(err)
	}
	if want := domain.NextFloor(m["b"], clock.Now().UnixMicro()); byName(got)["b"].Floor != want {
		t.Fatalf("b back with a grown window: floor %d, want %d", byName(got)["b"].Floor, want)
	}
}

// An API policy may not take a name of the RLS front end's policies: it would share their keys' state.
func TestAPIPoliciesCannotTakeRLSNames(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	l, err := domain.NewPolicyLifecycle(nil, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"rls.istio.0123456789abcdef", "rls-override.istio.0123456789abcdef"} {
		_, err := l.Put(context.Background(), domain.Policy{Name: name, Limit: 1, Window: time.Minute}.WithDefaults())
		var v *domain.ValidationError
		if !errors.As(err, &v) || v.Fields[0].Field != "name" {
			t.Fatalf("%s: %v, want a validation error on name", name, err)
		}
	}
	if _, err := l.Put(context.Background(), domain.Policy{Name: "rlsx", Limit: 1, Window: time.Minute}.WithDefaults()); err != nil {
		t.Fatalf("rlsx: %v", err)
	}
}

// A config reload compares calendar periods by value: the same period, zone and anchor read again keep the floor
// (0), another anchor (or zone, or unit) is a change of counting and gets a floor; an API policy alike.
func TestCalendarChangesRaiseTheFloor(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	monthly := func(day int) domain.Policy {
		return domain.Policy{Name: "billing", Limit: 100, Period: &domain.Calendar{Unit: domain.CalendarMonth, Location: ny,
			Anchor: time.Date(2026, 1, day, 0, 0, 0, 0, ny)}}
	}
	l, err := domain.NewPolicyLifecycle([]domain.Policy{monthly(31)}, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	got, err := l.InstallConfig([]domain.Policy{monthly(31)})
	if err != nil || got[0].Floor != 0 {
		t.Fatalf("the same period read again: floor %d, %v", got[0].Floor, err)
	}
	got, err = l.InstallConfig([]domain.Policy{monthly(15)})
	if err != nil || got[0].Floor != domain.NextFloor(got[0], clock.Now().UnixMicro()) || got[0].Floor == 0 {
		t.Fatalf("another anchor: floor %d, %v", got[0].Floor, err)
	}
	api := memory.NewPolicies(clock)
	a := monthly(31)
	a.Name = "api-billing"
	if _, err := api.PutPolicy(context.Background(), a.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	a.Period = &domain.Calendar{Unit: domain.CalendarWeek, Location: ny}
	if _, err := api.PutPolicy(context.Background(), a.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	if p, _ := api.GetPolicy(context.Background(), "api-billing"); p.Floor == 0 {
		t.Fatal("an API policy changed from month to week got no floor")
	}
}

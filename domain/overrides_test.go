package domain_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// keyRule is a key's limit and window worked out from scratch from the overrides in force: the exact override,
// else the longest prefix; a window not set is the one the key would have without that override.
func keyRule(p domain.Policy, ovs map[string]domain.Override, key string) (int64, time.Duration, string) {
	var ms []domain.Override
	if o, ok := ovs[key]; ok && !strings.HasSuffix(key, "*") {
		ms = append(ms, o)
	}
	for n := len(key); n >= 1; n-- {
		if o, ok := ovs[key[:n]+"*"]; ok {
			ms = append(ms, o)
		}
	}
	if len(ms) == 0 {
		return p.Limit, p.Window, ""
	}
	w := p.Window
	for _, o := range ms {
		if o.Window != 0 {
			w = o.Window
			break
		}
	}
	return ms[0].Limit, w, ms[0].Match
}

// TestOverridesThroughTheLimiter drives the Limiter on the memory store with random checks, override puts and
// deletes and policy changes (limit, window, algorithm) over keys of the letters a and b, against a reference:
// one domain.Bucket per key deciding with the rule worked out from scratch (keyRule) and a floor from the key's own
// history (each change of its window or algorithm at t raises it to t minus the window it had). Every decision, and
// the override each names, must be the same.
func TestOverridesThroughTheLimiter(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 2424))
		clock := clocktest.New(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
		svc, err := domain.NewService(nil, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		windows := []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second}
		p := domain.Policy{Name: "tiers", Limit: 4, Window: 4 * time.Second, Algorithm: domain.WindowAlgorithms[rng.IntN(4)]}
		if _, _, err := svc.PutPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
		keys := []string{"a", "b", "aa", "ab", "ba", "bb", "aab", "abb", "bba"}
		ovs := map[string]domain.Override{}
		type keyState struct {
			b      domain.Bucket
			floor  int64
			window time.Duration
			alg    domain.Algorithm
		}
		ref := map[string]*keyState{}
		for _, k := range keys {
			_, w, _ := keyRule(p, ovs, k)
			ref[k] = &keyState{window: w, alg: p.Algorithm}
		}
		settle := func(now int64) {
			for _, k := range keys {
				st := ref[k]
				_, w, _ := keyRule(p, ovs, k)
				if w != st.window || p.Algorithm != st.alg {
					st.floor = max(st.floor, now-int64(st.window/time.Microsecond))
				}
				st.window, st.alg = w, p.Algorithm
			}
		}
		for step := 0; step < 400; step++ {
			clock.Advance(time.Duration(rng.IntN(600)) * time.Millisecond)
			now := clock.Now().UnixMicro()
			switch op := rng.IntN(20); {
			case op < 2:
				k := keys[rng.IntN(len(keys))]
				o := domain.Override{Match: k, Limit: int64(1 + rng.IntN(8))}
				if len(k) < 3 && rng.IntN(2) == 0 {
					o.Match = k + "*"
				}
				if w := rng.IntN(4); w > 0 {
					o.Window = windows[w-1]
				}
				if _, err := svc.PutOverride(ctx, p.Name, o); err != nil {
					t.Fatalf("seed %d step %d: PutOverride(%+v): %v", seed, step, o, err)
				}
				ovs[o.Match] = o
				settle(now)
				continue
			case op < 3:
				for m := range ovs {
					if err := svc.DeleteOverride(ctx, p.Name, m); err != nil {
						t.Fatalf("seed %d step %d: DeleteOverride(%q): %v", seed, step, m, err)
					}
					delete(ovs, m)
					break
				}
				settle(now)
				continue
			case op < 4:
				switch rng.IntN(3) {
				case 0:
					p.Limit = int64(1 + rng.IntN(8))
				case 1:
					p.Window = windows[rng.IntN(3)]
				default:
					p.Algorithm = domain.WindowAlgorithms[rng.IntN(4)]
				}
				if _, _, err := svc.PutPolicy(ctx, p); err != nil {
					t.Fatal(err)
				}
				settle(now)
				continue
			}
			k := keys[rng.IntN(len(keys))]
			limit, window, match := keyRule(p, ovs, k)
			cost := int64(rng.IntN(int(min(limit, 3)) + 1))
			st := ref[k]
			r := domain.Policy{Name: p.Name, Limit: limit, Window: window, Algorithm: p.Algorithm}.WithDefaults().Rule()
			r.Floor = st.floor
			want := st.b.Decide(now, r, cost)
			got, err := svc.Check(ctx, domain.CheckRequest{Policy: p.Name, Key: k, Cost: cost})
			if err != nil {
				t.Fatalf("seed %d step %d: check %s: %v", seed, step, k, err)
			}
			if got.Decision != want || got.Policy.Override != match || got.Policy.Limit != limit || got.Policy.Window != window {
				t.Fatalf("seed %d step %d key %s cost %d (overrides %v, policy %+v):\n got %+v override %q limit %d window %s\nwant %+v override %q limit %d window %s",
					seed, step, k, cost, ovs, p, got.Decision, got.Policy.Override, got.Policy.Limit, got.Policy.Window, want, match, limit, window)
			}
		}
	}
}

// TestOverrideRules: what an operator meets first. Precedence, a deleted override's key keeping its history, a
// read-only config policy's overrides, a deleted policy dropping its overrides, API policies' overrides refused on
// a shared store, and the errors.
func TestOverrideRules(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
	l, err := domain.NewPolicyLifecycle([]domain.Policy{{Name: "cfg", Limit: 5, Window: time.Hour}}, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc := domain.NewServiceWith(l, memory.New(clock, memory.Options{}), nil, clock)
	ctx := context.Background()
	if _, _, err := svc.PutPolicy(ctx, domain.Policy{Name: "api", Limit: 3, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	put := func(o domain.Override) {
		t.Helper()
		if _, err := svc.PutOverride(ctx, "api", o); err != nil {
			t.Fatalf("PutOverride(%+v): %v", o, err)
		}
	}
	admitted := func(key string, n int) (int, string) {
		t.Helper()
		got, match := 0, ""
		for range n {
			res, err := svc.Check(ctx, domain.CheckRequest{Policy: "api", Key: key, Cost: 1})
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed {
				got++
			}
			match = res.Policy.Override
		}
		return got, match
	}
	put(domain.Override{Match: "tenant:*", Limit: 10})
	put(domain.Override{Match: "tenant:42:*", Limit: 20})
	put(domain.Override{Match: "tenant:42:admin", Limit: 1})
	for _, c := range []struct {
		key   string
		want  int
		match string
	}{
		{"tenant:42:admin", 1, "tenant:42:admin"},
		{"tenant:42:bob", 20, "tenant:42:*"},
		{"tenant:7", 10, "tenant:*"},
		{"guest", 3, ""},
	} {
		if n, m := admitted(c.key, 30); n != c.want || m != c.match {
			t.Errorf("%s: %d admitted under %q, want %d under %q", c.key, n, m, c.want, c.match)
		}
	}
	// Deleted: the key falls back to tenant:42:* and keeps the unit it spent.
	if err := svc.DeleteOverride(ctx, "api", "tenant:42:admin"); err != nil {
		t.Fatal(err)
	}
	if n, m := admitted("tenant:42:admin", 30); n != 19 || m != "tenant:42:*" {
		t.Errorf("after the delete: %d admitted under %q, want 19 under tenant:42:*", n, m)
	}
	if err := svc.DeleteOverride(ctx, "api", "tenant:42:admin"); !errors.Is(err, domain.ErrOverrideNotFound) {
		t.Errorf("deleting twice: %v, want ErrOverrideNotFound", err)
	}
	if _, err := svc.GetOverride(ctx, "api", "nobody"); !errors.Is(err, domain.ErrOverrideNotFound) {
		t.Errorf("get of none: %v, want ErrOverrideNotFound", err)
	}
	for _, bad := range []domain.Override{{Match: "*", Limit: 1}, {Match: "x", Limit: 0}, {Match: "x", Limit: 1, Window: 500 * time.Millisecond}, {Match: "", Limit: 1}} {
		if _, err := svc.PutOverride(ctx, "api", bad); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("PutOverride(%+v): %v, want ErrInvalid", bad, err)
		}
	}
	// At most MaxPrefixLengths distinct prefix lengths: a lookup probes each.
	for n := 1; n <= domain.MaxPrefixLengths+1; n++ {
		_, err := svc.PutOverride(ctx, "api", domain.Override{Match: "z" + strings.Repeat("y", n) + "*", Limit: 1})
		if n < domain.MaxPrefixLengths-1 && err != nil { // tenant:* and tenant:42:* hold two lengths already
			t.Fatalf("prefix of length %d: %v", n+1, err)
		}
		if n == domain.MaxPrefixLengths+1 && !errors.Is(err, domain.ErrInvalid) {
			t.Fatalf("a %dth distinct prefix length: %v, want ErrInvalid", n+2, err)
		}
	}
	for n := 1; n <= domain.MaxPrefixLengths+1; n++ {
		_ = svc.DeleteOverride(ctx, "api", "z"+strings.Repeat("y", n)+"*")
	}
	if _, err := svc.PutOverride(ctx, "cfg", domain.Override{Match: "x", Limit: 1}); !errors.Is(err, domain.ErrReadOnlyPolicy) {
		t.Errorf("override of a config policy over the API: %v, want ErrReadOnlyPolicy", err)
	}
	if _, err := svc.PutOverride(ctx, "nope", domain.Override{Match: "x", Limit: 1}); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Errorf("override of no policy: %v, want ErrPolicyNotFound", err)
	}
	// Paging.
	var all []string
	after := ""
	for {
		page, more, err := svc.ListOverrides(ctx, "api", after, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page {
			all = append(all, o.Match)
		}
		if !more {
			break
		}
		after = page[len(page)-1].Match
	}
	if fmt.Sprint(all) != "[tenant:* tenant:42:*]" {
		t.Errorf("listed %v", all)
	}
	// A deleted policy drops its overrides: re-created, it has none.
	if err := svc.DeletePolicy(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.PutPolicy(ctx, domain.Policy{Name: "api", Limit: 3, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if page, _, err := svc.ListOverrides(ctx, "api", "", 0); err != nil || len(page) != 0 {
		t.Errorf("re-created policy's overrides: %v %v", page, err)
	}
	if n, m := admitted("tenant:7", 30); n != 3 || m != "" {
		t.Errorf("re-created policy: %d admitted under %q, want 3 under none", n, m)
	}
	// Config overrides: installed with the config, read over the API, applied to checks.
	if _, err := l.InstallConfigWith([]domain.Policy{{Name: "cfg", Limit: 5, Window: time.Hour}},
		map[string][]domain.Override{"cfg": {{Match: "vip:*", Limit: 50}}}); err != nil {
		t.Fatal(err)
	}
	if o, err := svc.GetOverride(ctx, "cfg", "vip:*"); err != nil || o.Limit != 50 {
		t.Errorf("config override: %+v %v", o, err)
	}
	res, err := svc.Check(ctx, domain.CheckRequest{Policy: "cfg", Key: "vip:1", Cost: 1})
	if err != nil || res.Policy.Override != "vip:*" || res.Limit != 50 {
		t.Errorf("check under a config override: %+v %v", res, err)
	}
	_, err = l.InstallConfigWith([]domain.Policy{{Name: "cfg", Limit: 5, Window: time.Hour}},
		map[string][]domain.Override{"cfg": {{Match: "vip:*", Limit: 50}, {Match: "vip:*", Limit: 5}}, "gone": {{Match: "x", Limit: 1}}})
	if err == nil || !strings.Contains(err.Error(), "policies[0].overrides[1].match") || !strings.Contains(err.Error(), `"gone"`) {
		t.Errorf("a bad config's overrides: %v", err)
	}
	// On a shared store: API policies' overrides are refused; config overrides change the limit only.
	shared, err := domain.NewPolicyLifecycle(nil, memory.NewPolicies(clock), clock, domain.LifecycleOptions{SharedStore: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shared.Put(ctx, domain.Policy{Name: "api", Limit: 3, Window: time.Hour, Algorithm: domain.SlidingLog, FailureMode: domain.FailDeny, Source: domain.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	if _, err := shared.PutOverride(ctx, "api", domain.Override{Match: "x", Limit: 1}); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("API policy override on a shared store: %v, want ErrInvalid", err)
	}
	if _, err := shared.InstallConfigWith([]domain.Policy{{Name: "cfg", Limit: 5, Window: time.Hour}},
		map[string][]domain.Override{"cfg": {{Match: "x", Limit: 1, Window: time.Minute}}}); err == nil || !strings.Contains(err.Error(), "policies[0].overrides[0].window") {
		t.Errorf("a windowed config override on a shared store: %v", err)
	}
}

// Checks racing override changes, policy changes and a policy's deletion (run with -race): no data race, and every
// check decides under the policy's limit or an override's, never fails.
func TestOverridesRaceChecks(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
	svc, err := domain.NewService(nil, memory.NewPolicies(clock), memory.New(clock, memory.Options{}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := svc.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 5, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	errs := make(chan error, 4)
	for w := range 3 {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				res, err := svc.Check(ctx, domain.CheckRequest{Policy: "p", Key: fmt.Sprint("t:", (w+i)%4), Cost: 0})
				if err != nil && !errors.Is(err, domain.ErrPolicyNotFound) {
					errs <- err
					return
				}
				if err == nil && res.Limit != 5 && res.Limit != 7 && res.Limit != 9 {
					errs <- fmt.Errorf("limit %d from neither the policy nor an override", res.Limit)
					return
				}
			}
		}()
	}
	for i := range 300 {
		switch i % 6 {
		case 0, 1:
			_, err = svc.PutOverride(ctx, "p", domain.Override{Match: "t:*", Limit: 7, Window: time.Duration(1+i%3) * time.Minute})
		case 2:
			_, err = svc.PutOverride(ctx, "p", domain.Override{Match: "t:1", Limit: 9})
		case 3:
			err = svc.DeleteOverride(ctx, "p", "t:*")
		case 4:
			_, _, err = svc.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 5, Window: time.Duration(1+i%2) * time.Hour})
		default:
			if err = svc.DeletePolicy(ctx, "p"); err == nil {
				_, _, err = svc.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 5, Window: time.Hour})
			}
		}
		if err != nil && !errors.Is(err, domain.ErrOverrideNotFound) {
			t.Fatalf("change %d: %v", i, err)
		}
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

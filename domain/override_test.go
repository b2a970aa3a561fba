package domain

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// overrideModel is the brute-force model of OverrideSet: the overrides in force as a plain map, every sample key's
// limit and window worked out from them afresh (exact, then the longest prefix; a window not set is the one the
// key would have without that override), and every sample key's floor from its own history (each change of its
// window or of the policy's counting at t raises it to t minus the window it had).
type overrideModel struct {
	p     Policy
	ovs   map[string]Override
	keys  []string
	floor map[string]int64
	was   map[string]modelKeyRule
}

type modelKeyRule struct {
	limit  int64
	window time.Duration
	alg    Algorithm
	match  string
}

// matches returns the overrides that match key, in precedence order.
func (m *overrideModel) matches(key string) []Override {
	var out []Override
	if o, ok := m.ovs[key]; ok && !strings.HasSuffix(key, "*") {
		out = append(out, o)
	}
	for n := len(key); n >= 1; n-- {
		if o, ok := m.ovs[key[:n]+"*"]; ok {
			out = append(out, o)
		}
	}
	return out
}

func (m *overrideModel) rule(key string) modelKeyRule {
	ms := m.matches(key)
	r := modelKeyRule{limit: m.p.Limit, window: m.p.Window, alg: m.p.Algorithm}
	if len(ms) == 0 {
		return r
	}
	r.limit, r.match = ms[0].Limit, ms[0].Match
	for _, o := range ms {
		if o.Window != 0 {
			r.window = o.Window
			break
		}
	}
	return r
}

// settle records every sample key's rule after a change at now, raising the floors of the keys whose counting
// changed.
func (m *overrideModel) settle(now int64) {
	for _, k := range m.keys {
		r := m.rule(k)
		if was, ok := m.was[k]; ok && (was.window != r.window || was.alg != r.alg) {
			m.floor[k] = max(m.floor[k], now-int64(was.window/time.Microsecond))
		}
		m.was[k] = r
	}
}

// runOverrides drives an OverrideSet and the model with the same random puts, deletes, policy changes and
// compactions over keys of the letters a and b, and requires every sample key to get the same limit, window and
// match, and a floor that cuts the same units now (max(floor, now - window) equal: a floor at or before that
// instant cuts nothing the window does not).
func runOverrides(t *testing.T, steps int, pick func(n int) int) {
	t.Helper()
	windows := []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second}
	p := Policy{Name: "p", Limit: 5, Window: windows[pick(3)], Algorithm: WindowAlgorithms[pick(len(WindowAlgorithms))]}.WithDefaults()
	m := &overrideModel{p: p, ovs: map[string]Override{}, floor: map[string]int64{}, was: map[string]modelKeyRule{}}
	for _, a := range []string{"a", "b"} {
		m.keys = append(m.keys, a)
		for _, b := range []string{"a", "b"} {
			m.keys = append(m.keys, a+b)
			for _, c := range []string{"a", "b"} {
				m.keys = append(m.keys, a+b+c)
			}
		}
	}
	s := NewOverrideSet(p)
	now := int64(1_700_000_000_000_000)
	m.settle(now)
	for step := 0; step < steps; step++ {
		now += int64(pick(3000)) * 1000
		var what string
		switch op := pick(10); {
		case op < 4:
			k := m.keys[pick(len(m.keys))]
			match := k
			if pick(2) == 0 && len(k) < 3 {
				match = k + "*"
			}
			o := Override{Match: match, Limit: int64(1 + pick(9))}
			if w := pick(4); w > 0 {
				o.Window = windows[w-1]
			}
			if err := ValidateOverride(p, o, ""); err != nil {
				t.Fatalf("step %d: %+v: %v", step, o, err)
			}
			_, had := m.ovs[o.Match]
			if created := s.Put(o, now); created == had {
				t.Fatalf("step %d: Put(%+v) created %v, had %v", step, o, created, had)
			}
			m.ovs[o.Match] = o
			what = fmt.Sprintf("put %+v", o)
		case op < 7:
			matches := slices.Sorted(func(yield func(string) bool) {
				for k := range m.ovs {
					if !yield(k) {
						return
					}
				}
			})
			if len(matches) == 0 {
				continue
			}
			match := matches[pick(len(matches))]
			if !s.Delete(match, now) {
				t.Fatalf("step %d: Delete(%q) found nothing", step, match)
			}
			delete(m.ovs, match)
			what = "delete " + match
		case op < 9:
			old := p
			switch pick(3) {
			case 0:
				p.Limit = int64(1 + pick(9))
			case 1:
				p.Window = windows[pick(3)]
			default:
				p.Algorithm = WindowAlgorithms[pick(len(WindowAlgorithms))]
			}
			p.Resolution = 0
			p = p.WithDefaults()
			if CountingChanged(old, p) {
				p.Floor = NextFloor(old, now)
			}
			s.PolicyChanged(p, now)
			m.p = p
			what = fmt.Sprintf("policy %s/%s/%d", p.Algorithm, p.Window, p.Limit)
		case op < 10 && pick(2) == 0:
			// A reload: the policy and some overrides changed at one instant (Apply).
			old := p
			p.Window = windows[pick(3)]
			if pick(3) == 0 {
				p.Algorithm = WindowAlgorithms[pick(len(WindowAlgorithms))]
			}
			p.Resolution = 0
			p = p.WithDefaults()
			if CountingChanged(old, p) {
				p.Floor = NextFloor(old, now)
			}
			var puts []Override
			var dels []string
			seen := map[string]bool{}
			for range 1 + pick(4) {
				k := m.keys[pick(len(m.keys))]
				match := k
				if pick(2) == 0 && len(k) < 3 {
					match = k + "*"
				}
				if seen[match] {
					continue
				}
				seen[match] = true
				if _, ok := m.ovs[match]; ok && pick(2) == 0 {
					dels = append(dels, match)
					delete(m.ovs, match)
					continue
				}
				o := Override{Match: match, Limit: int64(1 + pick(9))}
				if w := pick(4); w > 0 {
					o.Window = windows[w-1]
				}
				puts = append(puts, o)
				m.ovs[match] = o
			}
			s.Apply(p, puts, dels, now)
			m.p = p
			what = fmt.Sprintf("apply policy %s/%s puts %v deletes %v", p.Algorithm, p.Window, puts, dels)
		default:
			s.Compact(now)
			what = "compact"
		}
		m.settle(now)
		if s.Len() != len(m.ovs) {
			t.Fatalf("step %d (%s): Len %d, want %d", step, what, s.Len(), len(m.ovs))
		}
		for _, k := range m.keys {
			r, match := s.Rule(k)
			w := m.was[k]
			cut := func(floor int64, window time.Duration) int64 { return max(floor, now-int64(window/time.Microsecond)) }
			if r.Limit != w.limit || r.Window != w.window || r.Algorithm != w.alg || match != w.match ||
				cut(r.Floor, r.Window) != cut(m.floor[k], w.window) {
				t.Fatalf("step %d (%s) key %s:\n got limit %d window %s %s match %q floor %d\nwant limit %d window %s %s match %q floor %d (now %d)",
					step, what, k, r.Limit, r.Window, r.Algorithm, match, r.Floor, w.limit, w.window, w.alg, w.match, m.floor[k], now)
			}
		}
	}
	// The listing pages through exactly the overrides in force.
	var listed []string
	after := ""
	for {
		page, more := s.List(after, 3)
		for _, o := range page {
			if m.ovs[o.Match] != o {
				t.Fatalf("listed %+v, in force %+v", o, m.ovs[o.Match])
			}
			listed = append(listed, o.Match)
		}
		if !more {
			break
		}
		after = page[len(page)-1].Match
	}
	if len(listed) != len(m.ovs) || len(slices.Compact(slices.Sorted(slices.Values(listed)))) != len(listed) {
		t.Fatalf("listed %v, in force %v", listed, m.ovs)
	}
}

// TestOverridesMatchTheModel: runOverrides on many seeded sequences.
func TestOverridesMatchTheModel(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 24))
		runOverrides(t, 300, func(n int) int { return rng.IntN(n) })
	}
}

// FuzzOverrides: runOverrides on the fuzzer's sequences.
func FuzzOverrides(f *testing.F) {
	f.Add([]byte{1, 0, 3, 2, 1, 7, 0, 4, 2, 9, 1, 1, 5, 8, 2, 0, 3, 6, 1, 2, 8, 0, 1, 5})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 4000 {
			prog = prog[:4000]
		}
		runOverrides(t, len(prog)/4, picker(prog))
	})
}

package redis_test

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// specKey is the conversion spec v2 (issue 22) for one key of one generation, written from the spec with exact
// rationals: what decide.lua must admit until the domain's model (storetest) follows the same spec.
type specKey struct {
	alg     domain.Algorithm // "" empty
	entries [][2]int64       // sliding_log: (instant µs, units)
	tat     *big.Rat         // token_bucket
	c, w    int64            // token_bucket: the limit and window that wrote it; fixed_window: w, the window
	a, f    int64            // fixed_window: newest admission's instant, its window's units
}

func (k specKey) view(now int64, r domain.Rule) specKey {
	w := r.Window.Microseconds()
	cut := max(now-w, r.Floor)
	switch {
	case k.alg == "":
		return k
	case k.alg == r.Algorithm && r.Algorithm == domain.TokenBucket && k.c == r.Limit && k.w == w,
		k.alg == r.Algorithm && r.Algorithm == domain.FixedWindow && k.w == w,
		k.alg == r.Algorithm && r.Algorithm == domain.SlidingLog:
		return k
	}
	var n, at int64
	switch k.alg {
	case domain.SlidingLog:
		for _, e := range k.entries {
			if e[0] > cut {
				n += e[1]
				at = e[0]
			}
		}
	case domain.TokenBucket:
		if k.tat.Cmp(big.NewRat(now, 1)) > 0 {
			ceil := new(big.Int).Add(new(big.Int).Quo(k.tat.Num(), k.tat.Denom()), big.NewInt(0))
			if !k.tat.IsInt() {
				ceil.Add(ceil, big.NewInt(1))
			}
			d := ceil.Int64() - now
			n = (d*k.c + k.w - 1) / k.w
			at = now
		}
	case domain.FixedWindow: // until the window that admitted them ends
		if k.a > cut && now < k.a-k.a%k.w+k.w {
			n, at = k.f, k.a
		}
	default:
		panic("specKey models sliding_log, token_bucket and fixed_window, not " + k.alg)
	}
	if n == 0 {
		return specKey{}
	}
	out := specKey{alg: r.Algorithm}
	switch r.Algorithm {
	case domain.SlidingLog:
		out.entries = [][2]int64{{at, n}}
	case domain.TokenBucket:
		out.tat = new(big.Rat).Add(big.NewRat(now, 1), big.NewRat(n*w, r.Limit))
		out.c, out.w = r.Limit, w
	case domain.FixedWindow:
		out.a, out.f, out.w = now, n, w
	default:
		panic("specKey models sliding_log, token_bucket and fixed_window, not " + r.Algorithm)
	}
	return out
}

func (k *specKey) decide(now int64, r domain.Rule, cost int64) bool {
	v := k.view(now, r)
	w, need := r.Window.Microseconds(), max(cost, 1)
	cut := max(now-w, r.Floor)
	var ok bool
	switch r.Algorithm {
	case domain.SlidingLog:
		var used int64
		for _, e := range v.entries {
			if e[0] > cut {
				used += e[1]
			}
		}
		ok = used+need <= r.Limit
		if ok && cost > 0 {
			v.entries = append(append([][2]int64(nil), v.entries...), [2]int64{now, cost})
		}
	case domain.TokenBucket:
		tat := big.NewRat(now, 1)
		if v.alg == domain.TokenBucket && v.tat.Cmp(tat) > 0 {
			tat = v.tat
		}
		next := new(big.Rat).Add(tat, big.NewRat(need*w, r.Limit))
		ok = new(big.Rat).Sub(next, big.NewRat(now, 1)).Cmp(big.NewRat(w, 1)) <= 0
		if ok && cost > 0 {
			v.tat, v.c, v.w = new(big.Rat).Add(tat, big.NewRat(cost*w, r.Limit)), r.Limit, w
		}
	case domain.FixedWindow:
		start := now - now%w
		var u int64
		if v.alg == domain.FixedWindow && v.a >= start && v.a > r.Floor {
			u = v.f
		}
		ok = u+need <= r.Limit
		if ok && cost > 0 {
			v.a, v.f, v.w = max(v.a, now), u+cost, w
		}
	default:
		panic("specKey models sliding_log, token_bucket and fixed_window, not " + r.Algorithm)
	}
	if ok && cost > 0 {
		v.alg = r.Algorithm
		*k = v
	}
	return ok
}

// decide.lua admits exactly what the conversion spec's model admits, on random sequences of limit, window and
// algorithm changes (sliding_log, token_bucket, fixed_window; windows that nest; floors as a policy store sets
// them) on one key, peeks included. The seed is logged on failure; SLUICE_TEST_REDIS_SPEC_SEED replays one.
func TestConversionSpecModel(t *testing.T) {
	seed := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("SLUICE_TEST_REDIS_SPEC_SEED"), 10, 64); err == nil {
		seed = v
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	clock := clocktest.New(epoch)
	s := open(t, []string{redistest.SingleAddr(t)}, clock, redis.Options{ExpirySlack: time.Hour})
	algs := []domain.Algorithm{domain.SlidingLog, domain.TokenBucket, domain.FixedWindow}
	windows := []time.Duration{time.Second, 10 * time.Second, time.Minute}
	for run := range 30 {
		key := "m" + string(rune('a'+run%26)) + time.Duration(run).String()
		var m specKey
		var hist []string
		r := rule(algs[rng.IntN(3)], 1+rng.Int64N(8), windows[rng.IntN(3)])
		for step := range 120 {
			if rng.IntN(6) == 0 {
				// A policy change, with the floor a policy store gives it (domain.NextFloor): units that had
				// stopped counting never count again.
				next := rule(algs[rng.IntN(3)], 1+rng.Int64N(8), windows[rng.IntN(3)])
				next.Floor = r.Floor
				if next.Window != r.Window || next.Algorithm != r.Algorithm {
					next.Floor = domain.NextFloor(domain.Policy{Algorithm: r.Algorithm, Window: r.Window, Floor: r.Floor}, clock.Now().UnixMicro())
				}
				r = next
			}
			if rng.IntN(3) == 0 {
				clock.Advance(time.Duration(rng.Int64N(int64(3 * time.Second))))
			}
			cost := rng.Int64N(min(r.Limit, 3) + 1)
			now := clock.Now().UnixMicro()
			want := m.decide(now, r, cost)
			d := do(t, s, domain.BucketRequest{Policy: "model", Key: key, Rule: r, Cost: cost})
			hist = append(hist, fmt.Sprintf("t=%d %s %d/%s cost %d: %v", now-epoch.UnixMicro(), r.Algorithm, r.Limit, r.Window, cost, d.Allowed))
			if d.Allowed != want {
				t.Logf("history:\n%s", strings.Join(hist, "\n"))
				t.Fatalf("seed %d run %d step %d: %s %d/%s cost %d: admitted %v, the spec says %v", seed, run, step, r.Algorithm, r.Limit, r.Window, cost, d.Allowed, want)
			}
		}
	}
}

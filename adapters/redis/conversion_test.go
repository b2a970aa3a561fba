package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// conversionStores are a single Redis and a cluster, each with a test clock.
func conversionStores(t *testing.T) map[string]func(*testing.T, domain.Clock) *redis.Store {
	return map[string]func(*testing.T, domain.Clock) *redis.Store{
		"single": func(t *testing.T, c domain.Clock) *redis.Store {
			return open(t, []string{redistest.SingleAddr(t)}, c, redis.Options{})
		},
		"cluster": func(t *testing.T, c domain.Clock) *redis.Store {
			return open(t, redistest.ClusterAddrs(t)[:1], c, redis.Options{})
		},
	}
}

// admitted sends n cost-1 checks of key under r and returns how many were admitted.
func admitted(t *testing.T, s *redis.Store, key string, r domain.Rule, n int) int {
	t.Helper()
	got := 0
	for range n {
		if do(t, s, domain.BucketRequest{Policy: "conv", Key: key, Rule: r, Cost: 1}).Allowed {
			got++
		}
	}
	return got
}

// The conversion spec's worked examples (issue 22, conversion spec v2), on decide.lua: a change of limit, window
// or algorithm never loses units (a token bucket's count under the limit and window that wrote them, never capped
// by a new limit), and a denial or a peek converts and writes nothing.
func TestConversionSpecExamples(t *testing.T) {
	for name, mk := range conversionStores(t) {
		t.Run(name, func(t *testing.T) {
			day := 24 * time.Hour
			t.Run("token bucket units survive a lower limit", func(t *testing.T) {
				clock := clocktest.New(epoch)
				s := mk(t, clock)
				if n := admitted(t, s, "k", rule(domain.TokenBucket, 100, day), 50); n != 50 {
					t.Fatalf("token_bucket 100/1d admitted %d of 50", n)
				}
				if n := admitted(t, s, "k", rule(domain.SlidingLog, 3, day), 5); n != 0 {
					t.Fatalf("sliding_log 3/1d after 50 token-bucket units admitted %d, want 0", n)
				}
				if n := admitted(t, s, "k", rule(domain.SlidingLog, 100, day), 100); n != 50 {
					t.Fatalf("sliding_log 100/1d admitted %d more, want exactly 50 (100 in all)", n)
				}
			})
			t.Run("a chain of changes denies and writes nothing", func(t *testing.T) {
				clock := clocktest.New(epoch)
				s := mk(t, clock)
				if n := admitted(t, s, "k", rule(domain.SlidingLog, 8, day), 8); n != 8 {
					t.Fatalf("sliding_log 8 admitted %d", n)
				}
				before := get(t, s, s.Key("conv", "k"))
				for _, r := range []domain.Rule{rule(domain.TokenBucket, 7, day), rule(domain.SlidingLog, 6, day), rule(domain.FixedWindow, 7, day)} {
					if n := admitted(t, s, "k", r, 1); n != 0 {
						t.Fatalf("%s %d admitted after 8 units", r.Algorithm, r.Limit)
					}
					if d := do(t, s, domain.BucketRequest{Policy: "conv", Key: "k", Rule: r}); d.Allowed { // a peek
						t.Fatalf("a peek under %s %d reports room: %+v", r.Algorithm, r.Limit, d)
					}
					if after := get(t, s, s.Key("conv", "k")); after != before {
						t.Fatalf("a denial or a peek under %s changed the stored state", r.Algorithm)
					}
				}
			})
			t.Run("token bucket to a lower limit counts units under the limit that wrote them", func(t *testing.T) {
				clock := clocktest.New(epoch)
				s := mk(t, clock)
				if n := admitted(t, s, "k", rule(domain.TokenBucket, 8, day), 5); n != 5 {
					t.Fatalf("token_bucket 8/1d admitted %d of 5", n)
				}
				if n := admitted(t, s, "k", rule(domain.TokenBucket, 3, day), 1); n != 0 {
					t.Fatalf("token_bucket 3/1d admitted after 5 units")
				}
				if n := admitted(t, s, "k", rule(domain.SlidingLog, 8, day), 8); n != 3 {
					t.Fatalf("sliding_log 8/1d admitted %d, want 3", n)
				}
			})
			t.Run("fixed window keeps units recorded before its current window", func(t *testing.T) {
				clock := clocktest.New(epoch)
				s := mk(t, clock)
				if n := admitted(t, s, "k", rule(domain.SlidingLog, 5, time.Hour), 5); n != 5 {
					t.Fatalf("sliding_log admitted %d of 5", n)
				}
				// 03:04:05 + 56m: the next fixed hour has begun; the 5 units, 56 minutes old, still count under 1h.
				clock.Advance(56 * time.Minute)
				if n := admitted(t, s, "k", rule(domain.FixedWindow, 5, time.Hour), 1); n != 0 {
					t.Fatalf("fixed_window 5/1h admitted after 5 units within the hour")
				}
			})
		})
	}
}

// An algorithm outside the table is an error status (domain.StatusInvalidRule, 3), never a silent default: the
// check is not decided and nothing is written.
func TestUnknownAlgorithmIsInvalid(t *testing.T) {
	s := open(t, []string{redistest.SingleAddr(t)}, clocktest.New(epoch), redis.Options{})
	for _, a := range []domain.Algorithm{"", "leaky_bucket"} {
		r := domain.BucketRequest{Policy: "bad", Key: "k", Rule: domain.Rule{Algorithm: a, Limit: 5, Window: time.Minute}, Cost: 1}
		d := do(t, s, r)
		if d.Status != 3 || d.Allowed {
			t.Fatalf("algorithm %q: %+v, want status 3 (invalid rule), not admitted", a, d)
		}
		ds, err := s.DecideBatch(context.Background(), []domain.BucketRequest{r, {Policy: "ok", Key: "k", Rule: rule(domain.SlidingLog, 5, time.Minute), Cost: 1}}, true)
		if err != nil || ds[0].Status != 3 {
			t.Fatalf("atomic batch with algorithm %q: %+v %v (the invalid check must keep the batch from recording)", a, ds, err)
		}
	}
	if v, err := s.Client().Do(context.Background(), s.Client().B().Exists().Key(s.Key("bad", "k"), s.Key("ok", "k")).Build()).AsInt64(); err != nil || v != 0 {
		t.Fatalf("keys written: %d %v", v, err)
	}
}

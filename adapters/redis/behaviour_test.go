package redis_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func rule(a domain.Algorithm, limit int64, window time.Duration) domain.Rule {
	r := domain.Rule{Algorithm: a, Limit: limit, Window: window}
	if a == domain.SlidingWindow {
		r.Resolution = domain.DefaultResolution(window)
	}
	return r
}

func do(t *testing.T, s *redis.Store, r domain.BucketRequest) domain.Decision {
	t.Helper()
	d, err := s.Decide(context.Background(), r)
	if err != nil {
		t.Fatalf("Decide(%+v): %v", r, err)
	}
	return d
}

// writes counts the write commands the server has run (scripts' own calls included).
func writes(t *testing.T, s *redis.Store) int64 {
	t.Helper()
	c := s.Client()
	var n int64
	for _, node := range c.Nodes() {
		info, err := node.Do(context.Background(), node.B().Info().Section("commandstats").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			for _, cmd := range []string{"cmdstat_set:", "cmdstat_del:", "cmdstat_pexpire:", "cmdstat_setrange:", "cmdstat_append:"} {
				if strings.HasPrefix(l, cmd) {
					v, _, _ := strings.Cut(strings.TrimPrefix(l, cmd+"calls="), ",")
					c, _ := strconv.ParseInt(v, 10, 64)
					n += c
				}
			}
		}
	}
	return n
}

func get(t *testing.T, s *redis.Store, key string) string {
	t.Helper()
	v, err := s.Client().Do(context.Background(), s.Client().B().Get().Key(key).Build()).ToString()
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return v
}

// Every window algorithm (concurrency refuses checks of cost > 0: storetest ConcurrencyCheckRefused): denials and
// peeks run no write command and leave the value as it was.
func TestDenialsAndPeeksWriteNothing(t *testing.T) {
	addr := redistest.SingleAddr(t)
	clock := clocktest.New(epoch)
	s := open(t, []string{addr}, clock, redis.Options{})
	for _, a := range domain.WindowAlgorithms {
		r := domain.BucketRequest{Policy: "p", Key: string(a), Rule: rule(a, 3, time.Minute), Cost: 3}
		if d := do(t, s, r); !d.Allowed {
			t.Fatalf("%s: first check denied: %+v", a, d)
		}
		key := s.Key("p", string(a))
		before, w := get(t, s, key), writes(t, s)
		clock.Advance(time.Second)
		r.Cost = 1
		if d := do(t, s, r); d.Allowed {
			t.Fatalf("%s: admitted past the limit: %+v", a, d)
		}
		r.Cost = 0
		if d := do(t, s, r); d.Allowed {
			t.Fatalf("%s: peek of a full key admitted: %+v", a, d)
		}
		if after := get(t, s, key); after != before || writes(t, s) != w {
			t.Fatalf("%s: a denial or a peek wrote (value changed: %v, writes %d → %d)", a, after != before, w, writes(t, s))
		}
		// A peek of an unknown key creates nothing.
		r.Key, r.Cost = "unknown-"+string(a), 0
		do(t, s, r)
		if v := get(t, s, s.Key("p", r.Key)); !strings.Contains(v, "nil") {
			t.Fatalf("%s: a peek created the key: %q", a, v)
		}
	}
}

// Keys expire once nothing in them can count: the TTL is the time until the newest unit leaves the window
// (rounded up to the millisecond), and a key is never kept without a TTL.
func TestKeysExpire(t *testing.T) {
	addr := redistest.SingleAddr(t)
	s := open(t, []string{addr}, nil, redis.Options{}) // the server's clock: the TTL is real time
	for _, a := range domain.WindowAlgorithms {
		r := domain.BucketRequest{Policy: "p", Key: string(a), Rule: rule(a, 10, time.Minute), Cost: 1}
		do(t, s, r)
		ttl, err := s.Client().Do(context.Background(), s.Client().B().Pttl().Key(s.Key("p", string(a))).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		// sliding_log: one window; sliding_window: up to a resolution more; token_bucket: one emission interval
		// (6 s); fixed_window: at most the window.
		lo, hi := int64(0), int64(time.Minute/time.Millisecond)+1000+1
		if a == domain.SlidingLog {
			lo = int64(time.Minute/time.Millisecond) - 1000
		}
		if a == domain.TokenBucket {
			lo, hi = 5000, 6002
		}
		if ttl < lo || ttl > hi {
			t.Errorf("%s: PTTL %d ms, want %d to %d", a, ttl, lo, hi)
		}
	}
}

// After SCRIPT FLUSH (what a restart or a failover to a node that never ran the script looks like) the next
// decision still succeeds: the client sends the script in full on NOSCRIPT.
func TestScriptReloadedAfterFlush(t *testing.T) {
	addr := redistest.SingleAddr(t)
	s := open(t, []string{addr}, clocktest.New(epoch), redis.Options{})
	r := domain.BucketRequest{Policy: "p", Key: "k", Rule: rule(domain.SlidingLog, 2, time.Minute), Cost: 1}
	do(t, s, r)
	for _, n := range s.Client().Nodes() {
		if err := n.Do(context.Background(), n.B().ScriptFlush().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if d := do(t, s, r); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after SCRIPT FLUSH: %+v", d)
	}
	// And with WAIT, whose pipeline sends EVALSHA itself.
	w := open(t, []string{addr}, clocktest.New(epoch), redis.Options{WaitReplicas: 1, WaitTimeout: time.Millisecond})
	for _, n := range w.Client().Nodes() {
		if err := n.Do(context.Background(), n.B().ScriptFlush().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if d := do(t, w, r); !d.Allowed {
		t.Fatalf("WAIT store after SCRIPT FLUSH: %+v", d)
	}
}

// Limits and costs at 2^53-1, with every algorithm: exact counts, no overflow.
func TestNumericBounds(t *testing.T) {
	addr := redistest.SingleAddr(t)
	clock := clocktest.New(epoch)
	s := open(t, []string{addr}, clock, redis.Options{})
	const max = domain.MaxLimit
	for _, a := range domain.WindowAlgorithms {
		for _, w := range []time.Duration{time.Second, domain.MaxWindow} {
			key := string(a) + "/" + w.String()
			r := domain.BucketRequest{Policy: "big", Key: key, Rule: rule(a, max, w), Cost: max - 1}
			if d := do(t, s, r); !d.Allowed || d.Remaining != 1 {
				t.Fatalf("%s: cost 2^53-2 of 2^53-1: %+v", key, d)
			}
			r.Cost = 1
			if d := do(t, s, r); !d.Allowed || d.Remaining != 0 {
				t.Fatalf("%s: the last unit: %+v", key, d)
			}
			if d := do(t, s, r); d.Allowed || d.Remaining != 0 {
				t.Fatalf("%s: past 2^53-1: %+v", key, d)
			}
			r.Cost = max
			if d := do(t, s, r); d.Allowed {
				t.Fatalf("%s: cost 2^53-1 on a full key: %+v", key, d)
			}
		}
		clock.Advance(domain.MaxWindow + time.Hour) // everything refilled
		r := domain.BucketRequest{Policy: "big", Key: string(a) + "/1s", Rule: rule(a, max, time.Second), Cost: max}
		if d := do(t, s, r); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("%s: cost 2^53-1 after a refill: %+v", a, d)
		}
	}
}

// The hash tag is a digest of the key alone: one key under several policies shares a slot (so a burst plus a
// daily limit is one script even on a cluster), braces in keys never cut the tag, and (policy, key) pairs that
// spell alike stay apart.
func TestKeyLayout(t *testing.T) {
	s := &redis.Store{}
	a, b := s.Key("burst", "u{1}"), s.Key("daily", "u{1}")
	if redis.Slot(a) != redis.Slot(b) {
		t.Fatalf("one key under two policies in different slots: %q %q", a, b)
	}
	if !strings.HasPrefix(a, "{") || strings.IndexByte(a, '}') != 17 {
		t.Fatalf("hash tag not at the front: %q", a)
	}
	if s.Key("a", "b:c") == s.Key("a:b", "c") || s.Key("x", "1:y") == s.Key("x1", "y") {
		t.Fatal("policy and key joined ambiguously")
	}
	// CRC16 slot of a known tag (redis-cli CLUSTER KEYSLOT "{user1000}.following" is 3443).
	if got := redis.Slot("{user1000}.following"); got != 3443 {
		t.Fatalf("Slot = %d, want 3443", got)
	}
}

// Issue 27: an operator who sets maxmemory-policy allkeys-lru at run time (after Open checked it) is caught by the
// next RecheckEviction: Ping fails (so /healthz/store answers 503) until noeviction is back, and keys Redis then
// evicts are counted from its own evicted_keys.
func TestEvictionCheckedAtRunTime(t *testing.T) {
	srv := redistest.StartServer(t)
	s := open(t, []string{srv.Addr}, nil, redis.Options{})
	ctx := context.Background()
	if err := s.RecheckEviction(ctx); err != nil || !s.EvictionSafe() || s.Ping(ctx) != nil {
		t.Fatalf("a noeviction server: recheck %v, safe %v, ping %v", err, s.EvictionSafe(), s.Ping(ctx))
	}
	c := s.Client()
	must := func(cmd ...string) {
		t.Helper()
		if err := c.Do(ctx, c.B().Arbitrary(cmd...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	must("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	must("CONFIG", "SET", "maxmemory", "2mb")
	for i := range 20_000 { // well past 2 MB: Redis evicts
		must("SET", fmt.Sprint("filler:", i), strings.Repeat("x", 200))
	}
	if err := s.RecheckEviction(ctx); err != nil {
		t.Fatal(err)
	}
	if s.EvictionSafe() || s.Ping(ctx) == nil {
		t.Fatal("a server that evicts is reported safe")
	}
	if s.EvictedKeys() == 0 {
		t.Fatal("evictions not counted")
	}
	must("CONFIG", "SET", "maxmemory-policy", "noeviction")
	if err := s.RecheckEviction(ctx); err != nil || !s.EvictionSafe() || s.Ping(ctx) != nil {
		t.Fatalf("noeviction again: recheck %v, safe %v, ping %v", err, s.EvictionSafe(), s.Ping(ctx))
	}
}

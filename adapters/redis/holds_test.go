package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// holdProgram runs a program of hold operations and checks, read from data four bytes per step, on the store and
// on domain.Bucket side by side, and fails on the first answer that differs in any field. Beyond the conformance
// suite's model (storetest, HoldsMatchTheDomainStep), a step may change the policy's window, limit or algorithm
// (among the window algorithms, with the floor domain.NextFloor gives, as the policy lifecycle would) or re-create
// it (a new generation), jump the clock by up to two windows, and use ids with NUL and non-UTF-8 bytes: the
// record conversions (HoldConverted, an excess forced at now under the rule in force) and the refund bounds of
// token_bucket holds after admissions (noteLag) are reached here. Concurrency runs its own programs (a change
// between it and a window algorithm is refused by the lifecycle).
func holdProgram(t testing.TB, s *redis.Store, clock *clocktest.Clock, alg domain.Algorithm, data []byte) {
	t.Helper()
	ctx := context.Background()
	p := domain.Policy{Name: "hp", Limit: 6, Window: 4 * time.Second, Algorithm: alg}.WithDefaults()
	ref := map[string]*domain.Bucket{}
	ids := []string{"a", "b", "\x00anon", "\xff\x00\xfe", "c"}
	for step := 0; len(data) >= 4; step++ {
		op, x, y, z := data[0], data[1], data[2], data[3]
		data = data[4:]
		switch x % 8 {
		case 0:
			clock.Advance(time.Duration(y) * time.Duration(z) * time.Millisecond)
		case 1:
			clock.Advance(time.Duration(y) * 20 * time.Millisecond)
		default:
			clock.Advance(time.Duration(y%32) * time.Millisecond)
		}
		now := clock.Now().UnixMicro()
		switch op % 41 {
		case 0:
			p.Limit = int64(1 + z%9)
		case 1:
			p.Generation++
		case 2:
			if !alg.HoldsOnly() {
				old := p
				p.Window = time.Duration(1+z%8) * time.Second
				p.Algorithm = domain.WindowAlgorithms[int(y)%len(domain.WindowAlgorithms)]
				p.Resolution = 0
				p = p.WithDefaults()
				p.Floor = domain.NextFloor(old, now)
			}
		}
		key := "k" + strconv.Itoa(int(z%2))
		b := ref[key]
		if b == nil {
			b = &domain.Bucket{}
			ref[key] = b
		}
		id := ids[int(y)%len(ids)]
		ttl := time.Duration(z%7) * 700 * time.Millisecond
		r := domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule()}
		var q domain.BucketHold
		switch k := op % 12; {
		case k == 1 && !p.Algorithm.HoldsOnly():
			// Two checks of the key in one batch (one script): each admission lowers the open token_bucket holds'
			// refund bounds in turn; an atomic batch that is refused records nothing, bounds included (Rollback).
			atomic := z%2 == 1
			r.Cost = int64(z) % (p.Limit + 1)
			r2 := r
			r2.Cost = int64(y) % (p.Limit + 1)
			got, err := s.DecideBatch(ctx, []domain.BucketRequest{r, r2}, atomic)
			if err != nil {
				t.Fatal(err)
			}
			m := b.Mark()
			want := []domain.Decision{b.Decide(now, r.Rule, r.Cost), b.Decide(now, r2.Rule, r2.Cost)}
			if atomic && (!want[0].Allowed || !want[1].Allowed) {
				b.Rollback(m)
			} else {
				b.Release()
			}
			if got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("step %d %s batch (atomic %v) %d, %d under %+v:\n got %+v\nwant %+v", step, key, atomic, r.Cost,
					r2.Cost, p, got, want)
			}
			continue
		case k < 2:
			r.Cost = int64(z) % (p.Limit + 1)
			if p.Algorithm.HoldsOnly() {
				r.Cost = 0
			}
			got, err := s.Decide(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if want := b.Decide(now, r.Rule, r.Cost); got != want {
				t.Fatalf("step %d %s check %d under %+v:\n got %+v\nwant %+v", step, key, r.Cost, p, got, want)
			}
			continue
		case k < 6:
			r.Cost = 1 + int64(z)%p.Limit
			q = domain.BucketHold{BucketRequest: r, Op: domain.OpAcquire, ID: id, TTL: ttl}
		case k < 9:
			r.Cost = int64(z) % (2*p.Limit + 1)
			q = domain.BucketHold{BucketRequest: r, Op: domain.OpSettle, ID: id}
		case k < 11:
			q = domain.BucketHold{BucketRequest: r, Op: domain.OpRenew, ID: id, TTL: ttl}
		default:
			r.Cost = 1 + int64(z%3)
			q = domain.BucketHold{BucketRequest: r, Op: domain.OpReleaseAnonymous}
		}
		got, err := s.Hold(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := b.ApplyHold(now, q); got != want {
			t.Fatalf("step %d %s op %d id %q amount %d ttl %s under %+v:\n got %+v\nwant %+v", step, key, q.Op, id,
				q.Cost, q.TTL, p, got, want)
		}
	}
}

// TestHoldsModelWithPolicyChanges runs random hold programs (holdProgram) on every algorithm, on the single test
// Redis and on the cluster.
func TestHoldsModelWithPolicyChanges(t *testing.T) {
	for name, addrs := range map[string]func(testing.TB) []string{
		"single":  func(t testing.TB) []string { return []string{redistest.SingleAddr(t)} },
		"cluster": func(t testing.TB) []string { return redistest.ClusterAddrs(t)[:1] },
	} {
		t.Run(name, func(t *testing.T) {
			for _, alg := range domain.Algorithms {
				t.Run(string(alg), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(len(alg)), 2326))
					data := make([]byte, 4*1500)
					for i := range data {
						data[i] = byte(rng.IntN(256))
					}
					clock := clocktest.New(epoch)
					s := open(t, addrs(t), clock, redis.Options{ExpirySlack: time.Hour})
					holdProgram(t, s, clock, alg, data)
				})
			}
		})
	}
}

// FuzzHolds fuzzes hold programs (holdProgram): the first byte picks the algorithm, the rest is the program.
func FuzzHolds(f *testing.F) {
	addr := redistest.SingleAddr(f)
	for i := range domain.Algorithms {
		f.Add(append([]byte{byte(i)}, "\x03\x02\x05\x03\x07\x00\x09\x01\x02\x01\x00\x04\x0b\x03\x01\x02\x05\x00\xff\x10"...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 4*400 {
			return
		}
		alg := domain.Algorithms[int(data[0])%len(domain.Algorithms)]
		clock := clocktest.New(epoch)
		s := open(t, []string{addr}, clock, redis.Options{ExpirySlack: time.Hour})
		holdProgram(t, s, clock, alg, data[1:])
	})
}

// TestConcurrencyAcrossClients: holders on several clients (stores, as sluice replicas are) race for one
// concurrency key of limit N on the cluster, each counting itself in while it holds a unit: the count never
// exceeds N, and every unit is back after the last release. The Redis clock decides.
func TestConcurrencyAcrossClients(t *testing.T) {
	addrs := redistest.ClusterAddrs(t)
	prefix := redistest.Prefix()
	const limit, clients, workers, rounds = 4, 3, 24, 25
	var ss []*redis.Store
	for range clients { // redis.Open, not open: the clients share one prefix, as replicas share their keys
		s, err := redis.Open(context.Background(), redis.Options{Addrs: addrs[:1], Prefix: prefix, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		ss = append(ss, s)
	}
	p := domain.Policy{Name: "streams", Limit: limit, Window: time.Hour, Algorithm: domain.Concurrency}.WithDefaults()
	op := func(o domain.HoldOp, id string) domain.BucketHold {
		return domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: "tenant", Rule: p.Rule(), Cost: boolCost(o)},
			Op: o, ID: id}
	}
	ctx := context.Background()
	var in, most, admitted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := ss[w%clients]
			for i := range rounds {
				id := fmt.Sprintf("w%d-%d", w, i)
				hd, err := s.Hold(ctx, op(domain.OpAcquire, id))
				if err != nil {
					t.Error(err)
					return
				}
				if !hd.Allowed {
					continue
				}
				if hd.Status != domain.HoldOK {
					t.Errorf("acquire %s: %+v", id, hd)
					return
				}
				admitted.Add(1)
				n := in.Add(1)
				if n > limit {
					t.Errorf("acquire %s: %+v with %d in", id, hd, n)
				}
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				// The work done while holding: a peek, which must see at most the limit held.
				d, err := s.Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "tenant", Rule: p.Rule()})
				if err != nil || d.Allowed && d.Remaining < 0 || !d.Allowed && d.Remaining != 0 {
					t.Errorf("a peek while holding: %+v %v", d, err)
				}
				in.Add(-1)
				if hd, err := s.Hold(ctx, op(domain.OpSettle, id)); err != nil || hd.Status != domain.HoldOK {
					t.Errorf("release %s: %+v %v", id, hd, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m > limit || m < 1 {
		t.Fatalf("at most %d holders at once, limit %d", m, limit)
	}
	t.Logf("%d acquires admitted of %d, at most %d holders at once (limit %d)", admitted.Load(), workers*rounds, most.Load(), limit)
	if admitted.Load() == 0 {
		t.Fatal("no acquire admitted")
	}
	d, err := ss[0].Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "tenant", Rule: p.Rule()})
	if err != nil {
		t.Fatal(err)
	}
	if d.Remaining != limit-1 || !d.Allowed {
		t.Fatalf("after every release a peek sees %+v, want every unit back (remaining %d)", d, limit-1)
	}
}

// boolCost is the amount of a concurrency op in TestConcurrencyAcrossClients: 1 to acquire, 0 to release.
func boolCost(o domain.HoldOp) int64 {
	if o == domain.OpAcquire {
		return 1
	}
	return 0
}

// TestConcurrencyHoldExpiry: a crashed holder's units come back at its hold's deadline, not before, and the
// key's Redis expiry keeps the hold record exactly as long as domain.Bucket.Empty does (until its deadline or the
// end of its units' window, whichever is later), no longer: a renewal moves it.
func TestConcurrencyHoldExpiry(t *testing.T) {
	clock := clocktest.New(epoch)
	s := open(t, []string{redistest.SingleAddr(t)}, clock, redis.Options{})
	ctx := context.Background()
	p := domain.Policy{Name: "jobs", Limit: 2, Window: time.Minute, Algorithm: domain.Concurrency}.WithDefaults()
	acq := func(id string, ttl time.Duration) domain.HoldDecision {
		hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: 1},
			Op: domain.OpAcquire, ID: id, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return hd
	}
	held := func() int64 {
		d, err := s.Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule()})
		if err != nil {
			t.Fatal(err)
		}
		return p.Limit - 1 - d.Remaining
	}
	pttl := func() time.Duration {
		ms, err := s.Client().Do(ctx, s.Client().B().Pttl().Key(s.Key(p.Name, "k")).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(ms) * time.Millisecond
	}
	// The key's expiry is set from the test clock's instant; the real time a call takes is the slop.
	near := func(what string, got, want time.Duration) {
		t.Helper()
		if got > want+time.Millisecond || got < want-2*time.Second {
			t.Fatalf("%s: PTTL %s, want %s", what, got, want)
		}
	}
	if hd := acq("crashed", 0); !hd.Allowed || hd.Status != domain.HoldOK {
		t.Fatalf("acquire: %+v", hd)
	}
	near("a hold of the whole window", pttl(), time.Minute)
	clock.Advance(time.Minute - time.Microsecond)
	if n := held(); n != 1 {
		t.Fatalf("1 µs before the deadline %d held, want 1", n)
	}
	clock.Advance(time.Microsecond)
	if n := held(); n != 0 {
		t.Fatalf("at the deadline %d held, want 0", n)
	}
	// A 10 s hold: its units are back at 10 s; its record (a late settle answers HoldExpired) is kept to the end
	// of its window, as Bucket.Empty keeps it.
	if hd := acq("short", 10*time.Second); hd.Status != domain.HoldOK {
		t.Fatalf("acquire: %+v", hd)
	}
	near("a 10 s hold", pttl(), time.Minute)
	clock.Advance(10 * time.Second)
	if n := held(); n != 0 {
		t.Fatalf("at a 10 s hold's deadline %d held, want 0", n)
	}
	// Renewed at 30 s for a whole window: the key lives to the new deadline, 60 s from then.
	if hd := acq("lease", 0); hd.Status != domain.HoldOK {
		t.Fatalf("acquire: %+v", hd)
	}
	clock.Advance(30 * time.Second)
	hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule()},
		Op: domain.OpRenew, ID: "lease"})
	if err != nil || hd.Status != domain.HoldOK {
		t.Fatalf("renew: %+v %v", hd, err)
	}
	near("a renewed hold", pttl(), time.Minute)
	clock.Advance(time.Minute)
	if n := held(); n != 0 {
		t.Fatalf("after the renewed deadline %d held, want 0", n)
	}
}

// TestStoredConcurrencyPolicy: an API policy of algorithm concurrency is stored in the policy registry and its
// holds are decided with the policy read from Redis inside the script (Stored), on a single Redis and a cluster.
func TestStoredConcurrencyPolicy(t *testing.T) {
	for name, addrs := range map[string]func(testing.TB) []string{
		"single":  func(t testing.TB) []string { return []string{redistest.SingleAddr(t)} },
		"cluster": func(t testing.TB) []string { return redistest.ClusterAddrs(t)[:1] },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, addrs(t), nil, redis.Options{})
			ps := s.NewPolicies(redis.PolicyOptions{})
			t.Cleanup(ps.Close)
			if _, err := ps.PutPolicy(ctx, domain.Policy{Name: "slots", Limit: 2, Window: time.Hour, Algorithm: domain.Concurrency}); err != nil {
				t.Fatal(err)
			}
			seenNamed(t, ps, "slots", 5*time.Second, func(p domain.Policy, err error) bool { return err == nil })
			got, err := ps.GetPolicy(ctx, "slots")
			if err != nil || got.Algorithm != domain.Concurrency {
				t.Fatalf("GetPolicy: %+v %v", got, err)
			}
			q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "slots", Key: "k", Rule: got.Rule(), Cost: 1, Stored: true},
				Op: domain.OpAcquire}
			for i, want := range []bool{true, true, false} {
				q.ID = "h" + strconv.Itoa(i)
				hd, err := s.Hold(ctx, q)
				if err != nil || hd.Allowed != want || hd.Status != domain.HoldOK {
					t.Fatalf("acquire %d: %+v %v, want allowed %v", i, hd, err, want)
				}
			}
			q.ID, q.Cost = "big", 3
			if hd, err := s.Hold(ctx, q); err != nil || hd.Decision.Status != domain.StatusCostOverLimit || hd.Status != domain.HoldOK || hd.Hold != (domain.Hold{}) {
				t.Fatalf("acquire over the limit: %+v %v", hd, err)
			}
			if err := ps.DeletePolicy(ctx, "slots"); err != nil {
				t.Fatal(err)
			}
			q.ID = "h0"
			q.Op, q.Cost = domain.OpSettle, 0
			hd, err := s.Hold(ctx, q)
			if err != nil || hd.Status != domain.HoldOK || hd.Decision.Status != domain.StatusPolicyNotFound || hd.Hold != (domain.Hold{}) {
				t.Fatalf("release under a deleted policy: %+v %v", hd, err)
			}
		})
	}
}

// TestCrossSlotUndoGivesBoundsBack: on a cluster, an atomic batch across slots reserves slot by slot; when a later
// slot refuses, the undo gives back what the reserved token bucket admission lowered of an open hold's refund
// bound, as domain.Bucket.Rollback does, so a later settle refunds what the domain refunds.
func TestCrossSlotUndoGivesBoundsBack(t *testing.T) {
	clock := clocktest.New(epoch)
	s := open(t, redistest.ClusterAddrs(t)[:1], clock, redis.Options{})
	ctx := context.Background()
	p := domain.Policy{Name: "tb", Limit: 10, Window: 10 * time.Second, Algorithm: domain.TokenBucket}.WithDefaults()
	spent := domain.BucketRequest{Policy: "spent", Rule: rule(domain.FixedWindow, 1, time.Hour), Cost: 1}
	for i := 0; spent.Key == ""; i++ {
		if k := fmt.Sprint("other", i); redis.Slot(s.Key(spent.Policy, k)) > redis.Slot(s.Key(p.Name, "held")) {
			spent.Key = k
		}
	}
	do(t, s, spent)
	b := &domain.Bucket{}
	hold := func(op domain.HoldOp, id string, n int64) {
		t.Helper()
		q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: "held", Rule: p.Rule(), Cost: n}, Op: op, ID: id}
		got, err := s.Hold(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := b.ApplyHold(clock.Now().UnixMicro(), q); got != want {
			t.Fatalf("op %d %d:\n got %+v\nwant %+v", op, n, got, want)
		}
	}
	// h's bound is 5 s (h2's acquire found that lag); 5 s later the batch's admission finds a lag of 1 s. After
	// the undo, h2's excess moves tat 9 s later without lowering any bound, so h's refund of 5 units (5 s) is
	// bounded by 5 s, not 1 s: the peek after it tells them apart.
	hold(domain.OpAcquire, "h", 5)
	hold(domain.OpAcquire, "h2", 1)
	clock.Advance(5 * time.Second)
	r := domain.BucketRequest{Policy: p.Name, Key: "held", Rule: p.Rule(), Cost: 1}
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{r, spent}, true)
	if err != nil {
		t.Fatal(err)
	}
	m := b.Mark()
	if want := b.Decide(clock.Now().UnixMicro(), r.Rule, 1); ds[0] != want || ds[1].Allowed {
		t.Fatalf("batch: %+v, want %+v then a denial", ds, want)
	}
	b.Rollback(m)
	hold(domain.OpSettle, "h2", 10)
	hold(domain.OpSettle, "h", 0)
	want := b.Decide(clock.Now().UnixMicro(), r.Rule, 0)
	if got := do(t, s, domain.BucketRequest{Policy: p.Name, Key: "held", Rule: p.Rule()}); got != want {
		t.Fatalf("after the settle a peek: %+v, want %+v", got, want)
	}
}

// TestHoldOpUnderAGrownWindowKeepsTheLog: a sliding log written under a 10 s window, the window grown to a minute (a
// rule that travels with the request: no PutPolicy extends the key), then a hold op that writes the key without
// recording units (a settle of a hold past its deadline, for its own amount). The key's expiry follows the grown
// window, as the domain counts the log's units under it: it used to follow the window the log was written under,
// and a write past that instant deleted the key (conformance: HoldsUnderPolicyChanges).
func TestHoldOpUnderAGrownWindowKeepsTheLog(t *testing.T) {
	clock := clocktest.New(epoch)
	s := open(t, []string{redistest.SingleAddr(t)}, clock, redis.Options{})
	ctx := context.Background()
	p := domain.Policy{Name: "grown", Limit: 5, Window: 10 * time.Second, Algorithm: domain.SlidingLog}.WithDefaults()
	hold := func(op domain.HoldOp, id string, amount int64, ttl time.Duration) domain.HoldDecision {
		hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: amount},
			Op: op, ID: id, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return hd
	}
	if hd := hold(domain.OpAcquire, "a", 4, time.Second); !hd.Allowed {
		t.Fatalf("acquire: %+v", hd)
	}
	clock.Advance(5 * time.Second)
	old := p
	p.Window = time.Minute
	p.Floor = domain.NextFloor(old, clock.Now().UnixMicro())
	clock.Advance(6 * time.Second) // past the old window's end: the 4 units count under the minute alone
	if hd := hold(domain.OpSettle, "a", 4, 0); hd.Status != domain.HoldOK || !hd.Hold.Settled || hd.Remaining != 0 {
		t.Fatalf("settle past the deadline: %+v, want settled with 4 units counted", hd)
	}
	ms, err := s.Client().Do(ctx, s.Client().B().Pttl().Key(s.Key(p.Name, "k")).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	// The expiry is set from the test clock's instant; the real time the calls take is the slop (a second here).
	if left := time.Duration(ms) * time.Millisecond; left < 48*time.Second {
		t.Fatalf("the key expires in %s; its units count for another 49 s", left)
	}
	clock.Advance(48 * time.Second)
	d, err := s.Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: 0})
	if err != nil || d.Remaining != 0 {
		t.Fatalf("59 s after: %+v %v, want the 4 units still counted", d, err)
	}
}

package postgres_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// holdProgram drives the store and domain.Bucket (the reference step) with one program of hold operations and
// checks, and requires every field of every answer to be equal. The program is 4-byte steps (time advance, a, b,
// operation): checks and peeks, acquires (ids that repeat, anonymous ones, TTLs from 0 to past the window), settles
// for less, the same, more and 0, renewals, anonymous releases, and policy changes as the policy stores make them
// (the limit; the window or the algorithm with the floor domain.NextFloor gives, kept on the same side of
// concurrency as domain.ValidateChange requires; a new generation), on two keys. Policy names are unique per
// call (name), so programs can share a store.
// It returns how many answers of each (operation, hold status) it compared, so a test can show what it covered.
func holdProgram(t *testing.T, s domain.BucketStore, clock *clocktest.Clock, name string, alg domain.Algorithm, limit int64, prog []byte) map[[2]uint8]int {
	t.Helper()
	ctx := context.Background()
	windows := []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 3 * time.Minute}
	p := domain.Policy{Name: name, Algorithm: alg, Limit: limit, Window: windows[int(limit)%len(windows)]}.WithDefaults()
	ref := map[string]*domain.Bucket{}
	seen := map[[2]uint8]int{}
	for step := 0; step+4 <= len(prog); step += 4 {
		adv, a, b, op := prog[step], int64(prog[step+1]), int(prog[step+2]), prog[step+3]
		switch adv % 4 {
		case 1:
			clock.Advance(time.Duration(adv) * time.Millisecond)
		case 2:
			clock.Advance(p.Window * time.Duration((adv>>2)%8) / 32)
		case 3:
			clock.Advance(p.Window * time.Duration((adv>>2)%8) / 8)
		}
		now := clock.Now().UnixMicro()
		key := fmt.Sprint("k", (b>>5)&1)
		bk := ref[key]
		if bk == nil {
			bk = &domain.Bucket{}
			ref[key] = bk
		}
		id := fmt.Sprint("h", (b&3)%3)
		ttl := time.Duration((b>>2)%5) * p.Window / 3
		where := fmt.Sprintf("step %d (%v) key %s id %q", step/4, p.Rule(), key, id)
		var q domain.BucketHold
		switch op := op % 16; {
		case op < 2:
			cost := a % (p.Limit + 1)
			if p.Algorithm.HoldsOnly() {
				cost = 0
			}
			r := domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule(), Cost: cost}
			if op == 1 && b&0x10 != 0 {
				// A non-atomic batch of two checks of the key (its second pair of a token bucket's lags, the
				// batch's phase 2 when the first admits): decided in order, as two Decides.
				r2 := r
				r2.Cost = (a >> 4) % (p.Limit + 1)
				if p.Algorithm.HoldsOnly() {
					r2.Cost = 0
				}
				got, err := s.DecideBatch(ctx, []domain.BucketRequest{r, r2}, false)
				if err != nil {
					t.Fatal(err)
				}
				want := []domain.Decision{bk.Decide(now, r.Rule, r.Cost), bk.Decide(now, r2.Rule, r2.Cost)}
				if got[0] != want[0] || got[1] != want[1] {
					t.Fatalf("%s batch %d, %d:\n got %+v\nwant %+v", where, r.Cost, r2.Cost, got, want)
				}
				continue
			}
			got, err := s.Decide(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if want := bk.Decide(now, r.Rule, cost); got != want {
				t.Fatalf("%s check %d:\n got %+v\nwant %+v", where, cost, got, want)
			}
			continue
		case op < 6:
			amount := int64(1)
			if a&0x80 == 0 {
				amount = 1 + a%p.Limit
			}
			q = holdOp(p, key, domain.OpAcquire, id, amount, ttl)
			if b&0xc0 == 0xc0 {
				q.ID = "\x00" + id
			}
		case op < 10 || (op == 15 && a%4 != 0):
			q = holdOp(p, key, domain.OpSettle, id, a%(2*p.Limit+1), 0)
		case op < 12:
			q = holdOp(p, key, domain.OpRenew, id, 0, ttl)
		case op == 12:
			q = holdOp(p, key, domain.OpReleaseAnonymous, "", 1+a%3, 0)
		case op == 13:
			p.Limit = 1 + a%max(limit, 2)
			continue
		case op == 14:
			old := p
			if a&1 == 0 {
				p.Window = windows[(a>>1)%int64(len(windows))]
			} else if !p.Algorithm.HoldsOnly() {
				p.Algorithm = domain.WindowAlgorithms[(a>>1)%int64(len(domain.WindowAlgorithms))]
			}
			p.Resolution = 0
			p = p.WithDefaults()
			if p.Window != old.Window || p.Algorithm != old.Algorithm {
				p.Floor = domain.NextFloor(old, now)
			}
			continue
		default:
			p.Generation++
			p.Floor = 0
			continue
		}
		got, err := s.Hold(ctx, q)
		if err != nil {
			t.Fatalf("%s: Hold(%+v): %v", where, q, err)
		}
		if want := bk.ApplyHold(now, q); got != want {
			t.Fatalf("%s op %d amount %d ttl %s:\n got %+v\nwant %+v", where, q.Op, q.Cost, q.TTL, got, want)
		}
		seen[[2]uint8{uint8(q.Op), uint8(got.Status)}]++
		if got.Overdraft > 0 {
			seen[[2]uint8{uint8(q.Op), 100}]++
		}
	}
	return seen
}

func holdOp(p domain.Policy, key string, op domain.HoldOp, id string, amount int64, ttl time.Duration) domain.BucketHold {
	return domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule(), Cost: amount}, Op: op, ID: id, TTL: ttl}
}

// TestHoldsSameAsTheDomainStep: random hold programs on every algorithm, with changes of limit, window, algorithm
// and generation on the way (the conformance suite's hold model changes only the limit and the generation), give
// the same answers, every field, from the Postgres store as from domain.Bucket.ApplyHold and Decide.
func TestHoldsSameAsTheDomainStep(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	for _, alg := range domain.Algorithms {
		seen := map[[2]uint8]int{}
		for seed := range uint64(4) {
			t.Run(fmt.Sprint(alg, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(alg.Code())))
				prog := make([]byte, 4*400)
				for i := 0; i < len(prog); i += 8 {
					binary.LittleEndian.PutUint64(prog[i:], rng.Uint64())
				}
				for k, n := range holdProgram(t, s, clock, fmt.Sprint("model-", alg, seed), alg, int64(2+rng.IntN(7)), prog) {
					seen[k] += n
				}
			})
		}
		// What the programs must have reached on every algorithm for the comparison to mean something.
		want := map[string][2]uint8{
			"acquire": {uint8(domain.OpAcquire), uint8(domain.HoldOK)}, "acquire replayed": {uint8(domain.OpAcquire), uint8(domain.HoldReplayed)},
			"settle": {uint8(domain.OpSettle), uint8(domain.HoldOK)}, "settle expired": {uint8(domain.OpSettle), uint8(domain.HoldExpired)},
			"settle conflict": {uint8(domain.OpSettle), uint8(domain.HoldConflict)}, "renew": {uint8(domain.OpRenew), uint8(domain.HoldOK)},
			"settle overdraft": {uint8(domain.OpSettle), 100},
		}
		switch alg {
		case domain.TokenBucket: // a change of limit converts its holds (TestHoldsConverted covers every algorithm)
			want["settle converted"] = [2]uint8{uint8(domain.OpSettle), uint8(domain.HoldConverted)}
		case domain.Concurrency:
			want["anonymous release"] = [2]uint8{uint8(domain.OpReleaseAnonymous), uint8(domain.HoldOK)}
			delete(want, "settle conflict") // a settle of a released hold to more than 0 (TestHoldLeaks)
		case domain.FixedWindow:
			delete(want, "settle expired") // its windows end before most deadlines (the conformance model covers it)
		case domain.SlidingLog, domain.SlidingWindow: // every outcome of the common list
		}
		for what, k := range want {
			if seen[k] == 0 {
				t.Errorf("%s: no %s compared (%v)", alg, what, seen)
			}
		}
	}
}

var holdFuzzInputs atomic.Int64

// FuzzHolds is holdProgram on fuzzed programs: an algorithm, a limit and the program.
func FuzzHolds(f *testing.F) {
	f.Add(uint8(0), uint8(3), []byte{1, 2, 0, 2, 0, 1, 0, 6, 2, 2, 2, 2, 0, 0, 0, 9, 3, 9, 1, 11})
	f.Add(uint8(2), uint8(5), []byte{0, 4, 2, 3, 1, 3, 2, 7, 0, 1, 0, 0, 2, 1, 0, 12, 3, 2, 2, 6, 0, 3, 0, 13, 1, 9, 2, 7})
	f.Add(uint8(4), uint8(2), []byte{0, 1, 0x80, 2, 0, 1, 0x82, 2, 1, 1, 0, 11, 2, 0, 0, 0, 3, 0, 0x80, 2, 0, 1, 0, 15})
	f.Add(uint8(3), uint8(4), []byte{2, 4, 0, 2, 3, 1, 0, 14, 0, 6, 0, 7, 2, 2, 0, 13, 1, 1, 0, 8})
	f.Add(uint8(1), uint8(6), []byte{0, 3, 0x30, 4, 1, 2, 0x31, 5, 2, 0, 0x30, 6, 3, 9, 0x31, 7, 2, 1, 0x30, 9})
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	s := open(f, postgres.Options{Clock: clock})
	f.Fuzz(func(t *testing.T, alg8, limit8 uint8, prog []byte) {
		if len(prog) > 4*100 {
			prog = prog[:4*100]
		}
		alg := domain.Algorithms[int(alg8)%len(domain.Algorithms)]
		holdProgram(t, s, clock, fmt.Sprint("fuzz-holds-", holdFuzzInputs.Add(1)), alg, 1+int64(limit8%12), prog)
	})
}

// TestJanitorKeepsRowsWhoseHoldsMatter: the janitor deletes a key's row exactly when domain.Bucket.Empty says
// nothing in it can count (its state, and its hold records by the holdsKept rule), and drops from the rows it
// keeps the hold records that no longer matter, which then answer as the domain's pruned records do.
func TestJanitorKeepsRowsWhoseHoldsMatter(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	j, err := s.NewJanitor(postgres.JanitorOptions{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conc := domain.Policy{Name: "conc", Limit: 5, Window: time.Minute, Algorithm: domain.Concurrency}.WithDefaults()
	win := domain.Policy{Name: "win", Limit: 100, Window: time.Minute, Algorithm: domain.SlidingLog}.WithDefaults()
	tb := domain.Policy{Name: "tb", Limit: 100, Window: time.Minute, Algorithm: domain.TokenBucket}.WithDefaults()
	type key struct {
		p   domain.Policy
		key string
		b   *domain.Bucket
	}
	keys := []*key{
		{p: conc, key: "crashed"},  // a holder that never comes back: 20s TTL, kept until at + window
		{p: conc, key: "released"}, // released at once: kept until its deadline (a retried release answers the same)
		{p: conc, key: "renewed"},  // renewed past its window: kept until the new deadline
		{p: win, key: "settled"},   // a window key whose hold settles for less
		{p: tb, key: "open"},       // a token bucket whose tat passes long before the open hold's deadline
	}
	apply := func(k *key, op domain.HoldOp, id string, n int64, ttl time.Duration) {
		t.Helper()
		q := holdOp(k.p, k.key, op, id, n, ttl)
		got, err := s.Hold(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := k.b.ApplyHold(clock.Now().UnixMicro(), q); got != want {
			t.Fatalf("%s/%s: got %+v, want %+v", k.p.Name, k.key, got, want)
		}
	}
	for _, k := range keys {
		k.b = &domain.Bucket{}
	}
	apply(keys[0], domain.OpAcquire, "x", 2, 20*time.Second)
	apply(keys[1], domain.OpAcquire, "x", 1, 30*time.Second)
	apply(keys[1], domain.OpSettle, "x", 0, 0)
	apply(keys[2], domain.OpAcquire, "x", 1, 0)
	apply(keys[3], domain.OpAcquire, "x", 40, 10*time.Second)
	apply(keys[3], domain.OpSettle, "x", 10, 0)
	apply(keys[4], domain.OpAcquire, "x", 1, 50*time.Second)
	var deleted int64
	for _, at := range []time.Duration{0, 10 * time.Second, 20*time.Second - time.Microsecond, 20 * time.Second,
		30 * time.Second, 50 * time.Second, 60*time.Second - time.Microsecond, 60 * time.Second,
		110*time.Second - time.Microsecond, 110 * time.Second} {
		clock.Set(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(at))
		now := clock.Now().UnixMicro()
		if at == 50*time.Second {
			apply(keys[2], domain.OpRenew, "x", 0, time.Minute) // deadline now + 60s = 110s after the start
		}
		res, err := j.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted += res.Deleted
		for _, k := range keys {
			kept := count(t, s, "policy = $1 AND key = $2", k.p.Name, []byte(k.key)) == 1
			if want := !k.b.Empty(now, k.p.Window); kept != want {
				t.Fatalf("at +%s %s/%s: row kept %v, domain.Bucket.Empty says kept %v", at, k.p.Name, k.key, kept, want)
			}
		}
	}
	if deleted != int64(len(keys)) {
		t.Fatalf("%d rows deleted over the sweeps, want %d", deleted, len(keys))
	}

	// Pruning: a window key that still counts (an hour) keeps its row; its settled hold's record is dropped once
	// past its deadline, and a retried settle then answers as the domain's pruned record does (unknown).
	hour := domain.Policy{Name: "hour", Limit: 100, Window: time.Hour, Algorithm: domain.SlidingLog}.WithDefaults()
	k := &key{p: hour, key: "k", b: &domain.Bucket{}}
	apply(k, domain.OpAcquire, "x", 30, 10*time.Second)
	apply(k, domain.OpSettle, "x", 20, 0)
	if res, err := j.Sweep(ctx); err != nil || res.Pruned != 0 {
		t.Fatalf("before the deadline: %+v, %v", res, err)
	}
	clock.Advance(10 * time.Second)
	if res, err := j.Sweep(ctx); err != nil || res.Pruned != 1 || res.Deleted != 0 {
		t.Fatalf("at the deadline: %+v, %v (want the record pruned, the row kept)", res, err)
	}
	if n := count(t, s, "policy = 'hour' AND cardinality(holds) = 0"); n != 1 {
		t.Fatalf("the row's records were not dropped (%d rows without records)", n)
	}
	apply(k, domain.OpSettle, "x", 20, 0)
}

// TestConcurrencyAcrossConnections: holders on three stores (three pools: many connections, as replicas would
// have) race for one concurrency key with the database clock; each counts itself in while it holds its unit, so
// the count can never exceed what the database holds: it never exceeds the limit, and every unit is back after
// the last release.
func TestConcurrencyAcrossConnections(t *testing.T) {
	url := pgtest.NewDatabase(t)
	stores := []*postgres.Store{open(t, postgres.Options{URL: url}), open(t, postgres.Options{URL: url}), open(t, postgres.Options{URL: url})}
	ctx := context.Background()
	p := domain.Policy{Name: "streams", Limit: 4, Window: time.Hour, Algorithm: domain.Concurrency}.WithDefaults()
	const workers, tries = 18, 12
	var in, most, admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			for i := range tries {
				id := fmt.Sprintf("w%d-%d", w, i)
				hd, err := s.Hold(ctx, holdOp(p, "tenant", domain.OpAcquire, id, 1, 0))
				if err != nil {
					errs <- err
					return
				}
				if !hd.Allowed {
					continue
				}
				admitted.Add(1)
				n := in.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				in.Add(-1)
				if hd, err := s.Hold(ctx, holdOp(p, "tenant", domain.OpSettle, id, 0, 0)); err != nil || hd.Status != domain.HoldOK {
					errs <- fmt.Errorf("release %s: %+v %v", id, hd, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most.Load() > p.Limit {
		t.Fatalf("%d held at once, limit %d", most.Load(), p.Limit)
	}
	if admitted.Load() < p.Limit {
		t.Fatalf("only %d acquisitions admitted: the test proves little", admitted.Load())
	}
	for _, s := range stores {
		d, err := s.Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "tenant", Rule: p.Rule()})
		if err != nil || d.Remaining != p.Limit-1 || !d.Allowed {
			t.Fatalf("after every release a peek reports %+v, %v; want remaining %d", d, err, p.Limit-1)
		}
	}
}

// TestHoldsConverted: a hold whose units a change of algorithm (or of a token bucket's rate, or a fixed window's
// window) converted gives nothing back (HoldConverted) and records an excess at now under the rule in force, the
// same on the store as on domain.Bucket, for every pair of window algorithms.
func TestHoldsConverted(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	for _, from := range domain.WindowAlgorithms {
		for _, to := range domain.WindowAlgorithms {
			t.Run(fmt.Sprint(from, "-", to), func(t *testing.T) {
				p := domain.Policy{Name: fmt.Sprint("conv-", from, "-", to), Algorithm: from, Limit: 10, Window: 10 * time.Second}.WithDefaults()
				b := &domain.Bucket{}
				both := func(what string, q domain.BucketHold) domain.HoldDecision {
					t.Helper()
					got, err := s.Hold(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if want := b.ApplyHold(clock.Now().UnixMicro(), q); got != want {
						t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
					}
					return got
				}
				check := func(cost int64) {
					t.Helper()
					r := domain.BucketRequest{Policy: p.Name, Key: "k", Rule: p.Rule(), Cost: cost}
					got, err := s.Decide(ctx, r)
					if err != nil {
						t.Fatal(err)
					}
					if want := b.Decide(clock.Now().UnixMicro(), r.Rule, cost); got != want {
						t.Fatalf("check %d: got %+v, want %+v", cost, got, want)
					}
				}
				both("acquire a", holdOp(p, "k", domain.OpAcquire, "a", 4, 0))
				both("acquire b", holdOp(p, "k", domain.OpAcquire, "b", 3, 0))
				clock.Advance(time.Second)
				old := p
				if from == to {
					p.Limit = 12 // converts a token bucket's holds; the others' stay current
				} else {
					p.Algorithm = to
					p.Resolution = 0
					p = p.WithDefaults()
					p.Floor = domain.NextFloor(old, clock.Now().UnixMicro())
				}
				check(1) // an admission converts the state
				clock.Advance(time.Second)
				less := both("settle a for less", holdOp(p, "k", domain.OpSettle, "a", 1, 0))
				if from != to || from == domain.TokenBucket {
					if less.Status != domain.HoldConverted {
						t.Fatalf("settle for less after a conversion: %+v", less)
					}
				}
				both("settle b for more", holdOp(p, "k", domain.OpSettle, "b", 9, 0))
				check(0)
				both("settle a again", holdOp(p, "k", domain.OpSettle, "a", 1, 0))
				both("acquire c", holdOp(p, "k", domain.OpAcquire, "c", 1, 0))
				check(0)
			})
		}
	}
}

// TestStoredConcurrencyPolicy: an API policy of algorithm concurrency is stored, and holds and peeks sent with a
// provisional rule (BucketRequest.Stored: another replica created the policy) are decided under the stored one:
// its units held, a check of cost 1 refused, an acquire over its limit StatusCostOverLimit, and once it is deleted
// StatusPolicyNotFound, as Decide answers.
func TestStoredConcurrencyPolicy(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	p := domain.Policy{Name: "api-conc", Limit: 3, Window: time.Minute, Algorithm: domain.Concurrency}.WithDefaults()
	if _, err := s.PutPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPolicy(ctx, p.Name)
	if err != nil || got.Algorithm != domain.Concurrency || got.Limit != 3 {
		t.Fatalf("stored policy: %+v, %v", got, err)
	}
	provisional := domain.BucketRequest{Policy: p.Name, Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1000, Window: time.Second}, Stored: true}
	hold := func(op domain.HoldOp, id string, n int64) domain.HoldDecision {
		t.Helper()
		r := provisional
		r.Cost = n
		hd, err := s.Hold(ctx, domain.BucketHold{BucketRequest: r, Op: op, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return hd
	}
	if hd := hold(domain.OpAcquire, "a", 2); !hd.Allowed || hd.Status != domain.HoldOK || hd.Limit != 3 || hd.Remaining != 1 || hd.Hold.Expires != clock.Now().Add(time.Minute).UnixMicro() {
		t.Fatalf("acquire under the stored policy: %+v", hd)
	}
	if hd := hold(domain.OpAcquire, "b", 2); hd.Allowed {
		t.Fatalf("an acquire past the stored limit: %+v", hd)
	}
	if hd := hold(domain.OpAcquire, "c", 4); hd.Status != domain.HoldOK || hd.Decision.Status != domain.StatusCostOverLimit {
		t.Fatalf("an acquire over the stored limit: %+v", hd)
	}
	peek, err := s.Decide(ctx, provisional)
	if err != nil || !peek.Allowed || peek.Remaining != 0 || peek.Limit != 3 {
		t.Fatalf("a peek under the stored policy: %+v, %v (want 2 held of 3)", peek, err)
	}
	check := provisional
	check.Cost = 1
	if d, err := s.Decide(ctx, check); err != nil || d.Status != domain.StatusInvalidRule {
		t.Fatalf("a check of cost 1 under the stored concurrency policy: %+v, %v", d, err)
	}
	if hd := hold(domain.OpSettle, "a", 0); hd.Status != domain.HoldOK || hd.Remaining != 2 {
		t.Fatalf("release: %+v", hd)
	}
	if err := s.DeletePolicy(ctx, p.Name); err != nil {
		t.Fatal(err)
	}
	if hd := hold(domain.OpAcquire, "d", 1); hd.Decision.Status != domain.StatusPolicyNotFound || hd.Allowed {
		t.Fatalf("an acquire after the policy was deleted: %+v", hd)
	}
}

// TestDeniedAcquireTakesNoLock: an acquire the key's committed state denies is answered from a lock-free read (the
// row's xmin, xmax and ctid stay put), and a replayed settle or an unknown renewal (nothing to change) writes
// nothing (xmin and ctid stay).
func TestDeniedAcquireTakesNoLock(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	version := func(policy string) (v string) {
		t.Helper()
		if err := s.Pool().QueryRow(ctx, "SELECT xmin::text || '/' || xmax::text || '/' || ctid::text FROM sluice_buckets WHERE policy = $1", policy).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, alg := range domain.Algorithms {
		p := domain.Policy{Name: fmt.Sprint("nolock-", alg), Limit: 2, Window: time.Hour, Algorithm: alg}.WithDefaults()
		b := &domain.Bucket{}
		both := func(q domain.BucketHold) domain.HoldDecision {
			t.Helper()
			got, err := s.Hold(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if want := b.ApplyHold(clock.Now().UnixMicro(), q); got != want {
				t.Fatalf("%s %+v:\n got %+v\nwant %+v", alg, q, got, want)
			}
			return got
		}
		both(holdOp(p, "k", domain.OpAcquire, "a", 2, 0))
		both(holdOp(p, "k", domain.OpSettle, "a", 2, 0))
		before := version(p.Name)
		if hd := both(holdOp(p, "k", domain.OpAcquire, "b", 1, 0)); hd.Allowed {
			t.Fatalf("%s: an acquire past the limit: %+v", alg, hd)
		}
		if after := version(p.Name); after != before {
			t.Fatalf("%s: a denied acquire changed or locked the row: %s → %s", alg, before, after)
		}
		// A replay is decided under the row lock (xmax moves) but writes nothing (xmin and ctid stay).
		if hd := both(holdOp(p, "k", domain.OpSettle, "a", 2, 0)); hd.Status != domain.HoldReplayed && !alg.HoldsOnly() {
			t.Fatalf("%s: a repeated settle: %+v", alg, hd)
		}
		both(holdOp(p, "k", domain.OpRenew, "zz", 0, 0)) // unknown: nothing to change
		written := func(v string) string { x := strings.Split(v, "/"); return x[0] + "/" + x[2] }
		if after := version(p.Name); written(after) != written(before) {
			t.Fatalf("%s: a replay wrote the row: %s → %s", alg, before, after)
		}
	}
}

package redis_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// replica is one sluice replica: its own client, policy copy and Limiter on a Redis shared with the others.
type replica struct {
	s   *redis.Store
	p   *redis.Policies
	svc *domain.Service
}

// replicas starts n replicas on addrs with one key prefix, on a single Redis through the coalescer's lanes. Their refresh interval is long (a minute), so a
// replica's copy moves only by invalidation messages and its own writes: the store, not the refresher, must make
// a change bind.
func replicas(t *testing.T, addrs []string, n int) []*replica {
	t.Helper()
	prefix := redistest.Prefix()
	var rs []*replica
	for range n {
		s, err := redis.Open(context.Background(), redis.Options{Addrs: addrs, Prefix: prefix, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		p := s.NewPolicies(redis.PolicyOptions{Refresh: time.Minute})
		t.Cleanup(func() { p.Close(); s.Close() })
		var store domain.BucketStore = s
		if !s.Cluster() { // as `sluice serve` runs it on a single Redis (app/redis.go)
			store = coalesce.New(s, coalesce.Options{Lanes: 2, MaxBatch: 64})
		}
		svc, err := domain.NewService(nil, p, store, nil, domain.SystemClock{})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &replica{s: s, p: p, svc: svc})
	}
	for _, r := range rs { // each has loaded the (empty) policies once
		seenNamed(t, r.p, "none", 10*time.Second, func(_ domain.Policy, err error) bool { return errors.Is(err, domain.ErrPolicyNotFound) })
	}
	// Each is subscribed to the invalidations (the subscription is made in the background; with a refresh of a
	// minute, a change published before it would reach that replica only a minute later): a probe policy changed
	// through the first replica until every replica sees the change within a second, then deleted alike.
	ctx := context.Background()
	for try := int64(1); ; try++ {
		if _, err := rs[0].p.PutPolicy(ctx, domain.Policy{Name: "subscribed", Limit: try, Window: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if seenByAll(rs, func(p domain.Policy, err error) bool { return err == nil && p.Limit == try }) {
			break
		}
		if try == 30 {
			t.Fatal("replicas never saw a change through their subscription")
		}
	}
	if err := rs[0].p.DeletePolicy(ctx, "subscribed"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		seenNamed(t, r.p, "subscribed", 10*time.Second, func(_ domain.Policy, err error) bool { return errors.Is(err, domain.ErrPolicyNotFound) })
	}
	return rs
}

// seenByAll reports whether every replica's copy satisfies ok for the probe policy within a second.
func seenByAll(rs []*replica, ok func(domain.Policy, error) bool) bool {
	deadline := time.Now().Add(time.Second)
	for _, r := range rs {
		for !ok(r.p.GetPolicy(context.Background(), "subscribed")) {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond) // another replica's copy, which real time updates
		}
	}
	return true
}

// check sends one check through the replica's Limiter and reports whether it was admitted; a policy the store
// does not hold is an error.
func (r *replica) check(t *testing.T, policy, key string) (bool, error) {
	t.Helper()
	res, err := r.svc.Check(context.Background(), domain.CheckRequest{Policy: policy, Key: key, Cost: 1})
	if err != nil {
		return false, err
	}
	return res.Allowed, nil
}

// concurrent sends n checks of key at once through the replicas picked by pick(i) and returns how many were
// admitted.
func concurrent(t *testing.T, n int, pick func(i int) *replica, policy, key string) int {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := pick(i).check(t, policy, key)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("check: %v", err)
	}
	return int(admitted.Load())
}

// holds waits until r's copy holds policy with limit (it arrives by an invalidation message).
func holds(t *testing.T, r *replica, policy string, limit int64) {
	t.Helper()
	seenNamed(t, r.p, policy, 30*time.Second, func(p domain.Policy, err error) bool { return err == nil && p.Limit == limit })
}

func put(t *testing.T, r *replica, name string, limit int64) {
	t.Helper()
	if _, err := r.p.PutPolicy(context.Background(), domain.Policy{Name: name, Limit: limit, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
}

// lifecycleTargets are a private single Redis and a private cluster (the tests flush them).
var lifecycleTargets = map[string]func(testing.TB) ([]string, func(*testing.T)){
	"single": func(t testing.TB) ([]string, func(*testing.T)) {
		srv := redistest.StartServer(t)
		return []string{srv.Addr}, func(t *testing.T) { flush(t, []string{srv.Addr}) }
	},
	"cluster": func(t testing.TB) ([]string, func(*testing.T)) {
		c := redistest.StartCluster(t)
		return c.Addrs(), func(t *testing.T) { flush(t, c.Addrs()) }
	},
}

// flush empties every node (FLUSHALL on each master; replicas follow): Redis lost its data.
func flush(t *testing.T, addrs []string) {
	t.Helper()
	s, err := redis.Open(context.Background(), redis.Options{Addrs: addrs[:1], Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range s.Client().Nodes() {
		role, err := n.Do(context.Background(), n.B().Role().Build()).ToArray()
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := role[0].ToString(); r != "master" {
			continue
		}
		if err := n.Do(context.Background(), n.B().Flushall().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 22, finding 1: a change made through one replica binds every other replica at its next decision, on one
// Redis and on a cluster: a lowered limit (10 → 3) binds checks sent the moment PutPolicy returns; a policy
// deleted and re-created is never over its limit with checks alternating between a replica that holds the new
// generation and one that may still hold the old, and the stale one never drops the new generation's state.
func TestPolicyChangeBindsAtNextDecision(t *testing.T) {
	for name, start := range lifecycleTargets {
		t.Run(name, func(t *testing.T) {
			addrs, _ := start(t)
			rs := replicas(t, addrs, 3)
			a, b := rs[0], rs[1]
			const tries = 5
			for try := range tries {
				pol := "lower" + strconv.Itoa(try)
				put(t, a, pol, 10)
				holds(t, b, pol, 10)
				if _, err := b.check(t, pol, "warm"); err != nil { // B holds and uses it
					t.Fatal(err)
				}
				put(t, a, pol, 3)
				if n := concurrent(t, 10, func(int) *replica { return b }, pol, "fresh"); n > 3 {
					t.Errorf("try %d: %d of 10 admitted through B right after the limit was lowered to 3 through A", try, n)
				}
			}
			for try := range tries {
				pol := "again" + strconv.Itoa(try)
				put(t, a, pol, 3)
				holds(t, b, pol, 3)
				if _, err := b.check(t, pol, "warm"); err != nil {
					t.Fatal(err)
				}
				if err := a.p.DeletePolicy(context.Background(), pol); err != nil {
					t.Fatal(err)
				}
				put(t, a, pol, 3) // A holds the new generation; B may hold the old one
				if n := concurrent(t, 10, func(i int) *replica { return rs[i%2] }, pol, "k"); n > 3 {
					t.Errorf("try %d: %d admitted against a limit of 3, checks alternating between the new and the old generation", try, n)
				}
				// The new generation's units are still there: nothing more is admitted, through any replica.
				for _, r := range rs {
					if ok, err := r.check(t, pol, "k"); err != nil || ok {
						t.Errorf("try %d: a further check admitted (%v %v): a stale replica dropped the new generation's state", try, ok, err)
					}
				}
			}
		})
	}
}

// Issue 22, finding 2: after Redis loses its data (FLUSHALL, a restart without persistence, a failover to a
// replica that lagged), changes made afterwards bind every replica: a policy created afterwards is found on
// every replica, and a lowered limit binds; the replicas notice the loss and count it.
func TestPolicyChangesAfterDataLoss(t *testing.T) {
	for name, start := range lifecycleTargets {
		t.Run(name, func(t *testing.T) {
			addrs, lose := start(t)
			rs := replicas(t, addrs, 3)
			a, b := rs[0], rs[1]
			for i := range 30 { // some changes, so the version counter is well above 0
				put(t, a, "p", int64(3+i%5))
			}
			put(t, a, "p", 3)
			for _, r := range rs {
				if _, err := r.check(t, "p", "warm"); err != nil {
					t.Fatal(err)
				}
			}
			lose(t)
			put(t, a, "created", 5)
			for i, r := range rs {
				if _, err := r.check(t, "created", "k"+strconv.Itoa(i)); err != nil {
					t.Errorf("replica %d: a policy created after the loss: %v", i, err)
				}
			}
			put(t, a, "p", 1)
			if n := concurrent(t, 6, func(i int) *replica { return rs[1+i%2] }, "p", "fresh"); n > 1 {
				t.Errorf("%d admitted through B and C after the limit was lowered to 1 (after the loss)", n)
			}
			if ok, err := b.check(t, "p", "fresh"); err != nil || ok {
				t.Errorf("a further check through B: %v %v", ok, err)
			}
			var changes int64
			for _, r := range rs {
				changes += r.s.PolicyEpochChanges()
			}
			if changes == 0 {
				t.Errorf("no replica counted the loss (PolicyEpochChanges)")
			}
		})
	}
}

// A stored check is answered with the store's policy, as on Postgres: a policy deleted through another replica is
// StatusPolicyNotFound (domain.ErrPolicyNotFound from the Limiter), a cost above a limit lowered through another
// replica StatusCostOverLimit (a validation error), and an atomic batch holding either records nothing.
func TestStoredCheckStatuses(t *testing.T) {
	for name, start := range lifecycleTargets {
		if name == "cluster" && testing.Short() {
			continue
		}
		t.Run(name, func(t *testing.T) {
			addrs, _ := start(t)
			rs := replicas(t, addrs, 2)
			a, b := rs[0], rs[1]
			ctx := context.Background()
			put(t, a, "p", 5)
			holds(t, b, "p", 5)
			put(t, a, "p", 2)
			// B may still hold limit 5: the store answers with 2.
			_, err := b.svc.Check(ctx, domain.CheckRequest{Policy: "p", Key: "k", Cost: 3})
			var v *domain.ValidationError
			if !errors.As(err, &v) {
				t.Fatalf("cost 3 against a limit lowered to 2 through A: %v, want a validation error", err)
			}
			put(t, a, "q", 5)
			_, ok, err := b.svc.CheckMany(ctx, []domain.CheckRequest{{Policy: "q", Key: "k", Cost: 1}, {Policy: "p", Key: "k", Cost: 3}}, true)
			if !errors.As(err, &v) || ok {
				t.Fatalf("an atomic batch with a cost over the limit in force: %v %v", ok, err)
			}
			if n := concurrent(t, 5, func(int) *replica { return a }, "q", "k"); n != 5 {
				t.Fatalf("q/k admitted %d of 5 afterwards: the refused atomic batch recorded units", n)
			}
			if err := a.p.DeletePolicy(ctx, "p"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.check(t, "p", "k"); !errors.Is(err, domain.ErrPolicyNotFound) {
				t.Fatalf("a check through B of a policy deleted through A: %v, want not found", err)
			}
		})
	}
}

// Issue 22, finding 1 under load: clients check through all three replicas while A lowers the limit 20 → 4; every
// check sent after PutPolicy returns decides with 4, so a key first checked then admits at most 4 however many
// replicas and clients check it.
func TestLoweredLimitBindsUnderLoad(t *testing.T) {
	for name, start := range lifecycleTargets {
		t.Run(name, func(t *testing.T) {
			addrs, _ := start(t)
			rs := replicas(t, addrs, 3)
			for try := range 3 {
				pol := "load" + strconv.Itoa(try)
				put(t, rs[0], pol, 20)
				for _, r := range rs {
					holds(t, r, pol, 20)
				}
				var lowered atomic.Bool
				var after atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, 12)
				for c := range 12 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rs[c%3]
						done := 0
						for i := 0; done < 5; i++ {
							key := "before" + strconv.Itoa(i%7)
							if lowered.Load() {
								key = "after"
								done++
							}
							ok, err := r.check(t, pol, key)
							if err != nil {
								errs <- err
								return
							}
							if ok && key == "after" {
								after.Add(1)
							}
						}
					}()
				}
				put(t, rs[0], pol, 4)
				lowered.Store(true)
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				if n := after.Load(); n > 4 {
					t.Errorf("try %d: %d of 60 checks admitted after the limit was lowered 20 → 4", try, n)
				}
			}
		})
	}
}

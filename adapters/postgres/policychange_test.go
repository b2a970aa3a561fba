package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// replicaSet is three replicas in one process: each its own pool, policy cache and Limiter, on the production
// path (the coalescer's lanes over the store), deciding with one shared test clock so windows move without
// sleeping. The caches are never refreshed during the test (a one-hour refresh), so whatever binds a change
// on the other replicas is the database, not a reload.
type replicaSet struct {
	stores []*postgres.Store
	lims   []domain.Limiter
	clock  *clocktest.Clock
}

func newReplicaSet(t *testing.T) *replicaSet {
	t.Helper()
	url := pgtest.NewDatabase(t)
	rs := &replicaSet{clock: clocktest.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))}
	for range 3 {
		s := open(t, postgres.Options{URL: url, Clock: rs.clock, MaxConns: 6, PolicyRefresh: time.Hour})
		lim, err := domain.NewService(nil, s, coalesce.New(s, coalesce.Options{Lanes: 2}), nil, rs.clock)
		if err != nil {
			t.Fatal(err)
		}
		rs.stores, rs.lims = append(rs.stores, s), append(rs.lims, lim)
	}
	// Each replica has loaded the (empty) policy list once, as at start-up.
	for _, s := range rs.stores {
		if err := s.RefreshPolicies(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// load sends n checks of (policy, key) from 32 goroutines spread over replicas 1 and 2 and returns how many
// were admitted and how many failed with err (every other outcome fails the test).
func (rs *replicaSet) load(t *testing.T, policy, key string, n int, wantErr error) (admitted, refused int64) {
	t.Helper()
	var a, r atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lim := rs.lims[1+g%2]
			for next.Add(1) <= int64(n) {
				res, err := lim.Check(context.Background(), domain.CheckRequest{Policy: policy, Key: key, Cost: 1})
				switch {
				case err == nil && res.Allowed:
					a.Add(1)
				case err == nil:
				case wantErr != nil && errors.Is(err, wantErr):
					r.Add(1)
				default:
					t.Errorf("check %s/%s: %v", policy, key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return a.Load(), r.Load()
}

func (rs *replicaSet) put(t *testing.T, p domain.Policy) {
	t.Helper()
	if _, _, err := rs.lims[0].PutPolicy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// A policy lowered, raised, deleted and re-created on one replica binds the other two at their next decision,
// under load, though their caches still hold the old policy: no key is ever admitted past the limit in force,
// and a re-created policy never counts the deleted one's keys (issue 11, finding 1).
func TestPolicyChangesBindEveryReplicaAtOnce(t *testing.T) {
	for _, alg := range domain.WindowAlgorithms { // checks of cost > 0: concurrency takes holds (holds_test.go)
		t.Run(string(alg), func(t *testing.T) {
			rs := newReplicaSet(t)
			p := domain.Policy{Name: "p", Limit: 10, Window: time.Hour, Algorithm: alg}
			// Created on replica 0: the others have never heard of it, and decide at once.
			rs.put(t, p)
			if got, _ := rs.load(t, "p", "k1", 60, nil); got != 10 {
				t.Fatalf("created: admitted %d, want 10", got)
			}
			// Lowered to 4: k1 (10 units) gets nothing; a fresh key gets exactly 4, though the caches say 10.
			p.Limit = 4
			rs.put(t, p)
			if got, _ := rs.load(t, "p", "k1", 40, nil); got != 0 {
				t.Fatalf("lowered: k1 admitted %d, want 0", got)
			}
			if got, _ := rs.load(t, "p", "k2", 40, nil); got != 4 {
				t.Fatalf("lowered: k2 admitted %d, want 4", got)
			}
			// Raised to 15: each key gets what is left under the new limit, on every algorithm (a token bucket's
			// units are kept as units, counted under the limit and window that wrote them: conversion spec v2).
			p.Limit = 15
			rs.put(t, p)
			want1, want2 := int64(5), int64(11)
			if got, _ := rs.load(t, "p", "k1", 40, nil); got != want1 {
				t.Fatalf("raised: k1 admitted %d, want %d", got, want1)
			}
			if got, _ := rs.load(t, "p", "k2", 40, nil); got != want2 {
				t.Fatalf("raised: k2 admitted %d, want %d", got, want2)
			}
			// Deleted: the others answer "not found" at their next check, and record nothing.
			if err := rs.lims[0].DeletePolicy(context.Background(), "p"); err != nil {
				t.Fatal(err)
			}
			if got, refused := rs.load(t, "p", "k3", 40, domain.ErrPolicyNotFound); got != 0 || refused != 40 {
				t.Fatalf("deleted: admitted %d, refused %d of 40", got, refused)
			}
			// Re-created with limit 3: the old keys' units (15 on k1) do not count.
			p.Limit = 3
			rs.put(t, p)
			if got, _ := rs.load(t, "p", "k1", 40, nil); got != 3 {
				t.Fatalf("re-created: k1 admitted %d, want 3", got)
			}
		})
	}
}

// A grown window keeps the units still counting and never brings back those that had stopped, whatever the
// janitor does meanwhile (issue 11, finding 2), on every replica. A fixed window's units count until the window
// that admitted them ends (domain/fixedwindow.go), so there the janitor's sweep after that end changes nothing.
func TestGrownWindowKeepsHistoryThroughTheJanitor(t *testing.T) {
	rs := newReplicaSet(t)
	ctx := context.Background()
	j, err := rs.stores[0].NewJanitor(postgres.JanitorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []domain.Algorithm{domain.SlidingLog, domain.SlidingWindow, domain.FixedWindow} {
		name := fmt.Sprint("grow-", len(alg))
		p := domain.Policy{Name: name, Limit: 3, Window: 5 * time.Second, Algorithm: alg}
		if alg == domain.SlidingWindow {
			p.Resolution = time.Second
		}
		rs.put(t, p)
		if got, _ := rs.load(t, name, "stopped", 10, nil); got != 3 {
			t.Fatalf("%s: admitted %d, want 3", alg, got)
		}
		rs.clock.Advance(6 * time.Second) // "stopped"'s units have left the 5s window
		if got, _ := rs.load(t, name, "counting", 10, nil); got != 3 {
			t.Fatalf("%s: admitted %d, want 3", alg, got)
		}
		rs.clock.Advance(time.Second) // "counting"'s units still count (fixed_window: same 5s window)
		p.Window, p.Resolution = time.Hour, 0
		rs.put(t, p)
		rs.clock.Advance(30 * time.Second) // both keys are past the old window's expiry: the janitor runs
		if _, err := j.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		if alg == domain.FixedWindow {
			want = 3 // the 5s window that admitted them has ended
		}
		if got, _ := rs.load(t, name, "counting", 10, nil); got != want {
			t.Fatalf("%s: units counting when the window grew: %d admitted, want %d", alg, got, want)
		}
		if got, _ := rs.load(t, name, "stopped", 10, nil); got != 3 {
			t.Fatalf("%s: units that had stopped came back: %d admitted, want 3", alg, got)
		}
	}
}

// Denials and peeks take no row lock and write nothing on the production path (the coalescer's lanes, which
// send every check through the batch function), on every algorithm: the row's xmin/xmax/ctid stay put and
// pg_stat_user_tables counts no update (issue 11, finding 4).
func TestDenialsTakeNoLockOnTheLanes(t *testing.T) {
	rs := newReplicaSet(t)
	ctx := context.Background()
	s := rs.stores[0]
	for i, alg := range domain.WindowAlgorithms { // concurrency's units are taken by holds, not checks
		name := fmt.Sprint("nolock-", i)
		rs.put(t, domain.Policy{Name: name, Limit: 2, Window: time.Hour, Algorithm: alg})
		if got, _ := rs.load(t, name, "k", 2, nil); got != 2 {
			t.Fatalf("%s: admitted %d, want 2", alg, got)
		}
		version := func() (v string) {
			err := s.Pool().QueryRow(ctx, "SELECT xmin::text || '/' || xmax::text || '/' || ctid::text FROM sluice_buckets WHERE policy = $1", name).Scan(&v)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		updates := func() (n int64) {
			if _, err := s.Pool().Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
				t.Fatal(err)
			}
			err := s.Pool().QueryRow(ctx, "SELECT n_tup_upd + n_tup_ins + n_tup_del FROM pg_stat_user_tables WHERE relname = 'sluice_buckets'").Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		before, writes := version(), updates()
		if got, _ := rs.load(t, name, "k", 200, nil); got != 0 {
			t.Fatalf("%s: %d admitted past the limit", alg, got)
		}
		for _, lim := range rs.lims {
			if _, err := lim.Check(ctx, domain.CheckRequest{Policy: name, Key: "k", Cost: 0}); err != nil {
				t.Fatal(err)
			}
		}
		if after := version(); after != before {
			t.Fatalf("%s: denials and peeks locked or wrote the row: %s → %s", alg, before, after)
		}
		if after := updates(); after != writes {
			t.Fatalf("%s: denials and peeks wrote %d tuples", alg, after-writes)
		}
	}
}

// One bad check never fails another check of the same batch: a rule out of bounds (a limit of 2^63-1, which the
// domain refuses, sent straight to the store) is refused alone (issue 11, finding 3).
func TestOutOfBoundsCheckFailsAlone(t *testing.T) {
	s := open(t, postgres.Options{})
	ctx := context.Background()
	good := domain.BucketRequest{Policy: "p", Key: "k", Rule: domain.Rule{Algorithm: domain.TokenBucket, Limit: 5, Window: time.Hour}, Cost: 1}
	bad := good
	bad.Key, bad.Limit, bad.Cost = "huge", 1<<63-1, 1<<62
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{good, bad, good}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !ds[0].Allowed || ds[0].Status != domain.StatusOK || ds[2].Remaining != 3 || ds[1].Status == domain.StatusOK {
		t.Fatalf("decisions %+v", ds)
	}
	// Through the coalescer's lanes, as production sends unrelated checks together.
	c := coalesce.New(s, coalesce.Options{Lanes: 1})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := good
			if i%4 == 0 {
				r = bad
			}
			r.Key = fmt.Sprint(r.Key, i)
			d, err := c.Decide(ctx, r)
			if err != nil || (i%4 == 0) != (d.Status != domain.StatusOK) {
				t.Errorf("check %d: %+v, %v", i, d, err)
			}
		}()
	}
	wg.Wait()
}

// A check that read an older generation of its policy than the one its key's state was written under (the
// policy was deleted and re-created while the statement ran: the churn test's delete/re-create seam) is refused
// as not found and writes nothing: a deleted generation never resets or drops a newer one's state.
func TestStaleGenerationNeverOverwritesANewerOne(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	p := domain.Policy{Name: "p", Limit: 3, Window: time.Hour, Algorithm: domain.FixedWindow}.WithDefaults()
	if _, err := s.PutPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	stored, err := s.GetPolicy(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	newer := stored.Rule()
	newer.Generation = stored.Generation + 1_000
	for range 3 { // the newer generation's key is spent
		if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "k", Rule: newer, Cost: 1}); err != nil || !d.Allowed {
			t.Fatalf("newer generation: %+v %v", d, err)
		}
	}
	for _, atomic := range []bool{false, true} {
		ds, err := s.DecideBatch(ctx, []domain.BucketRequest{{Policy: "p", Key: "k", Rule: stored.Rule(), Cost: 1, Stored: true}}, atomic)
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Status != domain.StatusPolicyNotFound || ds[0].Allowed {
			t.Fatalf("atomic %v: a check of the older generation on the newer one's state: %+v", atomic, ds[0])
		}
	}
	if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "k", Rule: newer}); err != nil || d.Allowed || d.Remaining != 0 {
		t.Fatalf("the newer generation's state was reset by the older one: %+v %v", d, err)
	}
}

// DropPolicy (after a DELETE, called by the replica that deleted) keeps the keys of a generation created since
// through another replica: a delete and re-create racing on two replicas never resets the new generation.
func TestDropPolicyKeepsTheGenerationInForce(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	p := domain.Policy{Name: "p", Limit: 2, Window: time.Hour}.WithDefaults()
	if _, err := s.PutPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	old, _ := s.GetPolicy(ctx, "p")
	if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "old", Rule: old.Rule(), Cost: 1, Stored: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePolicy(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPolicy(ctx, p); err != nil { // re-created before the first replica drops the keys
		t.Fatal(err)
	}
	cur, _ := s.GetPolicy(ctx, "p")
	for range 2 {
		if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "new", Rule: cur.Rule(), Cost: 1, Stored: true}); err != nil || !d.Allowed {
			t.Fatalf("new generation: %+v %v", d, err)
		}
	}
	if err := s.DropPolicy(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "new", Rule: cur.Rule(), Cost: 1, Stored: true}); err != nil || d.Allowed {
		t.Fatalf("the late DropPolicy reset the new generation's key: %+v %v", d, err)
	}
}

package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
)

// TestApplyBatchOppositeOrdersDoNotDeadlock: two replicas (two pools on one database) send mixed batches of
// acquires, checks and settles over the same eight keys, one replica's in ascending key order and the other's in
// descending order, while a third stream sends DecideBatch over the keys in descending order. Every key's row is
// locked by each batch (acquires and admitting checks), so batches that locked in request order would deadlock
// (SQLSTATE 40P01, an error here) within a few rounds; sluice_apply_batch locks in the one byte order
// sluice_decide_batch uses. Every operation must succeed, and every unit must be counted once.
func TestApplyBatchOppositeOrdersDoNotDeadlock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	stores := []*postgres.Store{
		open(t, postgres.Options{URL: url, MaxConns: 4}),
		open(t, postgres.Options{URL: url, MaxConns: 4}),
	}
	ctx := context.Background()
	p := domain.Policy{Name: "orders", Limit: 1_000_000, Window: time.Hour, Algorithm: domain.SlidingLog}.WithDefaults()
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	const workers, rounds = 3, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers+1)
	for r, s := range stores {
		order := slices.Clone(keys)
		if r == 1 {
			slices.Reverse(order)
		}
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range rounds {
					var acquire, settle []domain.BucketHold
					for _, k := range order {
						id := fmt.Sprintf("r%d-w%d-%d", r, w, i)
						acquire = append(acquire, holdOp(p, k, domain.OpAcquire, id, 2, 0), holdOp(p, k, domain.OpCheck, "", 1, 0))
						settle = append(settle, holdOp(p, k, domain.OpCheck, "", 0, 0), holdOp(p, k, domain.OpSettle, id, 1, 0))
					}
					for _, batch := range [][]domain.BucketHold{acquire, settle} {
						hds, err := s.ApplyBatch(ctx, batch)
						if err != nil {
							errs <- fmt.Errorf("replica %d: %w", r, err)
							return
						}
						for j, hd := range hds {
							if hd.Status != domain.HoldOK || hd.Decision.Status != domain.StatusOK || (batch[j].Op != domain.OpSettle && !hd.Allowed) {
								errs <- fmt.Errorf("replica %d: op %d (%d on %s): %+v", r, j, batch[j].Op, batch[j].Key, hd)
								return
							}
						}
					}
				}
			}()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rs := make([]domain.BucketRequest, len(keys))
		for i, k := range keys {
			rs[len(keys)-1-i] = domain.BucketRequest{Policy: p.Name, Key: k, Rule: p.Rule(), Cost: 1}
		}
		for range 2 * rounds {
			if _, err := stores[1].DecideBatch(ctx, rs, false); err != nil {
				errs <- fmt.Errorf("decide batch: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Per key: each round of each worker of each replica kept 1 (the settle) + 1 (the check); the decide
	// batches 1 each.
	want := p.Limit - 1 - int64(2*workers*rounds*2+2*rounds)
	for _, k := range keys {
		d, err := stores[0].Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: k, Rule: p.Rule()})
		if err != nil {
			t.Fatal(err)
		}
		if d.Remaining != want {
			t.Fatalf("%s: a peek reports remaining %d, want %d", k, d.Remaining, want)
		}
	}
}

// TestBoundedApplyBatchGivesUpOnALockedRow: ApplyBatchBounded, facing a row another session holds locked, reports
// busy and records nothing, not even the acquire or check of the batch's unlocked key; once the lock is gone the
// same batch is applied.
func TestBoundedApplyBatchGivesUpOnALockedRow(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, postgres.Options{URL: url, MaxConns: 1, LockWait: 20 * time.Millisecond})
	ctx := context.Background()
	p := domain.Policy{Name: "p", Limit: 3, Window: time.Hour, Algorithm: domain.SlidingLog}.WithDefaults()
	if _, err := s.Decide(ctx, domain.BucketRequest{Policy: p.Name, Key: "locked", Rule: p.Rule(), Cost: 1}); err != nil {
		t.Fatal(err)
	}
	tx := lockRow(t, url, "locked")
	batch := []domain.BucketHold{
		holdOp(p, "free", domain.OpAcquire, "a", 1, 0),
		holdOp(p, "locked", domain.OpAcquire, "b", 1, 0),
		holdOp(p, "free", domain.OpCheck, "", 1, 0),
	}
	hds, busy, err := s.ApplyBatchBounded(ctx, batch)
	if err != nil || !busy || hds != nil {
		t.Fatalf("with a row locked: results %v, busy %v, err %v; want busy and nothing else", hds, busy, err)
	}
	var rows int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM sluice_buckets WHERE key = 'free'::bytea").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Fatal("a batch that gave up recorded its unlocked key")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	hds, busy, err = s.ApplyBatchBounded(ctx, batch)
	if err != nil || busy {
		t.Fatalf("after the lock is gone: busy %v, err %v", busy, err)
	}
	if got := [3]int64{hds[0].Remaining, hds[1].Remaining, hds[2].Remaining}; got != [3]int64{2, 1, 1} {
		t.Fatalf("remaining %v, want [2 1 1]", got)
	}
}

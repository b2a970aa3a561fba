package coalesce

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// TestConformancePostgres runs the conformance suite over the Postgres store wrapped by the coalescer in lane mode,
// as `sluice serve` wires it (key mode differs only in how checks are grouped, and is covered over the memory
// store). It skips without a database (fails under CI=true).
func TestConformancePostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		s, err := postgres.Open(context.Background(), postgres.Options{URL: pgtest.NewDatabase(t), Clock: clock, StatementTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return New(s, Options{Lanes: 4})
	})
}

func openPostgres(t *testing.T, o postgres.Options) *postgres.Store {
	t.Helper()
	if o.URL == "" {
		o.URL = pgtest.NewDatabase(t)
	}
	o.MaxConns = 8 // the shared test server has 100 connection slots for every test running at once
	s, err := postgres.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// recorded peeks key and reports the units it holds. A peek reports what a check of cost 1 would leave, so it is
// sent with a limit one higher than the key's: its remaining is then exactly limit minus the units held, even on
// a full key (sliding_log's state does not depend on the limit, and a peek records nothing).
func recorded(t *testing.T, s domain.BucketStore, key string, limit int64) int64 {
	t.Helper()
	d, err := s.Decide(context.Background(), req(key, limit+1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return limit - d.Remaining
}

// Many goroutines send atomic pairs over overlapping hot keys, half of them in the opposite key order, with single
// checks mixed in, through two lanes over Postgres: the pairs share statements (sluice_decide_groups), none
// deadlocks or fails, no key admits over its limit, and each pair is all-or-nothing: every key holds exactly the
// units of the pairs and checks that came back admitted.
func TestAtomicBatchesShareStatementsPostgres(t *testing.T) {
	const keys, limit, workers, tries = 4, 170, 16, 25
	pg := openPostgres(t, postgres.Options{Clock: clocktest.New(time.Unix(1_700_000_000, 0)), StatementTimeout: 10 * time.Second})
	s := New(pg, Options{Lanes: 2})
	key := func(i int) string { return fmt.Sprintf("k%d", i%keys) }
	admitted := make([][keys]int64, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				a, b := (w+i)%keys, (w+i+1)%keys
				if w%2 == 1 {
					a, b = b, a // the opposite order
				}
				if i%5 == 4 {
					d, err := s.Decide(context.Background(), req(key(a), limit, 1))
					if err != nil {
						errs <- err
						return
					}
					if d.Allowed {
						admitted[w][a]++
					}
					continue
				}
				ds, err := s.DecideBatch(context.Background(), []domain.BucketRequest{req(key(a), limit, 1), req(key(b), limit, 1)}, true)
				if err != nil {
					errs <- err
					return
				}
				if ds[0].Allowed && ds[1].Allowed {
					admitted[w][a]++
					admitted[w][b]++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var total int64
	for k := range keys {
		var want int64
		for w := range workers {
			want += admitted[w][k]
		}
		got := recorded(t, pg, key(k), limit)
		if got != want || got > limit {
			t.Errorf("%s holds %d units, the admitted pairs and checks took %d (limit %d)", key(k), got, want, limit)
		}
		total += got
	}
	if total == 0 {
		t.Fatal("nothing was admitted")
	}
	if s.Coalesced() <= s.Batches() {
		t.Fatalf("%d members in %d batches: no statement was shared", s.Coalesced(), s.Batches())
	}
	t.Logf("%d units admitted; %d members in %d shared statements", total, s.Coalesced(), s.Batches())
}

// sharedStatementFault makes a lane's statement wait on a row another session holds locked, queues atomic pairs
// and a single check behind it (so they go out together as one sluice_decide_groups statement), and lets fail
// end each statement as it waits (the first, the one in flight alone; then the shared one). Every caller must get
// an error, and nothing may be recorded for any of them; once the lock is gone, the same pairs are admitted.
func sharedStatementFault(t *testing.T, o postgres.Options, fail func(t *testing.T, pg *postgres.Store, statement int)) {
	const limit = 10
	o.Clock = clocktest.New(time.Unix(1_700_000_000, 0))
	pg := openPostgres(t, o)
	s := New(pg, Options{Lanes: 1})
	ctx := context.Background()
	if d, err := pg.Decide(ctx, req("x", limit, 1)); err != nil || !d.Allowed {
		t.Fatalf("first unit of x: %+v, %v", d, err)
	}
	tx, err := pg.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // released below; a second rollback is a no-op
	if _, err := tx.Exec(ctx, "SELECT 1 FROM sluice_buckets WHERE policy = 'p' AND key = 'x'::bytea FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		name string
		ds   []domain.Decision
		err  error
	}
	answers := make(chan answer, 5)
	send := func(name string, rs ...domain.BucketRequest) {
		go func() {
			if len(rs) == 1 {
				d, err := s.Decide(ctx, rs[0])
				answers <- answer{name, []domain.Decision{d}, err}
				return
			}
			ds, err := s.DecideBatch(ctx, rs, true)
			answers <- answer{name, ds, err}
		}()
	}
	pairs := map[string][]domain.BucketRequest{
		"a+x": {req("a", limit, 1), req("x", limit, 1)},
		"x+b": {req("x", limit, 1), req("b", limit, 1)},
		"c+x": {req("c", limit, 1), req("x", limit, 1)},
		"y+c": {req("y", limit, 1), req("c", limit, 1)},
	}
	send("a+x", pairs["a+x"]...)
	// a+x is in flight on the only lane (waiting for x): the others queue behind it.
	for queuedLane(s) < 0 {
		runtime.Gosched()
	}
	send("x+b", pairs["x+b"]...)
	send("c+x", pairs["c+x"]...)
	send("y+c", pairs["y+c"]...)
	send("d", req("d", limit, 1))
	waitQueued(t, s, "a", 4)
	fail(t, pg, 1)
	fail(t, pg, 2)
	for range 5 {
		a := <-answers
		if a.err == nil {
			t.Errorf("%s: %+v, want an error (its statement failed)", a.name, a.ds)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Coalesced() < 4 {
		t.Fatalf("%d members sent in shared statements, want the 4 queued", s.Coalesced())
	}
	for key, want := range map[string]int64{"x": 1, "a": 0, "b": 0, "c": 0, "d": 0, "y": 0} {
		if got := recorded(t, pg, key, limit); got != want {
			t.Errorf("after the failed statements %s holds %d units, want %d", key, got, want)
		}
	}
	for name, rs := range pairs {
		ds, err := s.DecideBatch(ctx, rs, true)
		if err != nil || !ds[0].Allowed || !ds[1].Allowed {
			t.Fatalf("%s once the lock is gone: %+v, %v", name, ds, err)
		}
	}
	for key, want := range map[string]int64{"x": 4, "a": 1, "b": 1, "c": 2, "y": 1} {
		if got := recorded(t, pg, key, limit); got != want {
			t.Errorf("%s holds %d units, want %d", key, got, want)
		}
	}
}

// queuedLane reports the members waiting on the single lane, or -1 when no call is in flight on it.
func queuedLane(s *Store) int {
	k, sh := s.queueOf("p", "a", false)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	q := sh.m[k]
	if q == nil {
		return -1
	}
	n := 0
	for _, b := range q.pending {
		n += b.live
	}
	return n
}

// A statement timeout in the middle of a shared statement (it waits for a locked row longer than the timeout,
// which is shorter than the lock wait): every caller gets an error, nothing is recorded for any.
func TestSharedStatementTimeoutPostgres(t *testing.T) {
	sharedStatementFault(t, postgres.Options{StatementTimeout: 2 * time.Second, LockWait: time.Minute},
		func(*testing.T, *postgres.Store, int) {}) // the timeout ends each statement by itself
}

// A backend killed (pg_terminate_backend) in the middle of a shared statement: every caller gets an error, nothing
// is recorded for any; the pool replaces the connection.
func TestSharedStatementKilledBackendPostgres(t *testing.T) {
	killed := []int32{} // not nil: pid <> ALL(NULL) matches nothing
	sharedStatementFault(t, postgres.Options{StatementTimeout: time.Minute, LockWait: time.Minute},
		func(t *testing.T, pg *postgres.Store, statement int) {
			ctx := context.Background()
			deadline := time.Now().Add(30 * time.Second)
			for {
				var pid int32
				err := pg.Pool().QueryRow(ctx, `SELECT pid FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%sluice_decide_groups%'
					  AND pid <> ALL($1::int[]) LIMIT 1`, killed).Scan(&pid)
				if errors.Is(err, pgx.ErrNoRows) && time.Now().Before(deadline) {
					runtime.Gosched()
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if _, err := pg.Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
					t.Fatal(err)
				}
				killed = append(killed, pid)
				t.Logf("statement %d: terminated backend %d", statement, pid)
				return
			}
		})
}

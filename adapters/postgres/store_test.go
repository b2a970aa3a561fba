package postgres_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// open returns a store on a fresh database, closed when the test ends.
func open(t testing.TB, o postgres.Options) *postgres.Store {
	t.Helper()
	if o.URL == "" {
		o.URL = pgtest.NewDatabase(t)
	}
	if o.MaxConns == 0 {
		o.MaxConns = 8 // the shared test server has 100 connection slots for every test running at once
	}
	if o.StatementTimeout == 0 {
		// Generous: the race tests run 32 goroutines on a 16-connection pool under -race on small machines.
		o.StatementTimeout = 5 * time.Second
	}
	s, err := postgres.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return open(t, postgres.Options{Clock: clock})
	})
}

// With the database clock (no test clock): the suite's timed tests need a clock, but the concurrency ones do not.
func TestRaceOnDatabaseClock(t *testing.T) {
	s := open(t, postgres.Options{})
	ctx := context.Background()
	const limit, workers, tries = 40, 24, 5
	var admitted atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		go func() {
			var err error
			for range tries {
				var d domain.Decision
				d, err = s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "hot", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: limit, Window: time.Hour}, Cost: 1})
				if err != nil {
					break
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
			errs <- err
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := admitted.Load(); got != limit {
		t.Fatalf("admitted %d, want exactly %d", got, limit)
	}
}

// countingConn counts the writes a connection makes: pgx writes each query (Bind/Execute/Sync) in one write and
// then waits for the answer, so writes are round trips.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

type queryCounter struct {
	n           atomic.Int64
	policyLoads atomic.Int64 // queries of the store's background policy refresh, which shares the pool
}

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	if strings.Contains(d.SQL, "sluice_policies") {
		q.policyLoads.Add(1)
	}
	return ctx
}
func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestOneRoundTripPerDecision(t *testing.T) {
	var writes atomic.Int64
	queries := &queryCounter{}
	s := open(t, postgres.Options{
		MaxConns: 1,
		// The policy cache loads once at Open and then not again during the test: its queries share the one
		// connection and would count as the decisions' round trips.
		PolicyRefresh: time.Hour,
		ConfigurePool: func(c *pgxpool.Config) {
			c.ConnConfig.Tracer = queries
			dialer := &net.Dialer{}
			c.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dialer.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: conn, writes: &writes}, nil
			}
			// Under load connections are never idle for a second; make that so here, whatever the test's speed.
			c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		},
	})
	ctx := context.Background()
	req := func(key string, cost int64) domain.BucketRequest {
		return domain.BucketRequest{Policy: "rt", Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Minute}, Cost: cost}
	}
	// The store's initial policy load (started by Open) has begun before the warm-up, so it is over before the
	// counting starts: the warm-up's statements queue behind it for the one connection.
	for deadline := time.Now().Add(10 * time.Second); queries.policyLoads.Load() == 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the store never loaded its policies")
		}
	}
	// Warm up: the first use of each statement on a connection prepares it (one extra round trip, once).
	for _, c := range []int64{1, 0} {
		if _, err := s.Decide(ctx, req("warm", c)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DecideBatch(ctx, []domain.BucketRequest{req("warm", 1), req("warm2", 1)}, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DecideBatchBounded(ctx, []domain.BucketRequest{req("warm", 1)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		run  func() error
	}{
		{"admit a new key", func() error { _, err := s.Decide(ctx, req("k1", 1)); return err }},
		{"admit an existing key", func() error { _, err := s.Decide(ctx, req("k1", 4)); return err }},
		{"deny", func() error { _, err := s.Decide(ctx, req("k1", 1)); return err }},
		{"peek", func() error { _, err := s.Decide(ctx, req("k1", 0)); return err }},
		{"atomic batch of 3", func() error {
			_, err := s.DecideBatch(ctx, []domain.BucketRequest{req("a", 1), req("b", 1), req("a", 1)}, true)
			return err
		}},
		{"bounded batch of 3 (a coalescer lane)", func() error {
			_, _, err := s.DecideBatchBounded(ctx, []domain.BucketRequest{req("c", 1), req("d", 1), req("c", 1)})
			return err
		}},
	}
	for _, tc := range cases {
		w0, q0 := writes.Load(), queries.n.Load()
		if err := tc.run(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if w, q := writes.Load()-w0, queries.n.Load()-q0; w != 1 || q != 1 {
			t.Errorf("%s: %d round trips (%d queries), want 1", tc.name, w, q)
		}
	}
	// And over many decisions.
	const n = 200
	w0 := writes.Load()
	for i := range n {
		if _, err := s.Decide(ctx, req("many", int64(i%2))); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes.Load() - w0; w != n {
		t.Errorf("%d decisions took %d round trips", n, w)
	}
}

func TestDenialAndPeekWriteNothing(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	req := domain.BucketRequest{Policy: "p", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 2, Window: time.Minute}, Cost: 2}
	if _, err := s.Decide(ctx, req); err != nil {
		t.Fatal(err)
	}
	// xmin and ctid change with every write; xmax is set by a row lock (which a denial must not take either).
	version := func() (xmin string) {
		err := s.Pool().QueryRow(ctx, "SELECT xmin::text || '/' || xmax::text || '/' || ctid::text FROM sluice_buckets WHERE policy = 'p'").Scan(&xmin)
		if err != nil {
			t.Fatal(err)
		}
		return xmin
	}
	before := version()
	for _, cost := range []int64{1, 2, 0, 0} {
		clock.Advance(time.Second)
		req.Cost = cost
		d, err := s.Decide(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			t.Fatalf("cost %d admitted over the limit", cost)
		}
	}
	if after := version(); after != before {
		t.Fatalf("denials and peeks wrote the row: version %s → %s", before, after)
	}
	// A peek of an unknown key creates no row.
	req.Key, req.Cost = "unknown", 0
	if _, err := s.Decide(ctx, req); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM sluice_buckets").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d rows after a peek of an unknown key, want 1", rows)
	}
}

func TestAtomicBatchLeavesNoPlaceholders(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	ctx := context.Background()
	full := domain.BucketRequest{Policy: "daily", Key: "u", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1, Window: time.Hour}, Cost: 1}
	if _, err := s.Decide(ctx, full); err != nil {
		t.Fatal(err)
	}
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{
		{Policy: "burst", Key: "new", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Second}, Cost: 1}, full,
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !ds[0].Allowed || ds[1].Allowed {
		t.Fatalf("decisions %+v", ds)
	}
	var rows int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM sluice_buckets").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d rows after a rolled-back batch, want 1 (no placeholder left)", rows)
	}
	// A non-atomic batch whose only check for a new key is a peek leaves none either.
	if _, err := s.DecideBatch(ctx, []domain.BucketRequest{{Policy: "burst", Key: "peek", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Second}}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM sluice_buckets").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d rows after a peek batch, want 1", rows)
	}
}

// TestBoundedBatchGivesUpOnALockedRow: DecideBatchBounded, facing a row another session holds locked, reports
// busy (lock_timeout, well before the 5s statement timeout: busy comes only from SQLSTATE 55P03) and records
// nothing, not even for the batch's unlocked keys; the pooled connection's lock_timeout is untouched afterwards;
// once the lock is gone the same batch is decided.
func TestBoundedBatchGivesUpOnALockedRow(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, postgres.Options{URL: url, MaxConns: 1, LockWait: 20 * time.Millisecond})
	ctx := context.Background()
	req := func(key string) domain.BucketRequest {
		return domain.BucketRequest{Policy: "p", Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 3, Window: time.Hour}, Cost: 1}
	}
	if _, err := s.Decide(ctx, req("locked")); err != nil {
		t.Fatal(err)
	}
	tx := lockRow(t, url, "locked")
	batch := []domain.BucketRequest{req("free"), req("locked"), req("free")}
	ds, busy, err := s.DecideBatchBounded(ctx, batch)
	if err != nil || !busy || ds != nil {
		t.Fatalf("with a row locked: decisions %v, busy %v, err %v; want busy and nothing else", ds, busy, err)
	}
	var rows int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM sluice_buckets WHERE key = 'free'::bytea").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Fatal("a batch that gave up recorded its unlocked key")
	}
	var lockTimeout string
	if err := s.Pool().QueryRow(ctx, "SHOW lock_timeout").Scan(&lockTimeout); err != nil || lockTimeout != "0" {
		t.Fatalf("the pooled connection's lock_timeout is %q after the batch (err %v), want 0", lockTimeout, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	ds, busy, err = s.DecideBatchBounded(ctx, batch)
	if err != nil || busy {
		t.Fatalf("after the lock is gone: busy %v, err %v", busy, err)
	}
	if got := [3]int64{ds[0].Remaining, ds[1].Remaining, ds[2].Remaining}; got != [3]int64{2, 1, 1} {
		t.Fatalf("remaining %v, want [2 1 1]", got)
	}
}

// TestCallerGivingUpKeepsTheConnection: a caller that gives up while its statement waits (here for a row another
// session holds locked) gets its deadline error at once, but the statement keeps its connection until the server
// answers, and the connection stays in the pool: no new backend for the server to start, no pool slot held while
// a cancel request goes out. (pgx closes a connection whose query's context ends; that turned a database that was
// slow for a moment into a replica failing every check for 30s in TestPostgresKilledUnderLoad.) The statement
// whose caller left may still record its check, as any cancelled call may.
func TestCallerGivingUpKeepsTheConnection(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, postgres.Options{URL: url, MaxConns: 1})
	ctx := context.Background()
	req := domain.BucketRequest{Policy: "p", Key: "locked", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 3, Window: time.Hour}, Cost: 1}
	if _, err := s.Decide(ctx, req); err != nil {
		t.Fatal(err)
	}
	backend := func() (pid int32) {
		if err := s.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	before := backend()

	tx := lockRow(t, url, "locked")
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := s.Decide(cctx, req)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a caller whose deadline passed while the row was locked: err %v, want its deadline", err)
	}
	// The statement is still waiting for the lock; let it have it.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := s.Decide(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d.Remaining != 0 {
		t.Fatalf("remaining %d after the third check (the second, whose caller left, ran to its end), want 0", d.Remaining)
	}
	if after, n := backend(), s.Pool().Stat().NewConnsCount(); after != before || n != 1 {
		t.Fatalf("backend %d before, %d after; %d connections opened: the abandoned statement cost its connection", before, after, n)
	}
}

// lockRow holds the row of key locked in a transaction of its own session, until the caller rolls it back or the
// test ends.
func lockRow(t *testing.T, url, key string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(ctx) })
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM sluice_buckets WHERE key = $1 FOR UPDATE", []byte(key)); err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestPolicies(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := open(t, postgres.Options{URL: url, PolicyRefresh: 50 * time.Millisecond})
	b := open(t, postgres.Options{URL: url, PolicyRefresh: 50 * time.Millisecond})
	ctx := context.Background()
	p := domain.Policy{Name: "api-login", Limit: 5, Window: time.Minute, FailureMode: domain.FailAllow}
	created, err := a.PutPolicy(ctx, p)
	if err != nil || !created {
		t.Fatalf("PutPolicy: created %v, %v", created, err)
	}
	got, err := a.GetPolicy(ctx, "api-login")
	if err != nil || got.Limit != 5 || got.Window != time.Minute || got.FailureMode != domain.FailAllow || got.Algorithm != domain.SlidingLog || got.Source != domain.SourceAPI {
		t.Fatalf("GetPolicy on the writer: %+v, %v", got, err)
	}
	p.Limit = 7
	if created, err := a.PutPolicy(ctx, p); err != nil || created {
		t.Fatalf("replace: created %v, %v", created, err)
	}
	// The other replica sees the change within its refresh interval.
	waitFor(t, func() bool { got, err := b.GetPolicy(ctx, "api-login"); return err == nil && got.Limit == 7 })
	list, err := b.ListPolicies(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "api-login" {
		t.Fatalf("ListPolicies: %+v, %v", list, err)
	}
	if err := b.DeletePolicy(ctx, "api-login"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetPolicy(ctx, "api-login"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("GetPolicy after delete on the deleter: %v", err)
	}
	waitFor(t, func() bool { _, err := a.GetPolicy(ctx, "api-login"); return errors.Is(err, domain.ErrPolicyNotFound) })
	if err := a.DeletePolicy(ctx, "api-login"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestPingFailsWhenMigrationsAreBehind(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	s := open(t, postgres.Options{URL: url})
	ctx := context.Background()
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping on an unmigrated database succeeded")
	}
	if _, err := s.GetPolicy(ctx, "x"); err == nil || errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("GetPolicy before the policies could be loaded: %v, want a store error", err)
	}
	// Two migrators at once (as replicas starting together): the advisory lock makes one wait for the other.
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := postgres.Migrate(ctx, url, postgres.MigrateOptions{}); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after migrating: %v", err)
	}
	st, err := postgres.MigrationStatus(ctx, url, postgres.MigrateOptions{})
	if err != nil || len(st) == 0 {
		t.Fatalf("status: %v, %v", st, err)
	}
	for _, m := range st {
		if m.State != "applied" {
			t.Fatalf("migration %s: %s", m.Source.Path, m.State)
		}
	}
	if err := s.RefreshPolicies(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPolicy(ctx, "x"); !errors.Is(err, domain.ErrPolicyNotFound) {
		t.Fatalf("GetPolicy after migrating: %v, want not found", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyMeansPoliciesLoaded: once a Service over this store is ready, the API policies are known, so an
// unknown name is ErrPolicyNotFound, never "not loaded", though the start-up reload runs in the background and
// races the first probe; a replica that answered /readyz keeps its checks' failure_mode through a later outage
// from this copy.
func TestReadyMeansPoliciesLoaded(t *testing.T) {
	ctx := context.Background()
	for range 5 { // each round a fresh store, so the race with its first reload is run again
		s := open(t, postgres.Options{PolicyRefresh: time.Hour})
		svc, err := domain.NewService(nil, s, s, nil, domain.SystemClock{})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return svc.Ready(ctx) == nil })
		if _, err := s.GetPolicy(ctx, "never-created"); !errors.Is(err, domain.ErrPolicyNotFound) {
			t.Fatalf("GetPolicy once the Service is ready: %v, want ErrPolicyNotFound", err)
		}
	}
}

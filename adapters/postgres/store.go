// Package postgres is the PostgreSQL BucketStore and PolicyStore: any number of sluice replicas share one database
// and together never admit more than a policy's limit in any window.
//
// Every decision is one round trip: one call of the plpgsql function sluice_decide (migrations/00001_buckets.sql)
// through a prepared statement. The function reads the key's row, decides with the database's clock, and writes
// only when it admits; a peek or a denial writes nothing. The row lock, when one is taken, lasts only for that
// statement. Multi-checks are one call of sluice_decide_batch, which locks keys in byte order of (policy, key);
// DecideBatchBounded (for the coalescer's lanes) is the same with a short bound on waiting for another session's
// row lock.
//
// Each call has a statement timeout (set on every pooled connection) and a Go deadline slightly above it, so a
// database that is down or unreachable fails a check within about the timeout; the Limiter then applies the
// policy's failure_mode. The pool reconnects by itself when the database returns.
//
// A decision statement whose caller gives up (its deadline passed while it waited for a connection or for the
// answer) is not interrupted: it keeps its connection until the server answers, which its statement_timeout
// bounds. pgx would otherwise close the connection at once and hold its pool slot while it sends a cancel
// request (up to 15s), and a database that is slow for a moment (just restarted, or starved of CPU) then loses
// connections faster than the pool can replace them: every replacement is a new backend for the server to start,
// and a replica can fail every check for tens of seconds after the database is back (seen in
// TestPostgresKilledUnderLoad). Only a server that stays silent well past the timeout (hung, or cut off) has its
// connection closed.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-dev/sluice/adapters/postgres/internal/db"
	"github.com/sluice-dev/sluice/domain"
)

// Options configure a Store.
type Options struct {
	// URL is a libpq connection string or URL (postgres://user:pass@host:5432/db?sslmode=disable).
	URL string
	// MaxConns bounds the pool; ≤ 0 means 16.
	MaxConns int32
	// StatementTimeout bounds every statement of the decision path; ≤ 0 means 250ms. A call fails after about
	// this long even when the server cannot answer at all (a Go deadline of StatementTimeout plus a small margin).
	StatementTimeout time.Duration
	// ConnectTimeout bounds one connection attempt; ≤ 0 means 5s. Attempts continue in the background after the
	// check that started one gives up (at its statement deadline), and only a few are in flight at once (see
	// connectGate), so a generous bound costs checks nothing; a short one would abandon attempts that a busy
	// server (just restarted, say) has queued but not reached yet, leaving it dead connections to work through.
	ConnectTimeout time.Duration
	// LockWait bounds how long DecideBatchBounded waits for a row that another session holds locked; ≤ 0 means
	// an eighth of StatementTimeout, at least 5ms.
	LockWait time.Duration
	// PolicyRefresh is how often the API-policy cache is reloaded; ≤ 0 means 1s. A policy created, changed or
	// deleted through another replica is seen here within this interval; through this replica, at once.
	PolicyRefresh time.Duration
	// Clock is test-only: nil (production) means the database clock decides. With a clock, every statement is
	// given its instant instead, so tests can move time without sleeping.
	Clock domain.Clock
	// Logger receives the store's own log lines; nil discards them.
	Logger *slog.Logger
	// ConfigurePool is test-only: it may adjust the pool configuration before the pool is made (a tracer, a
	// dialer that counts round trips).
	ConfigurePool func(*pgxpool.Config)
}

// Store implements domain.BucketStore and domain.PolicyStore over a pgx pool. Safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	q        *db.Queries
	clock    domain.Clock
	timeout  time.Duration // statement timeout
	lockWait time.Duration // DecideBatchBounded's bound on a row lock wait
	deadline time.Duration // Go deadline per call: the statement timeout plus a margin
	orphan   time.Duration // Go deadline of a decision statement whose caller gave up (see run)
	log      *slog.Logger
	target   int64 // newest migration version this build knows

	policies policyCache
	stop     context.CancelFunc
	done     sync.WaitGroup
}

var (
	_ domain.BucketStore = (*Store)(nil)
	_ domain.PolicyStore = (*Store)(nil)
)

// Open makes the pool and starts the policy cache's refresher. It does not wait for the database: a database that
// is down makes checks fail (per failure_mode) until it answers, and Ping reports it.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = 250 * time.Millisecond
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.LockWait <= 0 {
		o.LockWait = max(o.StatementTimeout/8, 5*time.Millisecond)
	}
	if o.PolicyRefresh <= 0 {
		o.PolicyRefresh = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: database URL: %w", redactErr(err))
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	// The server cancels a statement after the timeout; the Go deadline (a little later) covers a server that
	// cannot answer at all.
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["application_name"] = "sluice"
	cfg.PingTimeout = o.StatementTimeout
	if o.ConfigurePool != nil {
		o.ConfigurePool(cfg)
	}
	newConnectGate(int(max(o.MaxConns/4, 2))).install(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	target, err := LatestVersion()
	if err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{
		pool:     pool,
		q:        db.New(pool),
		clock:    o.Clock,
		timeout:  o.StatementTimeout,
		lockWait: o.LockWait,
		deadline: o.StatementTimeout + max(50*time.Millisecond, o.StatementTimeout/10),
		orphan:   2*o.StatementTimeout + time.Second,
		log:      o.Logger,
		target:   target,
	}
	s.policies.init()
	rctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		s.refreshPolicies(rctx, o.PolicyRefresh)
	}()
	return s, nil
}

// Close stops the refresher and closes the pool.
func (s *Store) Close() {
	s.stop()
	s.done.Wait()
	s.pool.Close()
}

// Pool exposes the pool, for the janitor and for tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// call bounds one store call by the statement timeout plus a margin.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.deadline)
}

// run runs stmt, one statement of the decision path, on a pooled connection. The caller waits at most the call
// deadline (for the connection and for the answer); the statement is not interrupted when the caller gives up.
// It runs on until the server answers (the connection's statement_timeout ends it, with SQLSTATE 57014, and the
// connection stays in the pool) or, for a server that stays silent, until the orphan deadline, when pgx closes
// the connection. Results reach the caller only through what stmt stores before it returns, and the caller
// reads them only when run returns nil, so a statement that finishes after its caller left writes to variables
// nobody reads. As with any cancelled call, a statement whose caller gave up may still have recorded its checks.
func (s *Store) run(ctx context.Context, stmt func(context.Context, *db.Queries) error) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), s.orphan)
	go func() {
		defer scancel()
		err := stmt(sctx, db.New(conn))
		conn.Release()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// now is the instant passed to the functions: NULL (the database clock) unless a test clock is set.
func (s *Store) now() pgtype.Int8 {
	if s.clock == nil {
		return pgtype.Int8{}
	}
	return pgtype.Int8{Int64: s.clock.Now().UnixMicro(), Valid: true}
}

func micros(d time.Duration) int64 { return int64(d / time.Microsecond) }

func fromMicros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Decide implements domain.BucketStore in one round trip.
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	p := db.DecideParams{
		Policy:   r.Policy,
		Key:      []byte(r.Key),
		Lim:      r.Limit,
		WindowUs: micros(r.Window),
		Cost:     r.Cost,
		NowUs:    s.now(),
	}
	var row db.DecideRow
	err := s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.Decide(ctx, p)
		return err
	})
	if err != nil {
		return domain.Decision{}, s.fail("decide", err)
	}
	return domain.Decision{
		Allowed:    row.Allowed,
		Limit:      r.Limit,
		Remaining:  row.Remaining,
		ResetAfter: fromMicros(row.ResetAfterUs),
		RetryAfter: fromMicros(row.RetryAfterUs),
	}, nil
}

// DecideBatch implements domain.BucketStore in one round trip (see sluice_decide_batch).
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	a := s.batchArrays(rs)
	p := db.DecideBatchParams{
		Policies: a.policies, Keys: a.keys, Limits: a.limits, WindowsUs: a.windows, Costs: a.costs,
		Shadows: a.shadows, Atomic: atomic, NowUs: s.now(),
	}
	var row db.DecideBatchRow
	err := s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.DecideBatch(ctx, p)
		return err
	})
	if err != nil {
		return nil, s.fail("decide batch", err)
	}
	return decisions(rs, row.Allowed, row.Remaining, row.ResetAfterUs, row.RetryAfterUs)
}

// DecideBatchBounded is a non-atomic DecideBatch, in one round trip, that waits at most Options.LockWait for a
// row another session holds locked (sluice_decide_batch_bounded). When that wait runs out it returns busy = true
// and no error: nothing was recorded, and the caller may send the checks again, per key, with DecideBatch or
// Decide, which wait up to the statement timeout. adapters/coalesce sends its lanes' batches this way, so one
// locked or heavily contended key cannot hold the unrelated keys that share its batch.
func (s *Store) DecideBatchBounded(ctx context.Context, rs []domain.BucketRequest) (ds []domain.Decision, busy bool, err error) {
	if len(rs) == 0 {
		return nil, false, nil
	}
	a := s.batchArrays(rs)
	p := db.DecideBatchBoundedParams{
		Policies: a.policies, Keys: a.keys, Limits: a.limits, WindowsUs: a.windows, Costs: a.costs,
		Shadows: a.shadows, NowUs: s.now(), LockWaitMs: int32(max(s.lockWait.Milliseconds(), 1)),
	}
	var row db.DecideBatchBoundedRow
	err = s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.DecideBatchBounded(ctx, p)
		return err
	})
	if pgErrCode(err) == codeLockNotAvailable {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, s.fail("decide batch", err)
	}
	ds, err = decisions(rs, row.Allowed, row.Remaining, row.ResetAfterUs, row.RetryAfterUs)
	return ds, false, err
}

// batchArrays holds the checks of a batch as the column arrays the batch functions take.
type batchArrays struct {
	policies               []string
	keys                   [][]byte
	limits, windows, costs []int64
	shadows                []bool
}

func (s *Store) batchArrays(rs []domain.BucketRequest) batchArrays {
	a := batchArrays{
		policies: make([]string, len(rs)),
		keys:     make([][]byte, len(rs)),
		limits:   make([]int64, len(rs)),
		windows:  make([]int64, len(rs)),
		costs:    make([]int64, len(rs)),
		shadows:  make([]bool, len(rs)),
	}
	for i, r := range rs {
		a.policies[i], a.keys[i], a.limits[i] = r.Policy, []byte(r.Key), r.Limit
		a.windows[i], a.costs[i], a.shadows[i] = micros(r.Window), r.Cost, r.Shadow
	}
	return a
}

// decisions turns a batch function's result arrays (in request order) into decisions.
func decisions(rs []domain.BucketRequest, allowed []bool, remaining, resetAfterUs, retryAfterUs []int64) ([]domain.Decision, error) {
	if len(allowed) != len(rs) || len(remaining) != len(rs) || len(resetAfterUs) != len(rs) || len(retryAfterUs) != len(rs) {
		return nil, fmt.Errorf("postgres decide batch: %d results for %d checks", len(allowed), len(rs))
	}
	ds := make([]domain.Decision, len(rs))
	for i, r := range rs {
		ds[i] = domain.Decision{
			Allowed:    allowed[i],
			Limit:      r.Limit,
			Remaining:  remaining[i],
			ResetAfter: fromMicros(resetAfterUs[i]),
			RetryAfter: fromMicros(retryAfterUs[i]),
		}
	}
	return ds, nil
}

// Reset implements domain.BucketStore.
func (s *Store) Reset(ctx context.Context, policy, key string) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.q.ResetKey(ctx, db.ResetKeyParams{Policy: policy, Key: []byte(key)}); err != nil {
		return s.fail("reset", err)
	}
	return nil
}

// dropPage bounds each statement of DropPolicy, so a policy with many keys never needs one long statement.
const dropPage = 5000

// DropPolicy implements domain.BucketStore: it deletes the policy's keys in pages of dropPage, each statement
// under the statement timeout.
func (s *Store) DropPolicy(ctx context.Context, policy string) error {
	for {
		cctx, cancel := s.call(ctx)
		n, err := s.q.DropPolicyPage(cctx, db.DropPolicyPageParams{Policy: policy, PageSize: dropPage})
		cancel()
		if err != nil {
			return s.fail("drop policy", err)
		}
		if n < dropPage {
			return nil
		}
	}
}

// Ping implements domain.BucketStore for /readyz: it fails while the database is unreachable or its schema is
// older than this build's migrations.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	v, err := schemaVersion(ctx, s.pool)
	if err != nil {
		return s.fail("ping", err)
	}
	if v < s.target {
		return fmt.Errorf("postgres: database schema is at version %d, this build needs %d: run `sluice migrate up` (or set postgres.migrate_on_start)", v, s.target)
	}
	return nil
}

// fail wraps a database error with the operation and, for timeouts, says so plainly.
func (s *Store) fail(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || isQueryCanceled(err) {
		return fmt.Errorf("postgres %s: no answer within the statement timeout (%s): %w", op, s.timeout, err)
	}
	return fmt.Errorf("postgres %s: %w", op, err)
}

// schemaVersion reads the newest applied goose version; a missing version table is version 0.
func schemaVersion(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int64, error) {
	var v pgtype.Int8
	err := q.QueryRow(ctx, "SELECT max(version_id) FROM "+versionTable).Scan(&v)
	if pgErrCode(err) == codeUndefinedTable {
		return 0, nil
	}
	return v.Int64, err
}

// SQLSTATEs the store tells apart.
const (
	codeUndefinedTable   = "42P01"
	codeQueryCanceled    = "57014" // statement_timeout fired (or a cancel request)
	codeLockNotAvailable = "55P03" // lock_timeout fired (DecideBatchBounded)
)

// pgErrCode is the SQLSTATE of a server error, or "".
func pgErrCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isQueryCanceled(err error) bool { return pgErrCode(err) == codeQueryCanceled }

// redactErr keeps a password in a malformed URL out of error messages (pgconn's parse errors already redact it;
// this is a second guard).
func redactErr(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("cannot parse the connection string (check its syntax; it is not repeated here because it may hold a password)")
	}
	return err
}

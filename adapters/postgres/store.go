// Package postgres is the PostgreSQL BucketStore and PolicyStore: any number of sluice replicas share one database
// and together never admit more than a policy's limit in any window.
//
// Every decision is one round trip: one call of the plpgsql function sluice_decide_batch
// (migrations/functions/40_decide_batch.sql) through a prepared statement, for one check or many. It decides with the
// database's clock and, for API policies (BucketRequest.Stored), with the policy as the database holds it at that
// statement, so a policy created, changed or deleted through any replica binds every replica at its next
// decision. Each algorithm is one SQL step function mirroring the domain's. A hold operation (Hold) is one
// round trip too: sluice_hold (migrations/functions/35_holds.sql), on the key's row and under its lock; ApplyBatch
// applies checks and hold operations together (sluice_apply_batch), one round trip and one transaction for many,
// which is how the coalescer's lanes send them. A pair of (policy, key) whose checks
// are all peeks or denials is decided from a lock-free read and writes nothing (no row lock, no transaction id);
// the pairs that admit are locked in byte order of (policy, key) and written once each, the lock lasting only for
// that statement. DecideBatchBounded (for the coalescer's lanes) is the same with a short bound on waiting for
// another session's row lock. DecideGroupsBounded (the lanes' batches that hold atomic batches) decides several
// callers' batches in one statement (sluice_decide_groups, migrations/functions/45_decide_groups.sql), each as
// sluice_decide_batch decides it alone: first all together as one non-atomic batch in a subtransaction, kept when
// every atomic batch came back whole; else rolled back and decided batch by batch, their rows locked in byte order
// across the statement first.
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
	// functions are this build's function files (names and revisions), which Ping requires at the same revision
	// or newer.
	functions struct {
		names     []string
		revisions []int32
	}

	policies *domain.PolicyCache // the API policies (policies.go)
	// configFloors: config policy name → floor (µs) from sluice_config_policies, set by RegisterConfigPolicies.
	configFloors sync.Map
	stop         context.CancelFunc
	done         sync.WaitGroup
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
	files, err := functionFiles()
	if err != nil {
		pool.Close()
		return nil, err
	}
	for _, f := range files {
		s.functions.names = append(s.functions.names, f.name)
		s.functions.revisions = append(s.functions.revisions, int32(f.revision))
	}
	s.policies = domain.NewPolicyCache(errPoliciesNotLoaded)
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

// Decide implements domain.BucketStore in one round trip: a batch of one (see DecideBatch).
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	ds, err := s.decide(ctx, []domain.BucketRequest{r}, false, pgtype.Int4{})
	if err != nil {
		return domain.Decision{}, err
	}
	return ds[0], nil
}

// DecideBatch implements domain.BucketStore in one round trip (see sluice_decide_batch in
// migrations/functions/40_decide_batch.sql): pairs whose checks are all peeks or denials are decided from a lock-free
// read and write nothing; the others are locked in byte order and written once each.
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return s.decide(ctx, rs, atomic, pgtype.Int4{})
}

// DecideBatchBounded is a non-atomic DecideBatch, in one round trip, that waits at most Options.LockWait for a
// row another session holds locked. When that wait runs out it returns busy = true and no error: nothing was
// recorded, and the caller may send the checks again, per key, with DecideBatch or Decide, which wait up to the
// statement timeout. adapters/coalesce sends its lanes' batches this way, so one locked or heavily contended key
// cannot hold the unrelated keys that share its batch.
func (s *Store) DecideBatchBounded(ctx context.Context, rs []domain.BucketRequest) (ds []domain.Decision, busy bool, err error) {
	if len(rs) == 0 {
		return nil, false, nil
	}
	ds, err = s.decide(ctx, rs, false, pgtype.Int4{Int32: int32(max(s.lockWait.Milliseconds(), 1)), Valid: true})
	if pgErrCode(err) == codeLockNotAvailable {
		return nil, true, nil
	}
	return ds, false, err
}

// algName is the algorithm a check is sent with. A calendar period (Rule.Period) is not decided by this store
// yet: it is sent as no algorithm, which the SQL dispatch answers as an invalid rule (a store error to the
// Limiter, nothing recorded), never decided as a window. (PutPolicy and the config loader refuse such policies
// first; this keeps any other path from a silent wrong decision.)
func algName(r domain.Rule) string {
	if r.Period != nil {
		return ""
	}
	return string(r.Algorithm)
}

// decide sends rs to sluice_decide_batch.
func (s *Store) decide(ctx context.Context, rs []domain.BucketRequest, atomic bool, lockWait pgtype.Int4) ([]domain.Decision, error) {
	p := s.params(rs)
	p.Atomic, p.LockWaitMs = atomic, lockWait
	var row db.DecideBatchRow
	err := s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.DecideBatch(ctx, p)
		return err
	})
	if err != nil {
		return nil, s.fail("decide", err)
	}
	return decisions(len(rs), row)
}

// DecideGroupsBounded decides several callers' batches ("groups") in one round trip and one transaction
// (sluice_decide_groups in migrations/functions/45_decide_groups.sql): rs holds the groups' checks one after
// another, ends[g] is the index one past group g's last check (rising, the last one len(rs)), and atomic[g] says
// whether group g is atomic. Each group is decided exactly as DecideBatch(atomic[g]) decides it alone, in group
// order; the decisions are the groups', concatenated. The statement first decides every check as one non-atomic
// batch inside a subtransaction and keeps that when every atomic group came back whole (the same decisions and
// records); otherwise it rolls that back and decides group by group. Either way row locks are taken in byte order
// of (policy, key) across all groups, so concurrent statements cannot deadlock. A row another session holds locked for longer than
// Options.LockWait makes it give up with busy = true and no error; that, or any error, means the one transaction
// rolled back: nothing was recorded for any group. adapters/coalesce sends its lanes' batches holding atomic
// batches this way.
func (s *Store) DecideGroupsBounded(ctx context.Context, rs []domain.BucketRequest, ends []int, atomic []bool) (ds []domain.Decision, busy bool, err error) {
	if len(ends) != len(atomic) || len(ends) == 0 || ends[len(ends)-1] != len(rs) {
		return nil, false, fmt.Errorf("postgres decide groups: %d ends and %d atomic flags for %d checks", len(ends), len(atomic), len(rs))
	}
	b := s.params(rs)
	p := db.DecideGroupsParams{
		Policies: b.Policies, Keys: b.Keys, Algs: b.Algs, Limits: b.Limits, WindowsUs: b.WindowsUs, ResUs: b.ResUs,
		FloorsUs: b.FloorsUs, Gens: b.Gens, Costs: b.Costs, Shadows: b.Shadows, Stored: b.Stored,
		Ends: make([]int32, len(ends)), Atomic: atomic, NowUs: b.NowUs,
		LockWaitMs: pgtype.Int4{Int32: int32(max(s.lockWait.Milliseconds(), 1)), Valid: true},
	}
	for g, e := range ends {
		p.Ends[g] = int32(e)
	}
	var row db.DecideGroupsRow
	err = s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.DecideGroups(ctx, p)
		return err
	})
	if pgErrCode(err) == codeLockNotAvailable {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, s.fail("decide", err)
	}
	ds, err = decisions(len(rs), db.DecideBatchRow(row))
	return ds, false, err
}

// params are the check arrays of rs, as sluice_decide_batch and sluice_decide_groups take them (with this
// store's instant, if it has a test clock).
func (s *Store) params(rs []domain.BucketRequest) db.DecideBatchParams {
	p := db.DecideBatchParams{
		Policies:  make([]string, len(rs)),
		Keys:      make([][]byte, len(rs)),
		Algs:      make([]string, len(rs)),
		Limits:    make([]int64, len(rs)),
		WindowsUs: make([]int64, len(rs)),
		ResUs:     make([]int64, len(rs)),
		FloorsUs:  make([]int64, len(rs)),
		Gens:      make([]int64, len(rs)),
		Costs:     make([]int64, len(rs)),
		Shadows:   make([]bool, len(rs)),
		Stored:    make([]bool, len(rs)),
		NowUs:     s.now(),
	}
	for i, r := range rs {
		if !r.Stored {
			if f, ok := s.configFloors.Load(r.Policy); ok {
				r.Floor = max(r.Floor, f.(int64))
			}
		}
		p.Policies[i], p.Keys[i], p.Algs[i], p.Limits[i] = r.Policy, []byte(r.Key), algName(r.Rule), r.Limit
		p.WindowsUs[i], p.ResUs[i], p.FloorsUs[i], p.Gens[i] = micros(r.Window), micros(r.Resolution), r.Floor, r.Generation
		p.Costs[i], p.Shadows[i], p.Stored[i] = r.Cost, r.Shadow, r.Stored
	}
	return p
}

// decisions converts the result arrays of n checks.
func decisions(n int, row db.DecideBatchRow) ([]domain.Decision, error) {
	if len(row.Status) != n || len(row.Allowed) != n || len(row.Lim) != n || len(row.Remaining) != n || len(row.ResetAfterUs) != n || len(row.RetryAfterUs) != n {
		return nil, fmt.Errorf("postgres decide: %d results for %d checks", len(row.Allowed), n)
	}
	ds := make([]domain.Decision, n)
	for i := range n {
		st, ok := statuses[row.Status[i]]
		if !ok {
			return nil, fmt.Errorf("postgres decide: check %d: unknown status %d from sluice_decide_batch", i, row.Status[i])
		}
		ds[i] = domain.Decision{
			Status:     st,
			Allowed:    row.Allowed[i],
			Limit:      row.Lim[i],
			Remaining:  row.Remaining[i],
			ResetAfter: fromMicros(row.ResetAfterUs[i]),
			RetryAfter: fromMicros(row.RetryAfterUs[i]),
		}
	}
	return ds, nil
}

// statuses maps sluice_decide_batch's status codes to the domain's: 1, the stored policy is gone; 2, the cost is
// over its limit; 3, the rule is out of bounds or an algorithm (the rule's, or the one that wrote the key's state)
// is unknown to the functions. Any other code is an error, never a decision.
var statuses = map[int16]domain.Status{
	0: domain.StatusOK,
	1: domain.StatusPolicyNotFound,
	2: domain.StatusCostOverLimit,
	3: domain.StatusInvalidRule,
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

// dropPage bounds each statement of DropPolicy, so a policy with many keys never needs one long statement (a
// sliding_log key takes its log's rows with it: up to the limit each).
const dropPage = 500

// DropPolicy implements domain.BucketStore: it deletes the policy's keys in pages of dropPage, each statement
// under the statement timeout. A page chosen as a deadlock's victim (its rows locked in another order than a
// concurrent decision's: the churn test met one) was rolled back whole and is run again, up to dropDeadlockTries
// times: each page deletes only keys that no longer count, so running it again changes nothing else.
func (s *Store) DropPolicy(ctx context.Context, policy string) error {
	tries := 0
	for {
		cctx, cancel := s.call(ctx)
		n, err := s.q.DropPolicyPage(cctx, db.DropPolicyPageParams{Policy: policy, PageSize: dropPage})
		cancel()
		var pe *pgconn.PgError
		if err != nil && errors.As(err, &pe) && pe.Code == "40P01" && tries < dropDeadlockTries && ctx.Err() == nil {
			tries++
			continue
		}
		if err != nil {
			return s.fail("drop policy", err)
		}
		if n < dropPage {
			return nil
		}
	}
}

// dropDeadlockTries bounds how often DropPolicy runs a page again after a deadlock.
const dropDeadlockTries = 5

// Ping implements domain.BucketStore for /readyz: it fails while the database is unreachable, its schema is
// older than this build's migrations, or it holds any of this build's function files (migrations/functions/) at
// an older revision, in one statement. A newer schema or newer functions pass: during a rolling upgrade the
// older replicas keep serving. (domain.Service.Ready also waits for the API-policy copy.)
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	var v pgtype.Int8
	var held int
	err := s.pool.QueryRow(ctx, functionsQuery, s.functions.names, s.functions.revisions).Scan(&v, &held)
	if pgErrCode(err) == codeUndefinedTable {
		err = nil // no version table, or no function-file table yet (version < 4): the version check says so
		v, held = pgtype.Int8{}, 0
	}
	if err != nil {
		return s.fail("ping", err)
	}
	if v.Int64 < s.target {
		return fmt.Errorf("postgres: database schema is at version %d, this build needs %d: run `sluice migrate up` (or set postgres.migrate_on_start)", v.Int64, s.target)
	}
	if held < len(s.functions.names) {
		return fmt.Errorf("postgres: the database's functions are older than this build's (%d of %d files current): run `sluice migrate up` (or set postgres.migrate_on_start)", held, len(s.functions.names))
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

// Hold implements domain.BucketStore in one round trip (an OpCheck is Decide's): one call of sluice_hold
// (migrations/functions/35_holds.sql; an acquire its key's committed state denies is answered from a lock-free read,
// anything else is a batch of one through sluice_apply_batch), domain.Bucket.ApplyHold's step on the key's row under
// the row lock its checks take, with the database clock (a test clock's instant when Options.Clock is set). For an API
// policy (BucketRequest.Stored) it decides with the policy as the database holds it, as Decide does
// (StatusPolicyNotFound, StatusCostOverLimit). The hold records live in the key's sluice_buckets row (migration 00005,
// lz4-compressed since 00006 where the server has lz4); Reset and DropPolicy drop them with it.
func (s *Store) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	if q.Op == domain.OpCheck { // sluice_hold takes hold operations only; a check is Decide's, as the port says
		d, err := s.Decide(ctx, q.BucketRequest)
		return domain.HoldDecision{Decision: d}, err
	}
	r := q.BucketRequest
	if !r.Stored {
		if f, ok := s.configFloors.Load(r.Policy); ok {
			r.Floor = max(r.Floor, f.(int64))
		}
	}
	p := db.HoldParams{
		Policy: r.Policy, Key: []byte(r.Key), Op: int16(q.Op), ID: []byte(q.ID), Amount: r.Cost, TtlUs: micros(q.TTL),
		Alg: algName(r.Rule), Lim: r.Limit, WindowUs: micros(r.Window), ResUs: micros(r.Resolution),
		FloorUs: r.Floor, Gen: r.Generation, Stored: r.Stored, NowUs: s.now(),
	}
	var row db.HoldRow
	err := s.run(ctx, func(ctx context.Context, dq *db.Queries) (err error) {
		row, err = dq.Hold(ctx, p)
		return err
	})
	if err != nil {
		return domain.HoldDecision{}, s.fail("hold", err)
	}
	st, ok := statuses[row.Status]
	if !ok {
		return domain.HoldDecision{}, fmt.Errorf("postgres hold: unknown status %d from sluice_hold", row.Status)
	}
	if row.HoldStatus < int16(domain.HoldOK) || row.HoldStatus > int16(domain.HoldsFull) {
		return domain.HoldDecision{}, fmt.Errorf("postgres hold: unknown hold status %d from sluice_hold", row.HoldStatus)
	}
	return domain.HoldDecision{
		Decision: domain.Decision{
			Status:     st,
			Allowed:    row.Allowed,
			Limit:      row.Lim,
			Remaining:  row.Remaining,
			ResetAfter: fromMicros(row.ResetAfterUs),
			RetryAfter: fromMicros(row.RetryAfterUs),
		},
		Hold: domain.Hold{ID: string(row.HoldID), Amount: row.Amount, At: row.AtUs, Expires: row.ExpiresUs,
			Settled: row.Settled},
		Status:    domain.HoldStatus(row.HoldStatus),
		Overdraft: row.Overdraft,
	}, nil
}

// ApplyBatch applies checks (domain.OpCheck) and hold operations in one round trip and one transaction: one call
// of sluice_apply_batch (migrations/functions/35_holds.sql). Each op is applied atomically on its key exactly as
// Decide (a check) or Hold would apply it, and sees what the ops before it recorded; the batch as a whole is not
// atomic, and one op's own outcome (a denial, an unknown hold, a stale generation, an invalid rule) is its result,
// never the batch's error. The keys are locked in the byte order DecideBatch locks in, so concurrent batches and
// decide batches never deadlock. adapters/coalesce's lanes send hold operations this way (ApplyBatchBounded).
func (s *Store) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	return s.applyBatch(ctx, ops, pgtype.Int4{})
}

// ApplyBatchBounded is ApplyBatch waiting at most Options.LockWait for a row another session holds locked, as
// DecideBatchBounded is DecideBatch: when that wait runs out it returns busy = true and no error, nothing was
// recorded, and the caller may send the ops again, per key, with ApplyBatch or Hold.
func (s *Store) ApplyBatchBounded(ctx context.Context, ops []domain.BucketHold) (hds []domain.HoldDecision, busy bool, err error) {
	if len(ops) == 0 {
		return nil, false, nil
	}
	hds, err = s.applyBatch(ctx, ops, pgtype.Int4{Int32: int32(max(s.lockWait.Milliseconds(), 1)), Valid: true})
	if pgErrCode(err) == codeLockNotAvailable {
		return nil, true, nil
	}
	return hds, false, err
}

// applyBatch sends ops to sluice_apply_batch.
func (s *Store) applyBatch(ctx context.Context, ops []domain.BucketHold, lockWait pgtype.Int4) ([]domain.HoldDecision, error) {
	n := len(ops)
	p := db.ApplyBatchParams{
		Policies:   make([]string, n),
		Keys:       make([][]byte, n),
		Ops:        make([]int16, n),
		Ids:        make([][]byte, n),
		Amounts:    make([]int64, n),
		TtlsUs:     make([]int64, n),
		Algs:       make([]string, n),
		Limits:     make([]int64, n),
		WindowsUs:  make([]int64, n),
		ResUs:      make([]int64, n),
		FloorsUs:   make([]int64, n),
		Gens:       make([]int64, n),
		Stored:     make([]bool, n),
		NowUs:      s.now(),
		LockWaitMs: lockWait,
	}
	for i, q := range ops {
		r := q.BucketRequest
		if !r.Stored {
			if f, ok := s.configFloors.Load(r.Policy); ok {
				r.Floor = max(r.Floor, f.(int64))
			}
		}
		p.Policies[i], p.Keys[i], p.Ops[i], p.Ids[i] = r.Policy, []byte(r.Key), int16(q.Op), []byte(q.ID)
		p.Amounts[i], p.TtlsUs[i], p.Algs[i], p.Limits[i] = r.Cost, micros(q.TTL), algName(r.Rule), r.Limit
		p.WindowsUs[i], p.ResUs[i], p.FloorsUs[i], p.Gens[i] = micros(r.Window), micros(r.Resolution), r.Floor, r.Generation
		p.Stored[i] = r.Stored
	}
	var row db.ApplyBatchRow
	err := s.run(ctx, func(ctx context.Context, q *db.Queries) (err error) {
		row, err = q.ApplyBatch(ctx, p)
		return err
	})
	if err != nil {
		return nil, s.fail("apply batch", err)
	}
	if len(row.Status) != n || len(row.Allowed) != n || len(row.Lim) != n || len(row.Remaining) != n ||
		len(row.ResetAfterUs) != n || len(row.RetryAfterUs) != n || len(row.HoldStatus) != n || len(row.HoldID) != n ||
		len(row.Amount) != n || len(row.AtUs) != n || len(row.ExpiresUs) != n || len(row.Settled) != n ||
		len(row.Overdraft) != n {
		return nil, fmt.Errorf("postgres apply batch: %d results for %d ops", len(row.Status), n)
	}
	hds := make([]domain.HoldDecision, n)
	for i := range ops {
		st, ok := statuses[row.Status[i]]
		if !ok {
			return nil, fmt.Errorf("postgres apply batch: op %d: unknown status %d from sluice_apply_batch", i, row.Status[i])
		}
		if row.HoldStatus[i] < int16(domain.HoldOK) || row.HoldStatus[i] > int16(domain.HoldsFull) {
			return nil, fmt.Errorf("postgres apply batch: op %d: unknown hold status %d from sluice_apply_batch", i, row.HoldStatus[i])
		}
		hds[i] = domain.HoldDecision{
			Decision: domain.Decision{
				Status:     st,
				Allowed:    row.Allowed[i],
				Limit:      row.Lim[i],
				Remaining:  row.Remaining[i],
				ResetAfter: fromMicros(row.ResetAfterUs[i]),
				RetryAfter: fromMicros(row.RetryAfterUs[i]),
			},
			Hold: domain.Hold{ID: string(row.HoldID[i]), Amount: row.Amount[i], At: row.AtUs[i], Expires: row.ExpiresUs[i],
				Settled: row.Settled[i]},
			Status:    domain.HoldStatus(row.HoldStatus[i]),
			Overdraft: row.Overdraft[i],
		}
	}
	return hds, nil
}

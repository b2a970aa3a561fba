package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// conversionFixture is one store on a fresh database with a test clock, deciding API policies (Stored checks),
// so the floors and generations are the database's own.
type conversionFixture struct {
	t     *testing.T
	s     *postgres.Store
	clock *clocktest.Clock
	ctx   context.Context
}

func newConversionFixture(t *testing.T) *conversionFixture {
	clock := clocktest.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	return &conversionFixture{t: t, s: open(t, postgres.Options{Clock: clock}), clock: clock, ctx: context.Background()}
}

func (f *conversionFixture) put(alg domain.Algorithm, limit int64, window time.Duration) {
	f.t.Helper()
	if _, err := f.s.PutPolicy(f.ctx, domain.Policy{Name: "p", Limit: limit, Window: window, Algorithm: alg}); err != nil {
		f.t.Fatal(err)
	}
}

// checks sends n checks of cost (each a batch of one, a millisecond apart) and returns how many were admitted.
func (f *conversionFixture) checks(n int, cost int64) int {
	f.t.Helper()
	admitted := 0
	for range n {
		d, err := f.s.Decide(f.ctx, domain.BucketRequest{Policy: "p", Key: "k", Cost: cost, Stored: true})
		if err != nil || d.Status != domain.StatusOK {
			f.t.Fatalf("check: %+v, %v", d, err)
		}
		if d.Allowed {
			admitted++
		}
		f.clock.Advance(time.Millisecond)
	}
	return admitted
}

// row is the key's stored state: its sluice_buckets row and its log entries, as text.
func row(t *testing.T, pool *pgxpool.Pool, policy, key string) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT coalesce((SELECT row(b.*)::text FROM sluice_buckets b WHERE b.policy = $1 AND b.key = $2), '-')
		|| ' ' || coalesce((SELECT string_agg(e.at || ':' || e.cum, ',' ORDER BY e.at) FROM sluice_log_entries e WHERE e.policy = $1 AND e.key = $2), '-')`,
		policy, []byte(key)).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The worked examples of the conversion spec (issue 22, finding 3): a token bucket's units keep counting under
// the limit and window that wrote them, never capped by a new, lower limit, whatever the next algorithm.
func TestConversionKeepsTokenBucketUnits(t *testing.T) {
	const day = 24 * time.Hour
	t.Run("token_bucket to a lower sliding_log and back", func(t *testing.T) {
		f := newConversionFixture(t)
		f.put(domain.TokenBucket, 100, day)
		if got := f.checks(50, 1); got != 50 {
			t.Fatalf("token_bucket 100/1d: %d admitted, want 50", got)
		}
		f.put(domain.SlidingLog, 3, day)
		if got := f.checks(5, 1); got != 0 {
			t.Fatalf("sliding_log 3/1d with 50 units counting: %d admitted, want 0", got)
		}
		f.put(domain.SlidingLog, 100, day)
		if got := f.checks(60, 1); got != 50 {
			t.Fatalf("back to sliding_log 100/1d: %d admitted, want 50 (100 in all)", got)
		}
	})
	t.Run("token_bucket lowered, then sliding_log", func(t *testing.T) {
		f := newConversionFixture(t)
		f.put(domain.TokenBucket, 8, day)
		if got := f.checks(5, 1); got != 5 {
			t.Fatalf("token_bucket 8/1d: %d admitted, want 5", got)
		}
		f.put(domain.TokenBucket, 3, day)
		before := row(t, f.s.Pool(), "p", "k")
		if got := f.checks(3, 1); got != 0 {
			t.Fatalf("token_bucket 3/1d with 5 units written under 8/1d: %d admitted, want 0", got)
		}
		if after := row(t, f.s.Pool(), "p", "k"); after != before {
			t.Fatalf("denials changed the state:\n%s\n%s", before, after)
		}
		f.put(domain.SlidingLog, 8, day)
		if got := f.checks(5, 1); got != 3 {
			t.Fatalf("sliding_log 8/1d: %d admitted, want 3", got)
		}
	})
}

// A denial or a peek converts nothing (issue 22, finding 4): sliding_log 8 with 8 admitted, then token_bucket 7,
// sliding_log 6 and fixed_window 7 deny every check, and the stored state stays as the last admission left it.
func TestDenialAndPeekConvertNothing(t *testing.T) {
	const day = 24 * time.Hour
	f := newConversionFixture(t)
	f.put(domain.SlidingLog, 8, day)
	if got := f.checks(8, 1); got != 8 {
		t.Fatalf("sliding_log 8: %d admitted, want 8", got)
	}
	before := row(t, f.s.Pool(), "p", "k")
	for _, c := range []struct {
		alg   domain.Algorithm
		limit int64
	}{{domain.TokenBucket, 7}, {domain.SlidingLog, 6}, {domain.FixedWindow, 7}} {
		f.put(c.alg, c.limit, day)
		if got := f.checks(3, 1); got != 0 {
			t.Fatalf("%s %d: %d admitted, want 0", c.alg, c.limit, got)
		}
		d, err := f.s.Decide(f.ctx, domain.BucketRequest{Policy: "p", Key: "k", Cost: 0, Stored: true})
		if err != nil || d.Status != domain.StatusOK || d.Allowed {
			t.Fatalf("%s %d: peek %+v, %v: want a denial", c.alg, c.limit, d, err)
		}
		// The same through an atomic batch and a batch of several checks of the key.
		r := domain.BucketRequest{Policy: "p", Key: "k", Cost: 1, Stored: true}
		for _, atomic := range []bool{false, true} {
			ds, err := f.s.DecideBatch(f.ctx, []domain.BucketRequest{r, r}, atomic)
			if err != nil || ds[0].Allowed || ds[1].Allowed {
				t.Fatalf("%s %d: batch %+v, %v", c.alg, c.limit, ds, err)
			}
		}
		if after := row(t, f.s.Pool(), "p", "k"); after != before {
			t.Fatalf("%s %d: denials and peeks changed the state:\n%s\n%s", c.alg, c.limit, before, after)
		}
	}
}

// The SQL dispatch knows exactly the domain's algorithms: each one decides, and an unknown one, in the rule or in
// the state a key holds, is refused (allowed NULL, status 3) rather than decided as some default (issue 22,
// finding 6).
func TestAlgorithmDispatchMatchesTheDomain(t *testing.T) {
	s := open(t, postgres.Options{})
	ctx := context.Background()
	known := func(stateAlg string, stateGen int64, alg string) bool {
		t.Helper()
		var decided bool
		cost := 1
		if domain.Algorithm(alg).HoldsOnly() {
			cost = 0 // a peek: a check of cost > 0 is refused (below)
		}
		err := s.Pool().QueryRow(ctx, `SELECT (r).allowed IS NOT NULL FROM sluice_step(
				ROW($1::text, $2::bigint, '{}'::bigint[], '{}'::bigint[], 0, 5, 3, 7)::sluice_state, 1000000, 'p', 'k'::bytea,
				1000000000, $3::text, 7, 1000000, 1000, 0, 1, $4::bigint) AS r`, stateAlg, stateGen, alg, cost).Scan(&decided)
		if err != nil {
			t.Fatal(err)
		}
		return decided
	}
	for _, alg := range domain.Algorithms {
		if !known("", 0, string(alg)) {
			t.Errorf("sluice_step refuses %s, an algorithm of domain.Algorithms", alg)
		}
		for _, from := range domain.Algorithms {
			if !known(string(from), 1, string(alg)) {
				t.Errorf("sluice_step refuses %s over a state written by %s", alg, from)
			}
		}
		if known("leaky_bucket", 1, string(alg)) {
			t.Errorf("sluice_step decided %s over a state of an unknown algorithm", alg)
		}
		if !known("leaky_bucket", 2, string(alg)) {
			t.Errorf("sluice_step refused %s over an unknown algorithm's state of another generation (not counted)", alg)
		}
	}
	var refused bool
	if err := s.Pool().QueryRow(ctx, `SELECT (r).allowed IS NULL FROM sluice_step(ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state,
			0, 'p', 'k'::bytea, 1000000000, 'concurrency', 7, 1000000, 0, 0, 1, 1) AS r`).Scan(&refused); err != nil || !refused {
		t.Errorf("sluice_step decided a check of cost 1 under concurrency (%v)", err)
	}
	for _, alg := range []string{"leaky_bucket", "", "SLIDING_LOG"} {
		if known("", 0, alg) {
			t.Errorf("sluice_step decided the unknown algorithm %q", alg)
		}
	}

	// Through the store: the refused check has StatusInvalidRule and fails alone, or fails an atomic batch whole.
	good := domain.BucketRequest{Policy: "p", Key: "good", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 5, Window: time.Hour}, Cost: 1}
	badRule := good
	badRule.Key, badRule.Algorithm = "bad-rule", "leaky_bucket"
	badState := good
	badState.Key = "bad-state"
	if _, err := s.Pool().Exec(ctx, `INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg, gen, a, f, c, window_us)
		VALUES ('p', 'bad-state', '{}', '{}', 0, 9000000000000000, 'leaky_bucket', 0, 1, 1, 1, 3600000000)`); err != nil {
		t.Fatal(err)
	}
	stateBefore := row(t, s.Pool(), "p", "bad-state")
	ds, err := s.DecideBatch(ctx, []domain.BucketRequest{good, badRule, badState, good}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !ds[0].Allowed || ds[3].Remaining != 3 || ds[1].Status != domain.StatusInvalidRule || ds[2].Status != domain.StatusInvalidRule || ds[1].Allowed || ds[2].Allowed {
		t.Fatalf("decisions %+v", ds)
	}
	goodBefore := row(t, s.Pool(), "p", "good")
	for _, bad := range []domain.BucketRequest{badRule, badState} {
		ds, err = s.DecideBatch(ctx, []domain.BucketRequest{good, bad}, true)
		if err != nil || ds[1].Status != domain.StatusInvalidRule {
			t.Fatalf("atomic batch with %s: %+v, %v", bad.Key, ds, err)
		}
	}
	if after := row(t, s.Pool(), "p", "good"); after != goodBefore {
		t.Fatalf("an atomic batch with a refused check recorded:\n%s\n%s", goodBefore, after)
	}
	if after := row(t, s.Pool(), "p", "bad-state"); after != stateBefore {
		t.Fatalf("a refused check changed the unknown algorithm's state:\n%s\n%s", stateBefore, after)
	}
}

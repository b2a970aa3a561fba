package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

func count(t *testing.T, s *postgres.Store, where string, args ...any) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM sluice_buckets WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		if h := m.GetHistogram(); h != nil {
			return float64(h.GetSampleCount())
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// The janitor deletes exactly the keys with nothing left in their window, in pages, with the store's clock.
func TestJanitorDeletesOnlyEmptyKeys(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, postgres.Options{Clock: clock})
	reg := prometheus.NewRegistry()
	j, err := s.NewJanitor(postgres.JanitorOptions{PageSize: 7, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	decide := func(policy, key string, window time.Duration) {
		t.Helper()
		if _, err := s.Decide(ctx, domain.BucketRequest{Policy: policy, Key: key, Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 10, Window: window}, Cost: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// 30 keys with a 1-minute window, 20 with an hour, and one minute-key touched again 50s later.
	for i := range 30 {
		decide("minute", fmt.Sprintf("k%02d\x00", i), time.Minute)
	}
	for i := range 20 {
		decide("hour", fmt.Sprint("k", i), time.Hour)
	}
	clock.Advance(50 * time.Second)
	decide("minute", "k00\x00", time.Minute)

	res, err := j.Sweep(ctx)
	if err != nil || res.Skipped || res.Deleted != 0 || res.Scanned != 50 {
		t.Fatalf("sweep before any window passed: %+v, %v", res, err)
	}
	if res.Batches != 8 { // 50 keys in pages of 7
		t.Fatalf("batches = %d, want 8", res.Batches)
	}
	clock.Advance(10*time.Second - time.Microsecond)
	if res, err := j.Sweep(ctx); err != nil || res.Deleted != 0 {
		t.Fatalf("1µs before the minute: %+v, %v", res, err)
	}
	clock.Advance(time.Microsecond) // exactly one minute after the first 30: 29 are empty, k00 is not
	res, err = j.Sweep(ctx)
	if err != nil || res.Deleted != 29 {
		t.Fatalf("at the minute: %+v, %v", res, err)
	}
	if n := count(t, s, "true"); n != 21 {
		t.Fatalf("%d rows left, want 21", n)
	}
	if n := count(t, s, "policy = 'minute' AND key = $1", []byte("k00\x00")); n != 1 {
		t.Fatal("the key admitted 50s later was deleted")
	}
	clock.Advance(time.Hour)
	if res, err := j.Sweep(ctx); err != nil || res.Deleted != 21 {
		t.Fatalf("after an hour: %+v, %v", res, err)
	}
	if got := metric(t, reg, "sluice_janitor_rows_deleted_total"); got != 50 {
		t.Fatalf("rows deleted metric = %v, want 50", got)
	}
	if got := metric(t, reg, "sluice_janitor_sweep_duration_seconds"); got != 4 {
		t.Fatalf("sweep duration observations = %v, want 4", got)
	}
	// A deleted key starts afresh.
	if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "minute", Key: "k01\x00", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 10, Window: time.Minute}, Cost: 10}); err != nil || !d.Allowed {
		t.Fatalf("after the janitor: %+v, %v", d, err)
	}
}

// One replica sweeps at a time: while another session holds the janitor's advisory lock, a sweep is skipped.
func TestJanitorOneReplicaAtATime(t *testing.T) {
	url := pgtest.NewDatabase(t)
	clock := clocktest.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	a := open(t, postgres.Options{URL: url, Clock: clock})
	b := open(t, postgres.Options{URL: url, Clock: clock})
	ja, err := a.NewJanitor(postgres.JanitorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jb, err := b.NewJanitor(postgres.JanitorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := a.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1, Window: time.Second}, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	// Hold the lock the way another replica's sweep would.
	conn, err := b.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(x'736c7569636502'::bigint)"); err != nil {
		t.Fatal(err)
	}
	if res, err := ja.Sweep(ctx); err != nil || !res.Skipped {
		t.Fatalf("sweep while another replica sweeps: %+v, %v", res, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(x'736c7569636502'::bigint)"); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	if res, err := jb.Sweep(ctx); err != nil || res.Skipped || res.Deleted != 1 {
		t.Fatalf("sweep after the lock was released: %+v, %v", res, err)
	}
	// The lock is released after a sweep: the other replica can sweep next.
	if res, err := ja.Sweep(ctx); err != nil || res.Skipped {
		t.Fatalf("next sweep on the other replica: %+v, %v", res, err)
	}
}

func TestJanitorRejectsShortIntervals(t *testing.T) {
	s := open(t, postgres.Options{})
	if _, err := s.NewJanitor(postgres.JanitorOptions{Interval: 59 * time.Second}); err == nil {
		t.Fatal("a 59s interval was accepted")
	}
}

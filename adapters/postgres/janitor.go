package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/postgres/internal/db"
)

// janitorLockID is the session advisory lock that makes one replica at a time sweep ("sluice" in ASCII, then 2).
const janitorLockID int64 = 0x736c7569636502

// MinJanitorInterval is the shortest interval Run accepts (config validation enforces the same).
const MinJanitorInterval = time.Minute

// JanitorOptions configure a Janitor.
type JanitorOptions struct {
	// Interval between sweeps; ≤ 0 means 5m. Each wait is jittered by ±Jitter of it, so replicas started together
	// do not all try at once. Must be ≥ MinJanitorInterval.
	Interval time.Duration
	// Jitter is the fraction of Interval each wait varies by; < 0 means none, 0 means 0.2.
	Jitter float64
	// PageSize bounds each batch: the keys read (and at most deleted) by one statement; ≤ 0 means 1000.
	PageSize int
	// SweepTimeout bounds one whole sweep; ≤ 0 means 2m. Each batch's statement timeout is what remains of it.
	SweepTimeout time.Duration
	// Registerer receives sluice_janitor_rows_deleted_total and sluice_janitor_sweep_duration_seconds; nil means
	// no metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Janitor deletes the rows of keys with nothing left in their window (newest instant + window ≤ now) and no hold
// record that still matters (domain.Bucket.Empty's rule), and drops the hold records that no longer matter from
// the rows it keeps, in bounded
// batches that walk the primary key, so a sweep's work is proportional to the table and each statement is short.
// One replica sweeps at a time (a session advisory lock; the others skip that round), and a Janitor never runs
// two sweeps at once. Expired rows are harmless to decisions (the decide functions expire entries themselves);
// the janitor only keeps the table from growing with keys that are never seen again.
type Janitor struct {
	s        *Store
	o        JanitorOptions
	running  atomic.Bool
	deleted  prometheus.Counter
	duration prometheus.Histogram
}

// SweepResult reports one sweep.
type SweepResult struct {
	// Skipped: another sweep held the lock (here or on another replica); nothing was done.
	Skipped bool
	Scanned int64
	Deleted int64
	// Pruned counts the kept rows whose hold records no longer mattered and were dropped.
	Pruned  int64
	Batches int
}

// NewJanitor returns a janitor over the store's database and registers its metrics.
func (s *Store) NewJanitor(o JanitorOptions) (*Janitor, error) {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Minute
	}
	if o.Interval < MinJanitorInterval {
		return nil, fmt.Errorf("postgres janitor: interval %s is below the minimum %s", o.Interval, MinJanitorInterval)
	}
	if o.Jitter == 0 {
		o.Jitter = 0.2
	}
	o.Jitter = min(max(o.Jitter, 0), 0.5)
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
	if o.SweepTimeout <= 0 {
		o.SweepTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = s.log
	}
	j := &Janitor{
		s: s,
		o: o,
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_janitor_rows_deleted_total",
			Help: "Rows of keys with nothing left in their window deleted by the Postgres janitor.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_janitor_sweep_duration_seconds",
			Help:    "Duration of the Postgres janitor's sweeps (those that held the lock).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9), // 5ms to ~5.5min
		}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{j.deleted, j.duration} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("postgres janitor: metrics: %w", err)
			}
		}
	}
	return j, nil
}

// Run sweeps after every jittered interval until ctx ends. Sweeps run one after another in this goroutine.
func (j *Janitor) Run(ctx context.Context) {
	t := time.NewTimer(j.next())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := j.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			j.o.Logger.Warn("postgres janitor: sweep failed", "err", err, "deleted", res.Deleted)
		case err == nil && !res.Skipped:
			j.o.Logger.Debug("postgres janitor: swept", "deleted", res.Deleted, "scanned", res.Scanned, "batches", res.Batches)
		}
		t.Reset(j.next())
	}
}

// next is the interval jittered uniformly in [1-Jitter, 1+Jitter].
func (j *Janitor) next() time.Duration {
	f := 1 + j.o.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(j.o.Interval) * f)
}

// Sweep runs one sweep now, unless one is running in this process or on another replica (then Skipped).
func (j *Janitor) Sweep(ctx context.Context) (SweepResult, error) {
	if !j.running.CompareAndSwap(false, true) {
		return SweepResult{Skipped: true}, nil
	}
	defer j.running.Store(false)
	ctx, cancel := context.WithTimeout(ctx, j.o.SweepTimeout)
	defer cancel()

	conn, err := j.s.pool.Acquire(ctx)
	if err != nil {
		return SweepResult{}, j.s.fail("janitor", err)
	}
	defer conn.Release()
	q := db.New(conn)
	locked, err := q.TryAdvisoryLock(ctx, janitorLockID)
	if err != nil {
		return SweepResult{}, j.s.fail("janitor lock", err)
	}
	if !locked {
		return SweepResult{Skipped: true}, nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), j.s.deadline)
		defer cancel()
		if ok, err := q.AdvisoryUnlock(uctx, janitorLockID); err != nil || !ok {
			// Closing the session releases its advisory locks; the pool then drops the connection.
			conn.Conn().Close(uctx)
		}
	}()

	start := time.Now()
	var res SweepResult
	afterPolicy, afterKey := "", []byte{}
	for {
		page, err := j.batch(ctx, conn.Conn(), afterPolicy, afterKey)
		if err != nil {
			j.observe(start)
			return res, j.s.fail("janitor batch", err)
		}
		res.Batches++
		res.Scanned += int64(page.Scanned)
		res.Deleted += int64(page.Deleted)
		res.Pruned += int64(page.Pruned)
		j.deleted.Add(float64(page.Deleted))
		if int(page.Scanned) < j.o.PageSize {
			break
		}
		afterPolicy, afterKey = page.LastPolicy, page.LastKey
	}
	j.observe(start)
	return res, nil
}

func (j *Janitor) observe(start time.Time) {
	j.duration.Observe(time.Since(start).Seconds())
}

// batch deletes the expired keys among the next page in one short transaction whose statement timeout is what
// remains of the sweep's (the pool's decision-path timeout would be too short for a page of deletes).
func (j *Janitor) batch(ctx context.Context, conn *pgx.Conn, afterPolicy string, afterKey []byte) (db.JanitorPageRow, error) {
	var row db.JanitorPageRow
	left := time.Until(deadlineOf(ctx))
	if left <= 0 {
		return row, context.DeadlineExceeded
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.SetLocalStatementTimeout(ctx, strconv.FormatInt(max(left.Milliseconds(), 1), 10)); err != nil {
			return err
		}
		var err error
		row, err = q.JanitorPage(ctx, db.JanitorPageParams{
			AfterPolicy: afterPolicy,
			AfterKey:    afterKey,
			PageSize:    int32(j.o.PageSize),
			NowUs:       j.s.now(),
		})
		return err
	})
	return row, err
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

const statementTimeout = 200 * time.Millisecond

// faultPolicies: one policy per failure mode, long windows so that "never more than limit in any window" is "never
// more than limit in the whole run".
const faultPolicies = `policies:
  - {name: closed, limit: 30, window: 1h, failure_mode: deny}
  - {name: open, limit: 30, window: 1h, failure_mode: allow}
  - {name: probe, limit: 1000000, window: 1h, failure_mode: deny}
`

func pgEnv(url string, extra ...string) []string {
	return append([]string{
		"SLUICE_STORE=postgres", "SLUICE_DATABASE_URL=" + url, "SLUICE_MIGRATE_ON_START=false",
		"SLUICE_POSTGRES_STATEMENT_TIMEOUT=" + statementTimeout.String(), "SLUICE_LOG_LEVEL=info",
	}, extra...)
}

// sluiceConns counts sluice's connections to the database (application_name is set by the store).
func sluiceConns(t *testing.T, admin *pgx.Conn) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice'").Scan(&n); err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// killPostmaster SIGKILLs the cluster's postmaster (its PID is the first line of postmaster.pid in the data
// directory), then waits for its backends, which notice their parent's death, to exit: a database host dying.
func killPostmaster(t *testing.T, admin *pgx.Conn) {
	t.Helper()
	var dataDir string
	if err := admin.QueryRow(context.Background(), "SHOW data_directory").Scan(&dataDir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	children := childrenOf(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL postmaster %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range children {
		for syscall.Kill(c, 0) == nil && !zombieOrGone(c) {
			if time.Now().After(deadline) {
				syscall.Kill(c, syscall.SIGKILL) // a backend that did not notice within 10s: the host is gone anyway
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func childrenOf(pid int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			c, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			out = append(out, c)
		}
	}
	return out
}

func zombieOrGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] == "Z"
}

// TestPostgresKilledUnderLoad: three replicas under load from 60 clients; the postmaster is SIGKILLed and
// restarted. During the outage every check answers per its policy's failure_mode (deny: 503 store-unavailable
// with Retry-After; allow: 200 degraded) within a bound far below any TCP timeout; every replica recovers by
// itself; goroutines and database connections come back to where they were; and over the whole run no key is
// admitted beyond its limit (the long window makes the run one window).
func TestPostgresKilledUnderLoad(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	cfg := writeConfig(t, t.TempDir(), faultPolicies)
	var reps []*proc
	var bases []string
	for i := range 3 {
		p := startSluice(t, fmt.Sprintf("replica-%d", i), cfg, pgEnv(url)...)
		reps, bases = append(reps, p), append(bases, p.base)
	}
	admin := connect(t, cluster.URL())
	const clients, keys = 60, 40
	pick := func(c, seq int) (string, string) {
		policy := "closed"
		if (c+seq)%2 == 1 {
			policy = "open"
		}
		return policy, "k" + strconv.Itoa(rand.IntN(keys))
	}
	rec := &recorder{}

	// Warm up, then measure goroutines and connections at rest.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	load(ctx, clients, bases, "", rec, pick)
	cancel()
	time.Sleep(500 * time.Millisecond)
	gBefore := goroutines(t, reps)
	cBefore := sluiceConns(t, admin)
	admin.Close(context.Background())

	// Load through the outage.
	ctx, cancel = context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() { load(ctx, clients, bases, "", rec, pick); close(loadDone) }()
	time.Sleep(time.Second)
	admin = connect(t, cluster.URL())
	killAt := time.Now()
	killPostmaster(t, admin)
	// Backends serve their connections until they notice the postmaster's death: the outage starts when they
	// are gone.
	downAt := time.Now()
	t.Logf("postmaster SIGKILLed; its backends exited %s later", downAt.Sub(killAt).Round(time.Millisecond))
	time.Sleep(4 * time.Second)
	restartAt := time.Now()
	cluster.Start()
	upAt := time.Now()
	admin = connect(t, cluster.URL())
	t.Logf("pg_ctl start (crash recovery) took %s; the database was down %s", upAt.Sub(restartAt).Round(time.Millisecond), upAt.Sub(killAt).Round(time.Millisecond))

	// Each replica recovers by itself: time from the database accepting connections again to the replica's first
	// admitted, non-degraded check (fresh keys of a policy with room, so an admission is possible).
	probe := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	recovered := make([]time.Duration, len(reps))
	for i, p := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				o := check(context.Background(), probe, p.base, "", "probe", fmt.Sprintf("r%d-%d", i, n))
				if o.status == 200 && o.allowed && !o.degraded {
					recovered[i] = time.Since(upAt)
					return
				}
				if time.Since(upAt) > 30*time.Second {
					recovered[i] = -1
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for i, d := range recovered {
		if d < 0 {
			t.Fatalf("replica %d did not recover within 30s of the database's return", i)
		}
	}
	t.Logf("recovery after the database accepted connections again: %v", roundAll(recovered))
	time.Sleep(3 * time.Second) // steady load after recovery
	cancel()
	<-loadDone

	all := rec.snapshot()
	var outage, after []outcome
	for _, o := range all {
		switch {
		case o.at.After(downAt.Add(50*time.Millisecond)) && o.at.Before(restartAt):
			outage = append(outage, o)
		case o.at.After(upAt.Add(maxDur(recovered) + time.Second)):
			after = append(after, o)
		}
	}
	t.Logf("outcomes over the whole run: %v", statuses(all))
	t.Logf("during the outage: %v; latency %s", statuses(outage), summary(outage))
	t.Logf("after recovery: %v; latency %s", statuses(after), summary(after))
	if len(outage) < 100 {
		t.Fatalf("only %d checks during the outage", len(outage))
	}
	bound := 25 * statementTimeout // 5s: "about the statement timeout", not a TCP or connect timeout
	for _, o := range outage {
		switch o.policy {
		case "closed":
			if o.status != 503 || o.ptype != "https://sluice.dev/problems/store-unavailable" || o.retry == "" {
				t.Fatalf("failure_mode deny during the outage: %+v, want 503 store-unavailable with Retry-After", o)
			}
		case "open":
			if o.status != 200 || !o.allowed || !o.degraded {
				t.Fatalf("failure_mode allow during the outage: %+v, want 200 allowed and degraded", o)
			}
		}
		if o.took > bound {
			t.Fatalf("a check took %s during the outage, above %s", o.took, bound)
		}
	}
	for _, o := range all {
		if o.status == 0 || o.status == 500 {
			t.Fatalf("a check failed outside the contract: %+v", o)
		}
	}
	// After recovery the database answers again. A check may still meet the statement timeout on a loaded 2-core
	// machine (failure_mode then applies, as it should), but not as a rule (5% at most: go test runs other packages beside this one).
	slow := 0
	for _, o := range after {
		if o.status != 200 || o.degraded {
			slow++
		}
	}
	if len(after) == 0 || slow*20 > len(after) {
		t.Fatalf("after recovery %d of %d checks still failed", slow, len(after))
	}

	// No leak: at rest again, goroutines and connections are where they were before the outage.
	time.Sleep(time.Second)
	gAfter := goroutines(t, reps)
	cAfter := sluiceConns(t, admin)
	t.Logf("goroutines per replica at rest: before %v, after %v; sluice connections: before %d, after %d", gBefore, gAfter, cBefore, cAfter)
	for i := range reps {
		if gAfter[i] > gBefore[i]+15 {
			t.Errorf("replica %d: %d goroutines after the outage, %d before", i, gAfter[i], gBefore[i])
		}
	}
	// The pools may end up larger than before: the burst of checks queued during the outage opens connections up
	// to each pool's maximum when the database returns, and pgxpool keeps idle ones for a while (that is the
	// pool's job, not a leak). A leak is a connection beyond the maximum, or one left busy or inside a transaction
	// at rest.
	if cAfter > 3*16 {
		t.Errorf("%d sluice connections after the outage, %d before (pool max 16 per replica)", cAfter, cBefore)
	}
	var busyConns int
	if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice' AND state <> 'idle'").Scan(&busyConns); err != nil {
		t.Fatal(err)
	}
	if busyConns != 0 {
		t.Errorf("%d sluice connections busy or in a transaction at rest after the outage", busyConns)
	}

	// Never more than the limit in a window: count the admissions the clients saw (degraded admissions of the
	// allow policy are the failure mode at work and record nothing), then read what the database recorded.
	admitted := map[string]int{}
	for _, o := range all {
		if o.status == 200 && o.allowed && !o.degraded && o.policy != "probe" {
			admitted[o.policy+"/"+o.key]++
		}
	}
	maxSeen := 0
	for k, n := range admitted {
		maxSeen = max(maxSeen, n)
		if n > 30 {
			t.Errorf("%s admitted %d times in one window, limit 30", k, n)
		}
	}
	db := connect(t, url)
	rows, err := db.Query(context.Background(), "SELECT policy, convert_from(key, 'UTF8'), CASE WHEN alg = 'sliding_log' THEN f ELSE cums[cardinality(cums)] END - base FROM sluice_buckets WHERE policy <> 'probe'")
	if err != nil {
		t.Fatal(err)
	}
	maxStored := int64(0)
	for rows.Next() {
		var policy, key string
		var used int64
		if err := rows.Scan(&policy, &key, &used); err != nil {
			t.Fatal(err)
		}
		maxStored = max(maxStored, used)
		if used > 30 {
			t.Errorf("the database holds %d units for %s/%s, limit 30", used, policy, key)
		}
		if seen := admitted[policy+"/"+key]; int64(seen) > used {
			t.Errorf("%s/%s: clients saw %d admissions, the database recorded %d", policy, key, seen, used)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("admissions: %d keys, at most %d seen by clients and %d recorded per key (limit 30)", len(admitted), maxSeen, maxStored)
}

func goroutines(t *testing.T, reps []*proc) []int {
	out := make([]int, len(reps))
	for i, p := range reps {
		out[i] = int(p.metrics(t)["go_goroutines"])
	}
	return out
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func maxDur(ds []time.Duration) time.Duration {
	m := time.Duration(0)
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// TestLockedRowTimesOutThatKeyOnly: another session holds a key's row locked (SELECT … FOR UPDATE in an open
// transaction). Checks that must write that key's row wait on the lock, and the statement timeout ends the wait:
// deny → 503 store-unavailable, allow → 200 degraded, each within a few statement timeouts. Checks of other keys
// go on unaffected, and the locked key answers normally once the lock is released.
func TestLockedRowTimesOutThatKeyOnly(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	p := startSluice(t, "sluice", writeConfig(t, t.TempDir(), faultPolicies), pgEnv(url)...)
	c := &http.Client{Timeout: 10 * time.Second}
	ctx := context.Background()
	for _, policy := range []string{"closed", "open"} {
		if o := check(ctx, c, p.base, "", policy, "locked"); o.status != 200 || !o.allowed {
			t.Fatalf("first check of %s/locked: %+v", policy, o)
		}
	}
	holder := connect(t, url)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1 FROM sluice_buckets WHERE key = 'locked'::bytea FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	load(lctx, 20, []string{p.base}, "", rec, func(cl, seq int) (string, string) {
		policy := []string{"closed", "open"}[seq%2]
		if cl < 4 {
			return policy, "locked"
		}
		return policy, fmt.Sprintf("free-%d-%d", cl, seq%7)
	})
	cancel()
	var locked, free []outcome
	for _, o := range rec.snapshot() {
		if o.key == "locked" {
			locked = append(locked, o)
		} else {
			free = append(free, o)
		}
	}
	t.Logf("locked key: %v, latency %s", statuses(locked), summary(locked))
	t.Logf("other keys meanwhile: %v, latency %s", statuses(free), summary(free))
	if len(locked) == 0 || len(free) == 0 {
		t.Fatal("no checks ran")
	}
	for _, o := range locked {
		want := o.policy == "closed" && o.status == 503 && o.ptype == "https://sluice.dev/problems/store-unavailable" ||
			o.policy == "open" && o.status == 200 && o.degraded
		if !want || o.took > 25*statementTimeout {
			t.Fatalf("check of the locked key: %+v (took %s)", o, o.took)
		}
		if o.took < statementTimeout/2 {
			t.Fatalf("check of the locked key answered in %s, before the statement timeout: did it wait on the lock?", o.took)
		}
	}
	// Other keys never wait on the lock. On a loaded 2-core machine one of them may still meet the statement
	// timeout now and then (and get its failure_mode); more than 5% would mean the lock spreads.
	failed := 0
	for _, o := range free {
		if o.status != 200 || o.degraded {
			failed++
		}
	}
	if failed*20 > len(free) {
		t.Fatalf("%d of %d checks of other keys failed while one row was locked", failed, len(free))
	}
	if p99 := percentile(latencies(free), 99); p99 > 10*statementTimeout {
		t.Fatalf("other keys' p99 %s while one row was locked", p99)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if o := check(ctx, c, p.base, "", "closed", "locked"); o.status != 200 || o.degraded {
		t.Fatalf("the locked key after the lock was released: %+v", o)
	}
}

// TestPoolSmallerThanClients: a replica with two pooled connections and 100 concurrent clients. Waiting for a
// connection is bounded by the same deadline as the statement, so every request completes (no deadlock, no
// request held beyond a few statement timeouts), and the requests that did not get a connection in time get
// their policy's failure_mode, not a 500.
func TestPoolSmallerThanClients(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	p := startSluice(t, "sluice", writeConfig(t, t.TempDir(), faultPolicies), pgEnv(url, "SLUICE_POSTGRES_MAX_CONNS=2")...)
	admin := connect(t, cluster.URL())
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	var peakConns int
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			var n int
			if admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice'").Scan(&n) == nil {
				peakConns = max(peakConns, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	start := time.Now()
	load(ctx, 100, []string{p.base}, "", rec, func(cl, seq int) (string, string) {
		return "probe", fmt.Sprintf("k%d", rand.IntN(1000))
	})
	cancel()
	<-sampled
	all := rec.snapshot()
	st := statuses(all)
	t.Logf("100 clients, max_conns 2, %s: %v; latency %s; %.0f checks/s; peak sluice connections %d", time.Since(start).Round(time.Millisecond), st, summary(all), float64(len(all))/time.Since(start).Seconds(), peakConns)
	// Every second of the run admitted something: no deadlock, no stall.
	perSecond := map[int]int{}
	for _, o := range all {
		if o.status == 200 && o.allowed && !o.degraded {
			perSecond[int(o.at.Sub(start).Seconds())]++
		}
	}
	for s := range 5 {
		if perSecond[s] == 0 {
			t.Errorf("no check admitted in second %d of the run: %v", s, perSecond)
		}
	}
	errs := 0
	for _, o := range all {
		switch {
		case o.status == 200 && !o.degraded:
		case o.status == 503 && o.ptype == "https://sluice.dev/problems/store-unavailable":
			errs++
		default:
			t.Fatalf("outside the contract: %+v", o)
		}
		if o.took > 25*statementTimeout {
			t.Fatalf("a request waited %s with a pool of 2", o.took)
		}
	}
	if errs*2 > len(all) {
		t.Errorf("an error storm: %d of %d checks got 503", errs, len(all))
	}
	if peakConns > 2 {
		t.Errorf("sluice opened %d connections with max_conns 2", peakConns)
	}
}

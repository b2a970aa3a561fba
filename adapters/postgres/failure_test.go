package postgres_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
)

// The database goes away: each call fails within about the statement timeout (not after a TCP timeout), the
// Limiter applies each policy's failure_mode, and the same store recovers by itself when the database returns.
func TestDatabaseDownAndBack(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	const timeout = 250 * time.Millisecond
	s := open(t, postgres.Options{URL: url, StatementTimeout: timeout})
	policies := []domain.Policy{
		{Name: "closed", Limit: 100, Window: time.Hour, FailureMode: domain.FailDeny},
		{Name: "open", Limit: 100, Window: time.Hour, FailureMode: domain.FailAllow},
	}
	lim, err := domain.NewService(policies, s, s, nil, domain.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(policy string) (domain.Result, time.Duration, error) {
		start := time.Now()
		res, err := lim.Check(ctx, domain.CheckRequest{Policy: policy, Key: "k", Cost: 1})
		return res, time.Since(start), err
	}
	for _, p := range []string{"closed", "open"} {
		if res, _, err := check(p); err != nil || !res.Allowed || res.Degraded {
			t.Fatalf("%s before the outage: %+v, %v", p, res, err)
		}
	}

	cluster.Stop()
	// Generous bound: the point is "about the statement timeout", not a TCP or connect timeout (tens of seconds).
	const bound = 5 * time.Second
	var slowest time.Duration
	for range 5 {
		_, took, err := check("closed")
		if !domainErrUnavailable(err) {
			t.Fatalf("failure_mode deny while the database is down: %v, want ErrUnavailable", err)
		}
		res, took2, err := check("open")
		if err != nil || !res.Allowed || !res.Degraded {
			t.Fatalf("failure_mode allow while the database is down: %+v, %v", res, err)
		}
		slowest = max(slowest, took, took2)
	}
	if slowest > bound {
		t.Fatalf("a check took %s while the database was down, want well under %s (statement timeout %s)", slowest, bound, timeout)
	}
	t.Logf("slowest check while down: %s (statement timeout %s)", slowest, timeout)
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded while the database was down")
	}

	cluster.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, _, err := check("closed")
		if err == nil && res.Allowed && !res.Degraded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover within 30s of the database's return: %+v, %v", res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after recovery: %v", err)
	}
	// The state survived the restart: 2 units of "closed" were admitted in all (the degraded ones of "open"
	// recorded nothing).
	if d, err := s.Decide(ctx, domain.BucketRequest{Policy: "closed", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 100, Window: time.Hour}}); err != nil || d.Remaining != 100-2-1 {
		t.Fatalf("state after recovery: %+v, %v", d, err)
	}
}

func domainErrUnavailable(err error) bool {
	_, ok := err.(*domain.UnavailableError)
	return ok
}

// A database host that accepts connections and never answers (a network partition, a hung server) must not hold a
// check for a TCP or connect timeout either: the Go deadline just above the statement timeout ends it.
func TestUnresponsiveDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // hold it open, say nothing
		}
	}()
	const timeout = 250 * time.Millisecond
	s, err := postgres.Open(context.Background(), postgres.Options{
		URL:              "postgres://postgres@" + l.Addr().String() + "/sluice?sslmode=disable",
		StatementTimeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for range 3 {
		start := time.Now()
		_, err := s.Decide(context.Background(), domain.BucketRequest{Policy: "p", Key: "k", Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1, Window: time.Minute}, Cost: 1})
		took := time.Since(start)
		if err == nil {
			t.Fatal("Decide succeeded against a silent server")
		}
		if took > 5*time.Second {
			t.Fatalf("Decide took %s against a silent server (statement timeout %s)", took, timeout)
		}
		t.Logf("failed after %s: %v", took, err)
	}
}

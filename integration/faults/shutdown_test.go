package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

// TestSIGTERMUnderLoad: sluice on Postgres (pool, janitor, policy refresher all running) under 40 clients gets
// SIGTERM. Every request sent before the signal gets its answer, including one whose body is still arriving;
// connections made after it are refused; the process closes the janitor and the pool and exits 0 within the drain
// timeout, leaving no connection behind in the database.
func TestSIGTERMUnderLoad(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	const drain = 5 * time.Second
	p := startSluice(t, "sluice", writeConfig(t, t.TempDir(), faultPolicies),
		// A statement timeout well above the machine's noise: database faults are other tests' subject.
		pgEnv(url, "SLUICE_DRAIN_TIMEOUT="+drain.String(), "SLUICE_JANITOR_INTERVAL=1m", "SLUICE_POSTGRES_STATEMENT_TIMEOUT=2s")...)
	admin := connect(t, cluster.URL())

	// One connection per request, so "sent before the signal" is "connected before the listener closed", with no
	// keep-alive race in the way.
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				o := check(context.Background(), client, p.base, "", "probe", "k"+strconv.Itoa(rand.IntN(100)))
				o.replica = i
				rec.add(o)
				if o.status == 0 {
					time.Sleep(20 * time.Millisecond) // refused: don't spin
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)

	// A request in flight at the signal: headers and half of the body sent.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"policy":"probe","key":"in-flight"}`
	fmt.Fprintf(conn, "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	time.Sleep(100 * time.Millisecond)
	connsBefore := sluiceConns(t, admin)

	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Connections are refused once the listener has closed.
	var refusedAt time.Time
	for deadline := time.Now().Add(drain); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			refusedAt = time.Now()
			break
		}
		c.Close()
	}
	if refusedAt.IsZero() {
		t.Fatal("still accepting connections after SIGTERM")
	}
	// The in-flight request completes after the signal.
	time.Sleep(300 * time.Millisecond)
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request in flight at SIGTERM: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"allowed":true`) {
		t.Fatalf("the request in flight at SIGTERM: %d %s", resp.StatusCode, got)
	}
	conn.Close()

	select {
	case <-p.done:
	case <-time.After(drain + 5*time.Second):
		t.Fatalf("still running %s after SIGTERM (drain timeout %s)", drain+5*time.Second, drain)
	}
	exitAfter := time.Since(sigAt)
	cancel()
	wg.Wait()
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v", p.err)
	}
	logText := p.logText()
	for _, want := range []string{"shutting down: draining in-flight requests", "drained and stopped"} {
		if !strings.Contains(logText, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// The pool closed: the server has no connection of sluice's left (polled briefly: backends exit as their
	// sockets close).
	connsAfter := -1
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if connsAfter = sluiceConns(t, admin); connsAfter == 0 {
			break
		}
	}
	if connsAfter != 0 {
		t.Errorf("%d sluice connections left in the database after exit", connsAfter)
	}

	var before, after []outcome
	for _, o := range rec.snapshot() {
		// Requests begun in the last 100ms before the signal may connect after the listener closed: they
		// count as "after" (refused or answered, both are right).
		if o.at.Before(sigAt.Add(-100 * time.Millisecond)) {
			before = append(before, o)
		} else {
			after = append(after, o)
		}
	}
	for _, o := range before {
		if o.status != 200 {
			t.Errorf("a request sent before SIGTERM did not complete: %+v", o)
		}
	}
	// After the signal: answered (connected before the listener closed), or refused. A connection the kernel had
	// completed but the server had not yet accepted when the listener closed is reset unread: the client sees EOF
	// or a reset, and the request was never processed, so it is a refusal too.
	refused := 0
	for _, o := range after {
		switch {
		case o.status == 200:
		case o.status == 0 && (strings.Contains(o.err, "connection refused") || strings.HasSuffix(o.err, ": EOF") || strings.Contains(o.err, "connection reset by peer")):
			refused++
		default:
			t.Errorf("a request after SIGTERM: %+v", o)
		}
	}
	t.Logf("SIGTERM under 40 clients: %d requests before it all answered (%v); after it %v (%d refused); listener closed %s after the signal; exit 0 %s after it (drain timeout %s); sluice connections %d → %d",
		len(before), statuses(before), statuses(after), refused, refusedAt.Sub(sigAt).Round(time.Millisecond), exitAfter.Round(time.Millisecond), drain, connsBefore, connsAfter)
}

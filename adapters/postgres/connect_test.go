package postgres

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// gateWith installs a gate with the given slots on a pool config whose dialer is fake: refused while *down,
// otherwise one end of a pipe.
func gateWith(t *testing.T, slots int, down *bool) (*connectGate, *pgxpool.Config, *time.Time) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://u@127.0.0.1:1/db")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DialFunc = func(context.Context, string, string) (net.Conn, error) {
		if *down {
			return nil, errors.New("connect: connection refused")
		}
		c, _ := net.Pipe()
		return c, nil
	}
	now := time.Unix(1e9, 0)
	g := newConnectGate(slots)
	g.now = func() time.Time { return now }
	g.install(cfg)
	return g, cfg, &now
}

// connect runs what the pool does for one new connection up to the first dial.
func connect(ctx context.Context, cfg *pgxpool.Config) (net.Conn, func(context.Context, string, string) (net.Conn, error), error) {
	cc := cfg.ConnConfig.Copy()
	if err := cfg.BeforeConnect(ctx, cc); err != nil {
		return nil, nil, err
	}
	c, err := cc.DialFunc(ctx, "tcp", "127.0.0.1:1")
	return c, cc.DialFunc, err
}

func TestConnectGateBacksOffWhileTheDatabaseIsDown(t *testing.T) {
	down := true
	_, cfg, now := gateWith(t, 4, &down)
	ctx := context.Background()
	if _, _, err := connect(ctx, cfg); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("first attempt: %v, want the dial's own error", err)
	}
	// Until the delay has passed, attempts fail at once, saying why, without dialling.
	_, _, err := connect(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "not connecting for another") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("attempt during the backoff: %v", err)
	}
	// The delay doubles with each failure in a row, up to connectBackoffMax (jittered between half and all of it).
	for i := 2; i <= 12; i++ {
		*now = now.Add(connectBackoffMax)
		if _, _, err := connect(ctx, cfg); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("attempt %d after the delay: %v, want a dial", i, err)
		}
	}
	*now = now.Add(connectBackoffMax/2 - time.Millisecond)
	if _, _, err := connect(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not connecting") {
		t.Fatalf("less than half the longest delay after 12 failures: %v, want a fast failure", err)
	}
	// The database is back: the next attempt after the delay dials, and its success resets the backoff.
	down = false
	*now = now.Add(connectBackoffMax)
	c, _, err := connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.(*gatedConn).settle(true) // AfterConnect
	down = true
	if _, _, err := connect(ctx, cfg); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("first failure after a success: %v, want a dial", err)
	}
	*now = now.Add(connectBackoffMin)
	if _, _, err := connect(ctx, cfg); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("one minimum delay after the first failure: %v, want a dial (the backoff restarted from the minimum)", err)
	}
}

func TestConnectGateBoundsAttemptsInFlight(t *testing.T) {
	down := false
	g, cfg, _ := gateWith(t, 2, &down)
	ctx := context.Background()
	a, _, err := connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, dialB, err := connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Both slots are taken: a third attempt waits for one, until its context ends.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, _, err := connect(short, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third attempt with two in flight: %v, want to wait for a slot", err)
	}
	// Later dials of a connection (a cancel request, a fallback) never wait for a slot.
	if c, err := dialB(short, "tcp", "127.0.0.1:1"); err != nil {
		t.Fatalf("second dial of one connection with no slot free: %v", err)
	} else {
		c.Close()
	}
	// A start-up that fails (pgconn closes the connection) frees its slot without a backoff; one that succeeds
	// (AfterConnect) frees it too, and closing it later changes nothing.
	a.Close()
	b.(*gatedConn).settle(true)
	b.Close()
	if len(g.slots) != 0 {
		t.Fatalf("%d slots still held", len(g.slots))
	}
	if err := g.admit(); err != nil {
		t.Fatalf("a failed start-up started a backoff: %v", err)
	}
}

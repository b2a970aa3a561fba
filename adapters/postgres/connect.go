package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pacing of new connections (see connectGate).
const (
	connectBackoffMin = 50 * time.Millisecond
	connectBackoffMax = time.Second
)

// connectGate paces the pool's new connections. pgxpool opens one whenever a caller finds none idle, at any rate:
// while the database cannot serve connections (down, starting up, recovering from a crash) every check under
// load starts another attempt. A server that is back but busy cannot accept them as fast as they come; they pile
// up in its listen queue, most abandoned by clients that have timed out, and the postmaster forks a backend for
// each dead one in turn while new attempts join the tail and time out in their turn. That storm can keep a
// database that is back out of reach for good (seen in TestPostgresKilledUnderLoad: 440 dead connections queued,
// no replica recovering within 30 s).
//
// The gate bounds the attempts in flight, so the listen queue never holds more than a few of this replica's
// attempts. And when the database cannot be reached at all (the dial fails: refused, unreachable, timed out),
// it fails further attempts at once for a jittered delay that doubles with each such failure in a row (50ms up
// to 1s): checks then get their failure_mode at once instead of after a timeout, and a database host that is
// down sees a trickle of attempts. A connection that opens resets the delay. An attempt that reaches the server
// but fails its start-up (the server is starting up, or too slow) only gives its slot back: the server is there,
// and the bound on attempts in flight is what protects it. An attempt is settled when pgx reports the
// connection usable (AfterConnect) or closes it before that.
type connectGate struct {
	slots chan struct{} // one token per attempt in flight
	now   func() time.Time

	mu       sync.Mutex
	failures int       // failed attempts in a row
	until    time.Time // no attempt before this instant
	lastErr  error
}

func newConnectGate(inFlight int) *connectGate {
	return &connectGate{slots: make(chan struct{}, max(inFlight, 1)), now: time.Now}
}

// install wraps the pool's dialer and its BeforeConnect and AfterConnect hooks (after any set by
// Options.ConfigurePool).
//
// Only the first dial of a connect goes through the gate. The connection keeps its dialer for good and dials
// again for other reasons: a fallback during the connect (sslmode=prefer, libpq's default, dials again without
// TLS when the server refuses it) and, later, every cancel request (pgconn sends one when a query's context ends,
// and the pool waits for it before the connection's slot is free again). Those must never wait behind new
// connections for a slot.
func (g *connectGate) install(cfg *pgxpool.Config) {
	dial := cfg.ConnConfig.DialFunc
	if dial == nil {
		d := &net.Dialer{KeepAlive: 5 * time.Minute}
		dial = d.DialContext
	}
	before := cfg.BeforeConnect
	cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
		if err := g.admit(); err != nil {
			return err
		}
		var dialed atomic.Bool
		cc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dialed.Swap(true) {
				return dial(ctx, network, addr)
			}
			return g.dial(ctx, dial, network, addr)
		}
		if before != nil {
			return before(ctx, cc)
		}
		return nil
	}
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if gc := gatedOf(c.PgConn().Conn()); gc != nil {
			gc.settle(true)
		}
		if after != nil {
			return after(ctx, c)
		}
		return nil
	}
}

// admit fails at once while the gate is backing off after failed attempts.
func (g *connectGate) admit() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if wait := g.until.Sub(g.now()); wait > 0 {
		return fmt.Errorf("not connecting for another %s after %d failed connection attempts in a row (last: %v)",
			wait.Round(time.Millisecond), g.failures, g.lastErr)
	}
	return nil
}

// settled records the outcome of an attempt: nil (a usable connection) resets the backoff; a dial error extends it.
func (g *connectGate) settled(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		g.failures, g.until, g.lastErr = 0, time.Time{}, nil
		return
	}
	g.failures++
	g.lastErr = err
	d := connectBackoffMin << min(g.failures-1, 10)
	d = min(d, connectBackoffMax)
	d = d/2 + rand.N(d/2+1) // jitter, so replicas do not retry in step
	if until := g.now().Add(d); until.After(g.until) {
		g.until = until
	}
}

// dial waits for a slot, then dials; the connection it returns holds the slot until it is settled.
func (g *connectGate) dial(ctx context.Context, dial pgconn.DialFunc, network, addr string) (net.Conn, error) {
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Another attempt may have failed while this one waited for its turn.
	if err := g.admit(); err != nil {
		<-g.slots
		return nil, err
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		<-g.slots
		g.settled(err)
		return nil, err
	}
	return &gatedConn{Conn: c, gate: g}, nil
}

// gatedConn is a connection attempt holding a gate slot until it is settled.
type gatedConn struct {
	net.Conn
	gate *connectGate
	once sync.Once
}

// settle gives the slot back; ready reports the connection usable (resetting the backoff).
func (c *gatedConn) settle(ready bool) {
	c.once.Do(func() {
		<-c.gate.slots
		if ready {
			c.gate.settled(nil)
		}
	})
}

func (c *gatedConn) Close() error {
	c.settle(false) // a no-op once the connection was reported usable
	return c.Conn.Close()
}

// gatedOf finds the gatedConn under a connection pgx holds (beneath TLS, if any).
func gatedOf(c net.Conn) *gatedConn {
	for c != nil {
		switch v := c.(type) {
		case *gatedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

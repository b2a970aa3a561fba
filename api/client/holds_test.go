package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/api/client"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// holdServer serves sluice over a memory store and a fake clock, with a concurrency policy "slots" (3 held at
// once), a window policy "quota" (10 per minute) and a shadow policy "trial" (1 per minute).
func holdServer(t *testing.T) (*client.ClientWithResponses, *clocktest.Clock) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	policies := []domain.Policy{
		{Name: "slots", Limit: 3, Window: time.Minute, Algorithm: domain.Concurrency},
		{Name: "quota", Limit: 10, Window: time.Minute},
		{Name: "trial", Limit: 1, Window: time.Minute, Shadow: true},
	}
	lim, err := domain.NewService(policies, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 100}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: lim}))
	t.Cleanup(srv.Close)
	c, err := client.NewClientWithResponses(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, clock
}

// free is what a peek of the key says is free: the units a check (on concurrency, a hold) of 1 would see,
// remaining + 1 when admitted, 0 when not.
func free(t *testing.T, c *client.ClientWithResponses, policy, key string) int64 {
	t.Helper()
	rsp, err := c.GetKeyWithResponse(context.Background(), policy, key)
	if err != nil || rsp.JSON200 == nil {
		t.Fatalf("peek: %v %s", err, rsp.Body)
	}
	if !rsp.JSON200.Allowed {
		return 0
	}
	return rsp.JSON200.Remaining + 1
}

func TestWithHoldSettlesOnSuccess(t *testing.T) {
	c, _ := holdServer(t)
	ran := false
	err := c.WithHold(context.Background(), client.HoldParams{Policy: "quota", Key: "k", Amount: 5, TTL: 1500 * time.Microsecond},
		func(ctx context.Context, h *client.Hold) (int64, error) {
			ran = true
			if h.Amount != 5 || h.Id == "" || h.ExpiresAt == nil {
				t.Errorf("hold %+v", h)
			}
			if got := free(t, c, "quota", "k"); got != 5 {
				t.Errorf("while held: %d free, want 5", got)
			}
			return 2, nil
		})
	if err != nil || !ran {
		t.Fatalf("WithHold: %v (ran %v)", err, ran)
	}
	if got := free(t, c, "quota", "k"); got != 8 {
		t.Fatalf("after a settle of 2: %d free, want 8", got)
	}
}

func TestWithHoldReleasesOnError(t *testing.T) {
	c, _ := holdServer(t)
	boom := errors.New("boom")
	err := c.WithHold(context.Background(), client.HoldParams{Policy: "slots", Key: "k", Amount: 2},
		func(ctx context.Context, h *client.Hold) (int64, error) {
			if got := free(t, c, "slots", "k"); got != 1 {
				t.Errorf("while held: %d free, want 1", got)
			}
			return 2, boom
		})
	if !errors.Is(err, boom) {
		t.Fatalf("WithHold: %v, want boom", err)
	}
	if got := free(t, c, "slots", "k"); got != 3 {
		t.Fatalf("after fn failed: %d free, want 3", got)
	}
	// On a window policy the release gives the units back too.
	err = c.WithHold(context.Background(), client.HoldParams{Policy: "quota", Key: "k", Amount: 4},
		func(context.Context, *client.Hold) (int64, error) { return 0, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("WithHold: %v, want boom", err)
	}
	if got := free(t, c, "quota", "k"); got != 10 {
		t.Fatalf("after fn failed on quota: %d free, want 10", got)
	}
}

func TestWithHoldReleasesOnPanic(t *testing.T) {
	c, _ := holdServer(t)
	func() {
		defer func() {
			if v := recover(); v != "kaboom" {
				t.Fatalf("recovered %v, want the panic of fn", v)
			}
		}()
		_ = c.WithHold(context.Background(), client.HoldParams{Policy: "slots", Key: "k", Amount: 3},
			func(context.Context, *client.Hold) (int64, error) {
				if got := free(t, c, "slots", "k"); got != 0 {
					t.Errorf("while held: %d free, want 0", got)
				}
				panic("kaboom")
			})
		t.Fatal("WithHold returned instead of panicking")
	}()
	if got := free(t, c, "slots", "k"); got != 3 {
		t.Fatalf("after the panic: %d free, want 3", got)
	}
}

// TestWithHoldReleasesOnCancellation: the caller's ctx is cancelled while fn runs; the release still reaches the
// server (it does not use the cancelled ctx) and the units are back.
func TestWithHoldReleasesOnCancellation(t *testing.T) {
	c, _ := holdServer(t)
	for _, fnHonoursCtx := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		err := c.WithHold(ctx, client.HoldParams{Policy: "slots", Key: "k", Amount: 2},
			func(ctx context.Context, h *client.Hold) (int64, error) {
				if got := free(t, c, "slots", "k"); got != 1 {
					t.Errorf("while held: %d free, want 1", got)
				}
				cancel() // the caller gives up mid-flight
				<-ctx.Done()
				if fnHonoursCtx {
					return 0, ctx.Err()
				}
				return 2, nil // fn ignored the cancellation: still released, the caller gave up
			})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WithHold (fn honours ctx: %v): %v, want context.Canceled", fnHonoursCtx, err)
		}
		if got := free(t, c, "slots", "k"); got != 3 {
			t.Fatalf("after the cancellation (fn honours ctx: %v): %d free, want 3", fnHonoursCtx, got)
		}
	}
}

func TestWithHoldDenialRunsNothing(t *testing.T) {
	c, _ := holdServer(t)
	rsp, err := c.AcquireHoldWithResponse(context.Background(), client.AcquireRequest{Policy: "slots", Key: "k", Amount: 3})
	if err != nil || rsp.JSON200 == nil || !rsp.JSON200.Allowed {
		t.Fatalf("filling the key: %v %s", err, rsp.Body)
	}
	err = c.WithHold(context.Background(), client.HoldParams{Policy: "slots", Key: "k", Amount: 1},
		func(context.Context, *client.Hold) (int64, error) {
			t.Error("fn ran on a denial")
			return 0, nil
		})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || !errors.Is(err, client.ErrDenied) {
		t.Fatalf("WithHold: %v, want a *DeniedError", err)
	}
	if denied.RetryAfter <= 0 || denied.RetryAfter > time.Minute || denied.Policy != "slots" || denied.Amount != 1 {
		t.Fatalf("denial: %+v", denied)
	}
	if got := free(t, c, "slots", "k"); got != 0 {
		t.Fatalf("after the denial: %d free, want 0 (the denial recorded nothing, the first hold stays)", got)
	}
}

// TestWithHoldSettleRefused: a settle the server refuses (the hold passed its deadline while fn ran) is a
// *ProblemError with the problem type.
func TestWithHoldSettleRefused(t *testing.T) {
	c, clock := holdServer(t)
	err := c.WithHold(context.Background(), client.HoldParams{Policy: "slots", Key: "k", Amount: 1, TTL: 10 * time.Second},
		func(context.Context, *client.Hold) (int64, error) {
			clock.Advance(11 * time.Second)
			return 1, nil
		})
	var pe *client.ProblemError
	if !errors.As(err, &pe) || pe.Op != "settle" || pe.StatusCode != 409 || pe.Problem.Type != "https://sluice.dev/problems/hold-expired" {
		t.Fatalf("WithHold: %v, want a 409 hold-expired settle", err)
	}
}

func TestWithHoldAcquireProblem(t *testing.T) {
	c, _ := holdServer(t)
	err := c.WithHold(context.Background(), client.HoldParams{Policy: "nope", Key: "k", Amount: 1},
		func(context.Context, *client.Hold) (int64, error) {
			t.Error("fn ran")
			return 0, nil
		})
	var pe *client.ProblemError
	if !errors.As(err, &pe) || pe.Op != "acquire" || pe.StatusCode != 404 || pe.Problem.Type != "https://sluice.dev/problems/not-found" {
		t.Fatalf("WithHold: %v, want a 404 acquire", err)
	}
}

// TestWithHoldRecordedNothing: a shadow policy that would have denied admits without recording a hold (no
// expires_at): fn runs, and nothing is settled (a settle would answer 404).
func TestWithHoldRecordedNothing(t *testing.T) {
	c, _ := holdServer(t)
	ran := 0
	err := c.WithHold(context.Background(), client.HoldParams{Policy: "trial", Key: "k", Amount: 1},
		func(ctx context.Context, h *client.Hold) (int64, error) {
			ran++
			if h.ExpiresAt == nil {
				t.Errorf("the first hold recorded nothing: %+v", h)
			}
			return 1, c.WithHold(ctx, client.HoldParams{Policy: "trial", Key: "k", Amount: 1},
				func(_ context.Context, h *client.Hold) (int64, error) {
					ran++
					if h.ExpiresAt != nil {
						t.Errorf("a shadow-denied hold has a deadline: %+v", h)
					}
					return 1, nil
				})
		})
	if err != nil || ran != 2 {
		t.Fatalf("WithHold: %v (ran %d times, want 2)", err, ran)
	}
}

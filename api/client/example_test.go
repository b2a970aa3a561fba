package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/api/client"
	"github.com/sluice-dev/sluice/domain"
)

// A check against the "login" policy (5 per minute): admitted until the limit, then denied with a delay. The
// client is generated from openapi.yaml; every request carries the bearer token.
func ExampleClientWithResponses_CheckWithResponse() {
	baseURL, token, stop := startSluice() // e.g. "http://127.0.0.1:8080" and a token with role check
	defer stop()

	c, err := client.NewClientWithResponses(baseURL, client.WithRequestEditorFn(
		func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for range 6 {
		resp, err := c.CheckWithResponse(ctx, client.CheckRequest{Policy: "login", Key: "user:42"})
		if err != nil {
			log.Fatal(err)
		}
		if resp.JSON200 == nil { // a problem (400, 401, 403, 404, 503...): resp.Body is application/problem+json
			log.Fatalf("check: %d %s", resp.StatusCode(), resp.Body)
		}
		d := resp.JSON200
		if d.Allowed {
			fmt.Printf("allowed, %d left\n", d.Remaining)
		} else {
			fmt.Printf("denied, retry in %s (Retry-After: %s)\n",
				time.Duration(d.RetryAfterMs)*time.Millisecond, resp.HTTPResponse.Header.Get("Retry-After"))
		}
	}
	// Output:
	// allowed, 4 left
	// allowed, 3 left
	// allowed, 2 left
	// allowed, 1 left
	// allowed, 0 left
	// denied, retry in 1m0s (Retry-After: 60)
}

// WithHold runs a function while units are held: at most two streams at once per tenant ("streams" is a
// concurrency policy). The hold is settled with what the function returns, and released if it fails, panics or
// its context is cancelled; a denial runs nothing.
func ExampleClientWithResponses_WithHold() {
	baseURL, token, stop := startSluice()
	defer stop()
	c, err := client.NewClientWithResponses(baseURL, client.WithRequestEditorFn(
		func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	err = c.WithHold(ctx, client.HoldParams{Policy: "streams", Key: "tenant-7", Amount: 1},
		func(ctx context.Context, h *client.Hold) (int64, error) {
			fmt.Printf("streaming, %d held\n", h.Amount)
			// Two more streams do not fit while this one runs.
			err := c.WithHold(ctx, client.HoldParams{Policy: "streams", Key: "tenant-7", Amount: 2},
				func(context.Context, *client.Hold) (int64, error) { return 2, nil })
			var denied *client.DeniedError
			if errors.As(err, &denied) {
				fmt.Printf("denied, retry in %s\n", denied.RetryAfter)
			}
			return 1, nil
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("done")
	// Output:
	// streaming, 1 held
	// denied, retry in 1m0s
	// done
}

// startSluice serves sluice's HTTP API on a loopback port, over a memory store with a clock that stands still
// (so the output above is exact), with one policy and one token.
func startSluice() (baseURL, token string, stop func()) {
	clock := fixedClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	policies := []domain.Policy{
		{Name: "login", Limit: 5, Window: time.Minute},
		{Name: "streams", Limit: 2, Window: time.Minute, Algorithm: domain.Concurrency},
	}
	lim, err := domain.NewService(policies, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 100}), nil, clock)
	if err != nil {
		log.Fatal(err)
	}
	token = "example-token-0123456789"
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{
		Limiter: lim,
		Tokens:  []httpapi.Token{{Name: "example", Secret: token, Role: httpapi.RoleCheck}},
	}))
	return srv.URL, token, srv.Close
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

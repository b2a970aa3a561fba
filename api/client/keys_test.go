package client_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/api/client"
	"github.com/sluice-dev/sluice/domain"
)

// TestDotSegmentKeysRoundTrip runs the real HTTP surface and peeks at and resets the keys "." and ".." (and
// keys that only look like them) through the client: the DotSafe methods keep them; the generated GetKey does
// not (its URL resolution drops the dot segment), which is why they exist.
func TestDotSegmentKeysRoundTrip(t *testing.T) {
	clock := fixedClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	lim, err := domain.NewService([]domain.Policy{{Name: "login", Limit: 5, Window: time.Minute}}, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 100}), nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewHandler(httpapi.Options{Limiter: lim}))
	defer srv.Close()
	c, err := client.NewClientWithResponses(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{".", "..", "...", "%2E", "a/..", "./a", "plain"} {
		if r, err := c.CheckWithResponse(ctx, client.CheckRequest{Policy: "login", Key: key, Cost: ptr(int64(2))}); err != nil || r.JSON200 == nil {
			t.Fatalf("check %q: %v %v", key, err, r)
		}
		peek, err := c.GetKeyDotSafeWithResponse(ctx, "login", key)
		if err != nil || peek.JSON200 == nil || peek.JSON200.Key != key || peek.JSON200.Remaining != 2 {
			t.Fatalf("peek %q: %v %+v %s", key, err, peek.JSON200, peek.Body)
		}
		reset, err := c.ResetKeyDotSafeWithResponse(ctx, "login", key)
		if err != nil || reset.StatusCode() != 204 {
			t.Fatalf("reset %q: %v %d %s", key, err, reset.StatusCode(), reset.Body)
		}
		if peek, _ := c.GetKeyDotSafeWithResponse(ctx, "login", key); peek.JSON200 == nil || peek.JSON200.Remaining != 4 {
			t.Fatalf("after reset %q: %s", key, peek.Body)
		}
	}
	// The generated method loses "..": the request reaches another path.
	if r, err := c.GetKeyWithResponse(ctx, "login", ".."); err != nil || r.JSON200 != nil {
		t.Fatalf("the generated GetKey now keeps \"..\" (%v, %s): the DotSafe methods may be unneeded", err, r.Body)
	}
}

func ptr[T any](v T) *T { return &v }

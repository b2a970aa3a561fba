package ratelimitheader_test

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/ratelimitheader"
	"github.com/sluice-dev/sluice/domain"
)

func TestFormats(t *testing.T) {
	p := domain.Policy{Name: "login", Limit: 5, Window: 90*time.Second + time.Millisecond}
	if got := ratelimitheader.Policy(domain.Result{Policy: p}); got != `"login";q=5;w=91` {
		t.Errorf("Policy: %s", got)
	}
	// A calendar period's w is the period that decided: a 23-hour civil day, not the policy's Window (its bound).
	cal := domain.Result{Policy: domain.Policy{Name: "daily", Limit: 9, Window: 48 * time.Hour}, Decision: domain.Decision{Period: 23 * time.Hour}}
	if got := ratelimitheader.Policy(cal); got != `"daily";q=9;w=82800` {
		t.Errorf("Policy of a calendar period: %s", got)
	}
	r := domain.Result{Policy: p, Decision: domain.Decision{Remaining: 2, ResetAfter: 1500 * time.Millisecond, RetryAfter: 200 * time.Millisecond}}
	if got := ratelimitheader.RateLimit(r); got != `"login";r=2;t=2` {
		t.Errorf("RateLimit: %s", got)
	}
	if got := ratelimitheader.RetryAfterSeconds(r); got != 1 {
		t.Errorf("RetryAfterSeconds: %d (rounded up, at least 1)", got)
	}
	r.RetryAfter = 0
	if got := ratelimitheader.RetryAfterSeconds(r); got != 1 {
		t.Errorf("RetryAfterSeconds of 0: %d, want 1", got)
	}
	if ratelimitheader.CeilSeconds(-time.Second) != 0 || ratelimitheader.CeilSeconds(time.Second) != 1 || ratelimitheader.CeilSeconds(time.Second+1) != 2 {
		t.Error("CeilSeconds")
	}
}

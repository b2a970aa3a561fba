package client

// Hand-written (not generated): WithHold, the acquire → work → settle or release pattern over the generated
// AcquireHold, SettleHold and ReleaseHold calls, with the cleanup that every caller would otherwise have to get
// right (a release on every path that does not settle, on a context that is not already cancelled).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HoldParams describe the hold WithHold acquires.
type HoldParams struct {
	Policy string
	Key    string
	// Amount is the units to reserve (≥ 1, at most the policy's limit).
	Amount int64
	// TTL is the hold's deadline from its acquisition; 0 is the policy's window (also the most it may be). Sent in
	// whole milliseconds, rounded up.
	TTL time.Duration
	// ID (optional) is the caller's id for the acquisition: a retried WithHold with the same id answers the hold
	// already held instead of taking more units.
	ID string
	// CleanupTimeout bounds the settle or release that ends the hold; 0 means 5 s. It runs on a context that keeps
	// ctx's values but not its cancellation, so a cancelled caller still gives its units back.
	CleanupTimeout time.Duration
}

// ErrDenied is what a *DeniedError matches with errors.Is.
var ErrDenied = errors.New("sluice: hold denied")

// DeniedError says the hold was not admitted: nothing was recorded and the function did not run. RetryAfter is
// when the same amount could be admitted (the decision's retry_after_ms).
type DeniedError struct {
	Policy, Key string
	Amount      int64
	RetryAfter  time.Duration
	Decision    HoldDecision
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("sluice: a hold of %d on key %q denied by policy %q; retry after %s", e.Amount, e.Key, e.Policy, e.RetryAfter)
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// ProblemError is an answer other than 200 to one of WithHold's calls: Problem is its RFC 9457 body (Type is
// empty when the body was not a problem), RetryAfter its Retry-After header (0 when absent).
type ProblemError struct {
	Op         string // "acquire", "settle" or "release"
	StatusCode int
	Problem    Problem
	RetryAfter time.Duration
}

func (e *ProblemError) Error() string {
	msg := fmt.Sprintf("sluice: %s: %d", e.Op, e.StatusCode)
	if e.Problem.Type != "" {
		msg += " " + e.Problem.Type
	}
	if e.Problem.Detail != nil {
		msg += ": " + *e.Problem.Detail
	}
	return msg
}

func problemError(op string, rsp *http.Response, body []byte) *ProblemError {
	e := &ProblemError{Op: op, StatusCode: rsp.StatusCode}
	if strings.HasPrefix(rsp.Header.Get("Content-Type"), "application/problem+json") {
		_ = json.Unmarshal(body, &e.Problem) // a body that does not decode leaves the status alone to speak
	}
	if s, err := strconv.Atoi(rsp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// WithHold acquires a hold of p.Amount units, runs fn while it is held, and ends it:
//
//   - denied: returns a *DeniedError (errors.Is(err, ErrDenied)) carrying the retry delay; fn does not run;
//   - fn returns (actual, nil) and ctx is not done: settles the hold with actual (less than the amount gives
//     the difference back, more is recorded as an overdraft); a settle the server refuses is a *ProblemError;
//   - fn returns an error: releases the hold and returns fn's error (joined with the release's, if that failed);
//   - ctx is done when fn returns (the caller gave up): releases the hold and returns ctx's error (with fn's);
//   - fn panics: releases the hold, then panics again with the same value.
//
// The settle and the release run on context.WithoutCancel(ctx) bounded by p.CleanupTimeout, so a cancelled
// ctx still gives the units back. A hold that recorded nothing (the answer has no expires_at: a shadow policy
// that would have denied, or a store failure that failure_mode allow admitted) is neither settled nor released.
// If the release itself fails (the server cannot be reached), the hold ends at its deadline. fn gets ctx and the
// hold (its Id is the handle for SettleHold, RenewHold or ReleaseHold, e.g. to renew a long task).
func (c *ClientWithResponses) WithHold(ctx context.Context, p HoldParams, fn func(ctx context.Context, h *Hold) (actual int64, err error), reqEditors ...RequestEditorFn) (err error) {
	body := AcquireHoldJSONRequestBody{Policy: p.Policy, Key: p.Key, Amount: p.Amount}
	if p.TTL > 0 {
		ms := strconv.FormatInt(int64((p.TTL+time.Millisecond-1)/time.Millisecond), 10) + "ms"
		body.Ttl = &ms
	}
	if p.ID != "" {
		body.Id = &p.ID
	}
	acq, err := c.AcquireHoldWithResponse(ctx, body, reqEditors...)
	if err != nil {
		return fmt.Errorf("sluice: acquire: %w", err)
	}
	if acq.JSON200 == nil {
		return problemError("acquire", acq.HTTPResponse, acq.Body)
	}
	d := acq.JSON200
	if !d.Allowed {
		return &DeniedError{Policy: p.Policy, Key: p.Key, Amount: p.Amount, RetryAfter: time.Duration(d.RetryAfterMs) * time.Millisecond, Decision: *d}
	}
	h := d.Hold
	if h == nil {
		return fmt.Errorf("sluice: acquire: an admitted answer without a hold")
	}
	if h.ExpiresAt == nil {
		_, err := fn(ctx, h) // nothing recorded: nothing to settle or release
		return err
	}
	timeout := p.CleanupTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	end := func(op string, actual int64) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		if op == "release" {
			rsp, err := c.ReleaseHoldWithResponse(cctx, h.Id, reqEditors...)
			if err != nil {
				return fmt.Errorf("sluice: release: %w", err)
			}
			if rsp.JSON200 == nil {
				return problemError(op, rsp.HTTPResponse, rsp.Body)
			}
			return nil
		}
		rsp, err := c.SettleHoldWithResponse(cctx, h.Id, SettleHoldJSONRequestBody{Amount: actual}, reqEditors...)
		if err != nil {
			return fmt.Errorf("sluice: settle: %w", err)
		}
		if rsp.JSON200 == nil {
			return problemError(op, rsp.HTTPResponse, rsp.Body)
		}
		return nil
	}
	done := false
	defer func() {
		if done {
			return
		}
		v := recover()
		rerr := end("release", 0)
		if v != nil {
			panic(v)
		}
		err = errors.Join(err, rerr)
	}()
	actual, err := fn(ctx, h)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		return err // released by the deferred function
	}
	done = true
	return end("settle", actual)
}

// Package httpapi is sluice's HTTP adapter: the handlers of the strict server generated from openapi.yaml (in
// package api), over the domain.Limiter port. Handlers return domain errors; one table (problems.go) turns them
// into RFC 9457 problem responses.
package httpapi

import (
	"time"

	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// server implements api.StrictServerInterface.
type server struct {
	lim   domain.Limiter
	spec  []byte
	store api.HealthStore
	top   TopKeys
	log   *slog.Logger
	// unavailable bounds the store-failure log lines (shared with the error handler).
	unavailable *logLimiter
	// storeSeen: the store has answered a probe since start-up (see Readyz).
	storeSeen atomic.Bool
}

var _ api.StrictServerInterface = (*server)(nil)

func decisionBody(r domain.Result) api.Decision {
	d := api.Decision{
		Allowed:      r.Allowed,
		Policy:       r.Policy.Name,
		Key:          r.Key,
		Limit:        r.Limit,
		Remaining:    r.Remaining,
		ResetAfterMs: r.ResetAfter.Milliseconds(),
		RetryAfterMs: r.RetryAfter.Milliseconds(),
	}
	if r.RetryAfter > 0 && d.RetryAfterMs == 0 {
		d.RetryAfterMs = 1 // never tell a denied client it may retry at once
	}
	// Fresh pointers, not &r.ShadowDenied: taking r's address would move every Result to the heap.
	if r.ShadowDenied {
		v := true
		d.ShadowDenied = &v
	}
	if r.Degraded {
		v := true
		d.Degraded = &v
	}
	if r.Period > 0 {
		v := r.Period.Milliseconds()
		d.PeriodMs = &v
	}
	if r.Policy.Override != "" {
		v := r.Policy.Override
		d.Override = &v
	}
	return d
}

func costOf(c *int64) int64 {
	if c == nil {
		return 1
	}
	return *c
}

// Check implements POST /v1/check.
func (s *server) Check(ctx context.Context, req api.CheckRequestObject) (api.CheckResponseObject, error) {
	res, err := s.check(ctx, req.Body)
	if err != nil {
		return nil, err
	}
	return checkResponse{res}, nil
}

// check is the decision of POST /v1/check (directCheck calls it without boxing the answer).
func (s *server) check(ctx context.Context, body *api.CheckJSONRequestBody) (domain.Result, error) {
	return s.lim.Check(ctx, domain.CheckRequest{Policy: body.Policy, Key: body.Key, Cost: costOf(body.Cost)})
}

// maxChecks is ChecksRequest.checks' maxItems in openapi.yaml.
const maxChecks = 100

// CheckMany implements POST /v1/checks.
func (s *server) CheckMany(ctx context.Context, req api.CheckManyRequestObject) (api.CheckManyResponseObject, error) {
	if n := len(req.Body.Checks); n > maxChecks {
		return nil, domain.Invalid("checks", "must hold at most "+itoa(maxChecks)+" checks, got "+itoa(int64(n)))
	}
	checks := make([]domain.CheckRequest, len(req.Body.Checks))
	for i, c := range req.Body.Checks {
		checks[i] = domain.CheckRequest{Policy: c.Policy, Key: c.Key, Cost: costOf(c.Cost)}
	}
	atomic := req.Body.Atomic != nil && *req.Body.Atomic
	results, allowed, err := s.lim.CheckMany(ctx, checks, atomic)
	if err != nil {
		return nil, err
	}
	out := api.CheckMany200JSONResponse{Allowed: allowed, Decisions: make([]api.Decision, len(results))}
	for i, r := range results {
		out.Decisions[i] = decisionBody(r)
	}
	return out, nil
}

// Authorize implements GET /v1/authorize: 204 or 429, for proxies.
func (s *server) Authorize(ctx context.Context, req api.AuthorizeRequestObject) (api.AuthorizeResponseObject, error) {
	res, err := s.lim.Check(ctx, domain.CheckRequest{Policy: req.Params.Policy, Key: req.Params.Key, Cost: costOf(req.Params.Cost)})
	if err != nil {
		return nil, err
	}
	policy := rateLimitPolicy(res)
	var rl *string
	if !res.Degraded {
		v := rateLimit(res)
		rl = &v
	}
	if res.Allowed {
		return api.Authorize204Response{Headers: api.Authorize204ResponseHeaders{RateLimitPolicy: &policy, RateLimit: rl}}, nil
	}
	ra := retryAfterSeconds(res)
	noStore := "no-store"
	p := problem(kindRateLimited, "policy "+res.Policy.Name+" admits "+formatQuota(res.Policy)+"; retry after the Retry-After delay", nil)
	return api.Authorize429ApplicationProblemPlusJSONResponse{
		Body:    p,
		Headers: api.Authorize429ResponseHeaders{RateLimitPolicy: &policy, RateLimit: rl, RetryAfter: &ra, CacheControl: &noStore},
	}, nil
}

func formatQuota(p domain.Policy) string {
	if p.Period != nil {
		return itoa(p.Limit) + " per " + string(p.Period.Unit) + " (" + p.Period.Location.String() + ")"
	}
	return itoa(p.Limit) + " per " + domain.FormatDuration(p.Window)
}

func policyBody(p domain.Policy) api.Policy {
	b := api.Policy{
		Name:        p.Name,
		Limit:       p.Limit,
		Window:      domain.FormatDuration(p.Window),
		WindowMs:    p.Window.Milliseconds(),
		Algorithm:   api.Algorithm(p.Algorithm),
		FailureMode: api.PolicyFailureMode(p.FailureMode),
		Shadow:      p.Shadow,
		Source:      api.PolicySource(p.Source),
	}
	if p.Resolution > 0 {
		r := domain.FormatDuration(p.Resolution)
		b.Resolution = &r
	}
	if c := p.Period; c != nil {
		unit, zone, anchor := api.CalendarPeriod(c.Unit), c.Location.String(), c.Anchor.In(c.Location).Format(time.RFC3339)
		b.Period, b.TimeZone, b.Anchor = &unit, &zone, &anchor
	}
	return b
}

// ListPolicies implements GET /v1/policies.
func (s *server) ListPolicies(ctx context.Context, _ api.ListPoliciesRequestObject) (api.ListPoliciesResponseObject, error) {
	ps, err := s.lim.ListPolicies(ctx)
	if err != nil {
		return nil, err
	}
	out := api.ListPolicies200JSONResponse{Policies: make([]api.Policy, len(ps))}
	for i, p := range ps {
		out.Policies[i] = policyBody(p)
	}
	return out, nil
}

// GetPolicy implements GET /v1/policies/{name}.
func (s *server) GetPolicy(ctx context.Context, req api.GetPolicyRequestObject) (api.GetPolicyResponseObject, error) {
	p, err := s.lim.GetPolicy(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return api.GetPolicy200JSONResponse(policyBody(p)), nil
}

// TopKeys implements GET /v1/policies/{name}/top: the policy (which must exist) and its top keys on this replica.
func (s *server) TopKeys(ctx context.Context, req api.TopKeysRequestObject) (api.TopKeysResponseObject, error) {
	by, limit := "denied", 10
	if req.Params.By != nil {
		by = string(*req.Params.By)
	}
	if by != "denied" && by != "allowed" {
		return nil, domain.Invalid("by", fmt.Sprintf("must be denied or allowed, got %q", by))
	}
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	if limit < 1 || limit > 64 {
		return nil, domain.Invalid("limit", fmt.Sprintf("must be 1 to 64, got %d", limit))
	}
	p, err := s.lim.GetPolicy(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	out := api.TopKeys{Policy: p.Name, By: api.TopKeysBy(by), Keys: []api.TopKey{}}
	if s.top != nil {
		keys, interval := s.top.Top(p.Name, topkeys.By(by), limit)
		out.IntervalMs = interval.Milliseconds()
		for _, k := range keys {
			out.Keys = append(out.Keys, api.TopKey{Key: k.Key, Count: k.Count, Error: k.Error})
		}
	}
	return api.TopKeys200JSONResponse(out), nil
}

// PutPolicy implements PUT /v1/policies/{name}. Every bad field is reported at once: a window or resolution that
// does not parse is reported next to the domain's verdict on the other fields (the domain's own word on that
// field is dropped, since it would only judge a duration that was never read).
func (s *server) PutPolicy(ctx context.Context, req api.PutPolicyRequestObject) (api.PutPolicyResponseObject, error) {
	b := req.Body
	unparsed := &domain.ValidationError{}
	var window time.Duration
	switch {
	case b.Window != nil && b.Period != nil:
		unparsed.Add("window", "give either a window or a period, not both")
	case b.Window != nil:
		var err error
		if window, err = domain.ParseDuration(*b.Window); err != nil {
			unparsed.Add("window", err.Error())
		}
	case b.Period == nil:
		unparsed.Add("window", "give a window, or a calendar period")
	}
	p := domain.Policy{Name: req.Name, Limit: b.Limit, Window: window}
	if b.Period != nil || b.TimeZone != nil || b.Anchor != nil {
		p.Period = calendarOf(b.Period, b.TimeZone, b.Anchor, unparsed, "")
	}
	if b.Algorithm != nil {
		p.Algorithm = domain.Algorithm(*b.Algorithm)
	}
	if b.Resolution != nil {
		res, err := domain.ParseDuration(*b.Resolution)
		if err != nil {
			unparsed.Add("resolution", err.Error())
		}
		p.Resolution = res
	}
	if b.FailureMode != nil {
		p.FailureMode = domain.FailureMode(*b.FailureMode)
	}
	if b.Shadow != nil {
		p.Shadow = *b.Shadow
	}
	if len(unparsed.Fields) > 0 {
		var rest *domain.ValidationError
		if errors.As(p.WithDefaults().Validate(""), &rest) {
			for _, f := range rest.Fields {
				if !named(unparsed, f.Field) {
					unparsed.Fields = append(unparsed.Fields, f)
				}
			}
		}
		return nil, unparsed
	}
	stored, created, err := s.lim.PutPolicy(ctx, p)
	if err != nil {
		return nil, err
	}
	if created {
		return api.PutPolicy201JSONResponse(policyBody(stored)), nil
	}
	return api.PutPolicy200JSONResponse(policyBody(stored)), nil
}

// calendarOf reads a policy's period, time_zone and anchor (any of them given) into a Calendar; what does not
// parse is added to v under prefix + the field's name. time_zone or anchor without a period is a problem of
// period.
func calendarOf(period *api.CalendarPeriod, zone *string, anchor *string, v *domain.ValidationError, prefix string) *domain.Calendar {
	c := &domain.Calendar{}
	if period == nil {
		v.Add(prefix+"period", "time_zone and anchor apply to a calendar period: give period (day, week or month)")
	} else {
		c.Unit = domain.CalendarUnit(*period)
	}
	if zone != nil {
		loc, err := domain.LoadTimeZone(*zone)
		if err != nil {
			v.Add(prefix+"time_zone", err.Error())
		}
		c.Location = loc
	}
	if anchor != nil {
		a, err := time.Parse(time.RFC3339, *anchor)
		if err != nil {
			v.Add(prefix+"anchor", fmt.Sprintf("must be an RFC 3339 instant such as 2026-01-31T00:00:00-05:00, got %q", *anchor))
		}
		c.Anchor = a
	}
	return c
}

// DeletePolicy implements DELETE /v1/policies/{name}.
func (s *server) DeletePolicy(ctx context.Context, req api.DeletePolicyRequestObject) (api.DeletePolicyResponseObject, error) {
	if err := s.lim.DeletePolicy(ctx, req.Name); err != nil {
		return nil, err
	}
	return api.DeletePolicy204Response{}, nil
}

// GetKey implements GET /v1/policies/{name}/keys/{key}: a peek.
func (s *server) GetKey(ctx context.Context, req api.GetKeyRequestObject) (api.GetKeyResponseObject, error) {
	res, err := s.peek(ctx, req.Name, req.Key)
	if err != nil {
		return nil, err
	}
	policy := rateLimitPolicy(res)
	h := api.GetKey200ResponseHeaders{RateLimitPolicy: &policy}
	if !res.Degraded {
		rl := rateLimit(res)
		h.RateLimit = &rl
	}
	return api.GetKey200JSONResponse{Body: decisionBody(res), Headers: h}, nil
}

// GetKeyByQuery implements GET /v1/policies/{name}/keys?key=: GetKey for keys that cannot be a path segment.
func (s *server) GetKeyByQuery(ctx context.Context, req api.GetKeyByQueryRequestObject) (api.GetKeyByQueryResponseObject, error) {
	res, err := s.peek(ctx, req.Name, req.Params.Key)
	if err != nil {
		return nil, err
	}
	policy := rateLimitPolicy(res)
	h := api.GetKeyByQuery200ResponseHeaders{RateLimitPolicy: &policy}
	if !res.Degraded {
		rl := rateLimit(res)
		h.RateLimit = &rl
	}
	return api.GetKeyByQuery200JSONResponse{Body: decisionBody(res), Headers: h}, nil
}

func (s *server) peek(ctx context.Context, name, key string) (domain.Result, error) {
	res, err := s.lim.Check(ctx, domain.CheckRequest{Policy: name, Key: key, Cost: 0})
	if err != nil {
		return res, renameField(err, "policy", "name")
	}
	return res, nil
}

// ResetKey implements DELETE /v1/policies/{name}/keys/{key}.
func (s *server) ResetKey(ctx context.Context, req api.ResetKeyRequestObject) (api.ResetKeyResponseObject, error) {
	if err := s.lim.Reset(ctx, req.Name, req.Key); err != nil {
		return nil, err
	}
	return api.ResetKey204Response{}, nil
}

// ResetKeyByQuery implements DELETE /v1/policies/{name}/keys?key=.
func (s *server) ResetKeyByQuery(ctx context.Context, req api.ResetKeyByQueryRequestObject) (api.ResetKeyByQueryResponseObject, error) {
	if err := s.lim.Reset(ctx, req.Name, req.Params.Key); err != nil {
		return nil, err
	}
	return api.ResetKeyByQuery204Response{}, nil
}

// named reports whether ve already names field.
func named(ve *domain.ValidationError, field string) bool {
	for _, f := range ve.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}

// renameField maps a domain field name to the name the client used (a path parameter here).
func renameField(err error, from, to string) error {
	ve, ok := err.(*domain.ValidationError)
	if !ok {
		return err
	}
	for i := range ve.Fields {
		if ve.Fields[i].Field == from {
			ve.Fields[i].Field = to
		}
	}
	return ve
}

// Healthz implements GET /healthz: the process lives.
func (s *server) Healthz(context.Context, api.HealthzRequestObject) (api.HealthzResponseObject, error) {
	return api.Healthz200JSONResponse{Status: api.Ok, Store: &s.store}, nil
}

// Readyz implements GET /readyz, the load balancer's question: should this process get checks? Yes when the
// store answers. Yes too while it does not, if this process has seen it answer since start-up (so its schema was
// current and its policies loaded) and can still resolve every policy: each check is then answered at once by
// its failure_mode, and keeping the replica in the Service is what lets failure_mode allow apply at all. No when
// it has never seen the store answer (a replica started during an outage, or against a schema behind this
// build) or its API policies are not loaded (Limiter.PoliciesLoaded). The problem never carries the store's own error text, which can name
// hosts; the log has it.
func (s *server) Readyz(ctx context.Context, _ api.ReadyzRequestObject) (api.ReadyzResponseObject, error) {
	err := s.lim.Ready(ctx)
	if err == nil {
		s.storeSeen.Store(true)
		return api.Readyz200JSONResponse(s.health(api.Ok, nil)), nil
	}
	cause := domain.StoreCause(err)
	s.logStoreDown(err)
	if !s.storeSeen.Load() {
		return api.Readyz503ApplicationProblemPlusJSONResponse(problem(kindNotReady,
			"the store has not answered since this process started (cause: "+cause+"); it stays out of service until the store answers, its schema is current and its API policies are loaded", nil)), nil
	}
	if s.lim.PoliciesLoaded(ctx) != nil {
		return api.Readyz503ApplicationProblemPlusJSONResponse(problem(kindNotReady,
			"the store does not answer (cause: "+cause+") and the API policies are not loaded, so their checks could not follow their failure_mode", nil)), nil
	}
	return api.Readyz200JSONResponse(s.health(api.Degraded, &cause)), nil
}

// StoreHealth implements GET /healthz/store: whether the store answers now.
func (s *server) StoreHealth(ctx context.Context, _ api.StoreHealthRequestObject) (api.StoreHealthResponseObject, error) {
	err := s.lim.Ready(ctx)
	if err == nil {
		s.storeSeen.Store(true)
		return api.StoreHealth200JSONResponse(s.health(api.Ok, nil)), nil
	}
	cause := domain.StoreCause(err)
	s.logStoreDown(err)
	return api.StoreHealth503ApplicationProblemPlusJSONResponse(problem(kindUnavailable, "the store does not answer (cause: "+cause+"); the server log has its error", nil)), nil
}

// health is the body of /healthz, /readyz and /healthz/store; cause is nil when the store answered.
func (s *server) health(status api.HealthStatus, cause *string) api.Health {
	h := api.Health{Status: status, Store: &s.store}
	st := api.HealthStoreStatusAvailable
	if cause != nil {
		st = api.HealthStoreStatusUnavailable
		c := api.HealthCause(*cause)
		h.Cause = &c
	}
	h.StoreStatus = &st
	return h
}

// logStoreDown logs a failed store probe, at most once a second like every other store failure.
func (s *server) logStoreDown(err error) {
	if ok, suppressed := s.unavailable.admit(); ok {
		s.log.Warn("store unavailable", "path", "readiness", "err", err, "suppressed", suppressed)
	}
}

// Metrics is the strict interface's GET /metrics, which never runs: NewHandler serves the route with promhttp
// (promMetrics in handler.go).
func (s *server) Metrics(context.Context, api.MetricsRequestObject) (api.MetricsResponseObject, error) {
	return nil, errors.New("GET /metrics is served by promhttp, not the strict handler")
}

// OpenapiSpec implements GET /openapi.yaml: the document this build was generated from.
func (s *server) OpenapiSpec(context.Context, api.OpenapiSpecRequestObject) (api.OpenapiSpecResponseObject, error) {
	return api.OpenapiSpec200ApplicationyamlResponse{Body: bytes.NewReader(s.spec), ContentLength: int64(len(s.spec))}, nil
}

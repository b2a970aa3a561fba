// Package envoyrls is sluice's Envoy Rate Limit Service front end: gRPC
// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over the domain.Limiter port, configured by
// envoyproxy/ratelimit's own YAML files (config.go) and answering as envoyproxy/ratelimit does (match.go,
// service.go), except where sluice is stricter by design: the descriptors of one request are decided
// all-or-nothing, and a denial records nothing (docs/envoy.md has the table).
package envoyrls

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-dev/sluice/adapters/ratelimitheader"
	"github.com/sluice-dev/sluice/domain"
)

// Limiter is the part of domain.Limiter this adapter calls.
type Limiter interface {
	CheckPolicies(ctx context.Context, cs []domain.PolicyCheck, atomic bool) ([]domain.Result, bool, error)
	HoldPolicy(ctx context.Context, h domain.PolicyHold) (domain.HoldResult, error)
}

// PolicyInstaller gives the policies of a loaded config their floors and generations against the config in force
// before (domain.PolicyLifecycle.InstallRLS).
type PolicyInstaller interface {
	InstallRLS(ps []domain.Policy) []domain.Policy
}

// Service implements RateLimitServiceServer.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer
	lim       Limiter
	rules     atomic.Pointer[Rules]
	install   PolicyInstaller
	installed func(ps []domain.Policy)
	obs       Observer
	swap      sync.Mutex // installs and stores rules one at a time
	headers   bool
	// overrideAlg and overrideFailure apply to policies made from a descriptor's limit override.
	overrideAlg     domain.Algorithm
	overrideFailure domain.FailureMode
	overrideShadow  bool
}

// ServiceOptions configures a Service.
type ServiceOptions struct {
	// Headers adds response_headers_to_add: RateLimit-Policy and RateLimit of the most restrictive descriptor,
	// and Retry-After when the request is denied.
	Headers bool
	// Algorithm, FailureMode and Shadow of the policies made for limit overrides (the config's policies carry
	// their own).
	Algorithm   domain.Algorithm
	FailureMode domain.FailureMode
	Shadow      bool
	// Policies gives the config's policies their floors and generations at every SetRules (and for the rules
	// NewService starts with); nil leaves them as loaded (generation 0, no floor).
	Policies PolicyInstaller
	// Installed, when set, is called by SetRules (and NewService) with the policies of the rules it put in force,
	// as installed; it must not block (the app hands them to a shared store's registry in the background).
	Installed func(ps []domain.Policy)
	// Observer, when not nil, counts reloads (Reloaded).
	Observer Observer
}

// NewService returns a Service deciding with lim under rules.
func NewService(lim Limiter, rules *Rules, opts ServiceOptions) *Service {
	s := &Service{lim: lim, headers: opts.Headers, overrideAlg: opts.Algorithm, overrideFailure: opts.FailureMode,
		overrideShadow: opts.Shadow, install: opts.Policies, installed: opts.Installed, obs: opts.Observer}
	if s.overrideAlg == "" {
		s.overrideAlg = domain.FixedWindow
	}
	if s.overrideFailure == "" {
		s.overrideFailure = domain.FailDeny
	}
	s.SetRules(rules)
	return s
}

// SetRules swaps the rules in force (a reloaded config directory or xDS version); requests in flight keep the
// rules they read. Each rule's policy first gets its floor and generation from ServiceOptions.Policies, against
// the rules in force before: a changed unit or algorithm raises the floor, a rule that was not in force gets a new
// generation, an unchanged rule keeps both. rs is modified in place and must not be in use yet.
func (s *Service) SetRules(rs *Rules) {
	s.swap.Lock()
	defer s.swap.Unlock()
	rules := rs.all()
	ps := make([]domain.Policy, len(rules))
	for i, r := range rules {
		ps[i] = r.Policy
	}
	if s.install != nil {
		ps = s.install.InstallRLS(ps)
		for i, r := range rules {
			r.Policy = ps[i]
		}
	}
	s.rules.Store(rs)
	if s.installed != nil {
		s.installed(ps)
	}
}

// Reloaded records a reload of the rules from source ("files" or "xds") that took effect (ok) or was refused (the
// rules in force stay), for the Observer.
func (s *Service) Reloaded(source string, ok bool) {
	if s.obs != nil {
		s.obs.Reload(source, ok)
	}
}

// Rules returns the rules in force.
func (s *Service) Rules() *Rules { return s.rules.Load() }

// descriptorState is one descriptor of a request on its way to a status.
type descriptorState struct {
	rule      *Rule
	policy    domain.Policy
	unit      rlsv3.RateLimitResponse_RateLimit_Unit
	rpu       uint32
	name      string
	cost      uint64
	unlimited bool
	// oversized: the cost exceeds the limit, so the request can never be admitted.
	oversized bool
	// negative: Envoy's is_negative_hits: give cost units back (a concurrency policy's anonymous holds).
	negative bool
	// hold: a hit on a concurrency policy, decided as an anonymous hold (holdID) instead of a check.
	hold   bool
	holdID string
	check  int // index into the results, or -1
	// quota: the rule is in quota_mode; quotaOver: it was over its limit: from then on it is checked as a shadow
	// peek (it reports, records nothing and never fails the all-or-nothing call) and answered OVER_LIMIT.
	quota, quotaOver bool
}

var unitEnum = map[string]rlsv3.RateLimitResponse_RateLimit_Unit{
	"SECOND": rlsv3.RateLimitResponse_RateLimit_SECOND,
	"MINUTE": rlsv3.RateLimitResponse_RateLimit_MINUTE,
	"HOUR":   rlsv3.RateLimitResponse_RateLimit_HOUR,
	"DAY":    rlsv3.RateLimitResponse_RateLimit_DAY,
	"WEEK":   rlsv3.RateLimitResponse_RateLimit_WEEK,
	"MONTH":  rlsv3.RateLimitResponse_RateLimit_MONTH,
}

// OverrideMetric is the one policy label the decisions of every limit override carry (their policies are one per
// request domain and unit, which clients choose: as labels they would let any client add metric series).
const OverrideMetric = "rls-override"

// MaxDescriptors bounds the descriptors of one request: each is a check of the request's one all-or-nothing call,
// and Envoy's rate limit actions make a handful. A request with more is refused whole (INVALID_ARGUMENT), rather
// than holding a store's locks for thousands of keys until its deadline.
const MaxDescriptors = 64

// ShouldRateLimit decides one request: every descriptor resolved to a policy (its config rule, or its limit
// override) is checked in one all-or-nothing call, so a denied request records nothing on any of its limits.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	}
	if len(req.GetDescriptors()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}
	if n := len(req.GetDescriptors()); n > MaxDescriptors {
		return nil, status.Errorf(codes.InvalidArgument, "a request has at most %d descriptors, got %d", MaxDescriptors, n)
	}
	rules := s.rules.Load()
	ds := make([]descriptorState, len(req.Descriptors))
	keys := make([]string, len(req.Descriptors))
	replacing := map[string]bool{}
	for i, d := range req.Descriptors {
		st := &ds[i]
		st.check = -1
		st.negative = d.GetIsNegativeHits()
		// As envoyproxy/ratelimit's GetHitsAddends: a descriptor's own hits_addend wins, and may be 0 (a peek);
		// otherwise the request's, where 0 (unset) means 1.
		if h := d.GetHitsAddend(); h != nil {
			st.cost = h.GetValue()
		} else {
			st.cost = uint64(max(1, req.GetHitsAddend()))
		}
		entries := make([]Entry, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			entries[j] = Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		if o := d.GetLimit(); o != nil {
			// A limit override skips the config (and its shadow_mode), as envoyproxy/ratelimit.
			unit := rlsv3.RateLimitResponse_RateLimit_Unit(o.GetUnit())
			window, ok := units[unit.String()]
			if !ok || o.GetRequestsPerUnit() == 0 {
				return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d].limit: requests_per_unit must be at least 1 and unit one of %s, got %d per %s", i, unitNames, o.GetRequestsPerUnit(), unit)
			}
			st.policy = domain.Policy{
				Name: overridePolicyName(req.Domain, unit.String()), Limit: int64(o.GetRequestsPerUnit()), Window: window,
				Algorithm: s.overrideAlg, FailureMode: s.overrideFailure, Shadow: s.overrideShadow, Source: domain.SourceConfig,
				Metric: OverrideMetric,
			}.WithDefaults()
			st.unit, st.rpu, st.check = unit, o.GetRequestsPerUnit(), 0
			keys[i] = Key(entries, nil)
			continue
		}
		r, share := rules.Match(req.Domain, entries)
		if r == nil {
			continue // no limit: OK without touching the store
		}
		st.rule, st.name, st.quota = r, r.Name, r.QuotaMode
		for _, n := range r.Replaces {
			replacing[n] = true
		}
		if r.Unlimited {
			st.unlimited = true
			continue
		}
		st.policy, st.unit, st.rpu, st.check = r.Policy, unitEnum[r.Unit.Name], r.RequestsPerUnit, 0
		keys[i] = Key(entries, share)
	}
	// replaces: a limit whose name another matched limit replaces is not applied. As envoyproxy/ratelimit, this
	// runs after every descriptor is resolved, so the order of descriptors does not matter.
	var checks []domain.PolicyCheck
	var holds []int // descriptors decided as anonymous holds
	oversized := false
	for i := range ds {
		st := &ds[i]
		if st.check < 0 || (st.rule != nil && st.name != "" && replacing[st.name]) {
			st.check = -1
			continue
		}
		concurrency := st.policy.Algorithm.HoldsOnly()
		if st.negative && !concurrency {
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d].is_negative_hits gives units back under a concurrency policy only; %q counts with %s", i, st.policy.Name, st.policy.Algorithm)
		}
		if st.negative || (concurrency && st.cost > 0 && st.cost <= uint64(st.policy.Limit)) {
			st.hold, st.quota = !st.negative, false // holds are not soft: quota_mode applies to window limits
			holds = append(holds, i)
			continue
		}
		st.check = len(checks)
		cost := st.cost
		switch {
		case cost <= uint64(st.policy.Limit):
		case st.quota:
			// Over whatever the key holds: this quota descriptor is over, which fails the request only if every
			// quota descriptor is (decideQuotas).
			st.quotaOver, cost = true, 0
		case st.policy.Shadow:
			// Would be denied, but shadow_mode answers OK: peek, to report the state without recording.
			cost = 0
		default:
			st.oversized, oversized = true, true
			cost = 0
		}
		pc := domain.PolicyCheck{Policy: st.policy, Key: keys[i], Cost: int64(cost)}
		pc.Policy.Shadow = pc.Policy.Shadow || st.quotaOver
		checks = append(checks, pc)
	}
	quotaDenied := quotasOver(ds)
	if oversized || quotaDenied {
		// A cost above its limit can never be admitted (a quota descriptor's only makes it over; every one over
		// denies the request): the request is denied, so nothing may be recorded. Every
		// descriptor is peeked, to report its state.
		for i := range checks {
			checks[i].Cost = 0
		}
	}
	// Envoy's negative hits first (a stream that ended gives its units back), then the hits on concurrency
	// policies, each an anonymous hold that expires after the policy's window (a lost negative hit lasts until
	// then, never longer); if one is denied the request is, and the holds taken for it are released.
	results, costs, denied, err := s.holdAll(ctx, ds, keys, holds)
	if err != nil {
		return nil, err
	}
	if denied {
		for i := range checks {
			checks[i].Cost = 0 // the request is denied: the window checks record nothing, they report
		}
	}
	// A descriptor admitted as evaluated in a request that was denied recorded nothing: the Limiter presents it as
	// such (domain.RolledBack: its remaining is its key's units left now), as HTTP /v1/checks does.
	if len(checks) > 0 {
		rs, allowed, err := s.lim.CheckPolicies(ctx, checks, true)
		if err == nil && !denied && !oversized && !quotaDenied {
			rs, allowed, quotaDenied, err = s.decideQuotas(ctx, ds, checks, rs, allowed)
		}
		if err != nil {
			s.releaseHolds(ds, keys, holds)
			return nil, grpcError(err)
		}
		if !allowed || oversized || quotaDenied {
			s.rollBackHolds(ds, keys, holds, results, costs)
		}
		for i := range ds {
			if ds[i].check >= 0 && !ds[i].hold && !ds[i].negative {
				ds[i].check += len(results)
			}
		}
		results = append(results, rs...)
		for _, c := range checks {
			costs = append(costs, c.Cost)
		}
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(ds))}
	if quotaDenied {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	for i := range ds {
		st := &ds[i]
		switch {
		case st.unlimited:
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: math.MaxUint32}
			continue
		case st.check < 0:
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
			continue
		}
		r := results[st.check]
		out := &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:         rlsv3.RateLimitResponse_OK,
			CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: st.name, RequestsPerUnit: st.rpu, Unit: st.unit},
		}
		if !r.Degraded {
			out.DurationUntilReset = durationpb.New(r.ResetAfter)
		}
		cost := costs[st.check]
		switch {
		case st.negative:
			// Units given back: always OK, reporting what the key has left as a peek does.
			out.LimitRemaining = clamp32(r.Remaining + 1)
		case st.quotaOver:
			out.Code = rlsv3.RateLimitResponse_OVER_LIMIT // the request's code is decideQuotas's
		case st.oversized || !r.Allowed:
			out.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		case r.Degraded:
		case cost == 0:
			// A peek answers for a 1-unit request; report the units left, as a 0 hits_addend does upstream.
			out.LimitRemaining = clamp32(r.Remaining + 1)
		default:
			out.LimitRemaining = clamp32(r.Remaining)
		}
		resp.Statuses[i] = out
	}
	if s.headers {
		resp.ResponseHeadersToAdd = headersFor(ds, results, resp.Statuses, resp.OverallCode)
	}
	resp.DynamicMetadata = quotaMetadata(req.GetDomain(), ds, resp.Statuses)
	return resp, nil
}

// decideQuotas applies quota_mode to a request whose window checks were decided (rs, allowed; not denied by a hold or
// an oversized cost): while the only denials are of quota descriptors and some quota descriptor is not over, the denied
// ones are marked over and the request is decided again with them as shadow peeks, one atomic call each time (each
// counted in the decision metrics), so what is finally recorded was admitted as one all-or-nothing call (each limit
// stays exact); a quota descriptor over its limit records nothing. quotaDenied: every quota descriptor is over, so the
// request is denied although no other limit was (what envoyproxy/ratelimit answers; its counters would count it anyway,
// sluice's record nothing for a denied request).
func (s *Service) decideQuotas(ctx context.Context, ds []descriptorState, checks []domain.PolicyCheck, rs []domain.Result, allowed bool) (_ []domain.Result, _ bool, quotaDenied bool, err error) {
	quotas, over := quotaCounts(ds)
	if quotas == 0 {
		return rs, allowed, false, nil
	}
	for {
		if allowed {
			return rs, true, false, nil
		}
		again := false
		for i := range ds {
			st := &ds[i]
			if st.check < 0 || st.hold || st.negative || st.quotaOver || rs[st.check].Allowed {
				continue
			}
			if !st.quota {
				return rs, false, false, nil // a limit that is not a quota fails the request
			}
			st.quotaOver, again = true, true
			checks[st.check].Cost, checks[st.check].Policy.Shadow = 0, true
			over++
		}
		if !again || over == quotas {
			return rs, allowed, over == quotas, nil
		}
		if rs, allowed, err = s.lim.CheckPolicies(ctx, checks, true); err != nil {
			return nil, false, false, err
		}
	}
}

// quotaCounts counts the request's quota descriptors that are checked, and those of them over their limit.
func quotaCounts(ds []descriptorState) (quotas, over int) {
	for i := range ds {
		if ds[i].check >= 0 && ds[i].quota {
			quotas++
			if ds[i].quotaOver {
				over++
			}
		}
	}
	return quotas, over
}

// quotasOver: the request has quota descriptors and every one is over already (a cost above its limit).
func quotasOver(ds []descriptorState) bool {
	quotas, over := quotaCounts(ds)
	return quotas > 0 && over == quotas
}

// quotaMetadata is the response's dynamic metadata when the request has quota-mode descriptors: the domain, and
// passedDescriptors, the indices of the descriptors with a limit that passed (Envoy can route on them).
func quotaMetadata(dom string, ds []descriptorState, statuses []*rlsv3.RateLimitResponse_DescriptorStatus) *structpb.Struct {
	quota := false
	var passed []any
	for i := range ds {
		quota = quota || (ds[i].check >= 0 && ds[i].quota)
		if ds[i].check >= 0 && statuses[i].GetCode() == rlsv3.RateLimitResponse_OK {
			passed = append(passed, float64(i))
		}
	}
	if !quota {
		return nil
	}
	m, _ := structpb.NewStruct(map[string]any{"domain": dom, "passedDescriptors": passed}) // strings and numbers: never fails
	return m
}

// holdAll gives back the negative hits' units and takes an anonymous hold for every hit on a concurrency policy
// (ds[i] for i in holds), each with its result at the index it gets in results (costs: what it took, 0 for a
// release, which then reports like a peek). denied: a hold was refused, and those taken for the request were
// released.
func (s *Service) holdAll(ctx context.Context, ds []descriptorState, keys []string, holds []int) (results []domain.Result, costs []int64, denied bool, err error) {
	for _, i := range holds {
		st := &ds[i]
		if !st.negative {
			continue
		}
		res, err := s.lim.HoldPolicy(ctx, domain.PolicyHold{Policy: st.policy, Key: keys[i], Op: domain.OpReleaseAnonymous, Amount: int64(min(st.cost, uint64(domain.MaxLimit)))})
		if err != nil {
			return nil, nil, false, grpcError(err)
		}
		st.check = len(results)
		results, costs = append(results, res.Result), append(costs, 0)
	}
	for _, i := range holds {
		st := &ds[i]
		if st.negative {
			continue
		}
		st.holdID = domain.AnonymousHoldID()
		res, err := s.lim.HoldPolicy(ctx, domain.PolicyHold{Policy: st.policy, Key: keys[i], Op: domain.OpAcquire, ID: st.holdID, Amount: int64(st.cost)})
		if err != nil {
			s.releaseHolds(ds, keys, holds)
			return nil, nil, false, grpcError(err)
		}
		st.check = len(results)
		results, costs = append(results, res.Result), append(costs, int64(st.cost))
		if !res.Allowed || res.ShadowDenied || res.Degraded {
			st.holdID = "" // nothing recorded
		}
		if !res.Allowed {
			denied = true
		}
	}
	if denied {
		s.rollBackHolds(ds, keys, holds, results, costs)
	}
	return results, costs, denied, nil
}

// rollBackHolds releases the request's holds and presents them as recording nothing (domain.RolledBack's rule:
// an admitted hold's remaining is its key's units left now).
func (s *Service) rollBackHolds(ds []descriptorState, keys []string, holds []int, results []domain.Result, costs []int64) {
	for _, i := range holds {
		if st := &ds[i]; st.holdID != "" {
			results[st.check].Remaining += costs[st.check]
		}
	}
	s.releaseHolds(ds, keys, holds)
}

// releaseHolds releases the anonymous holds taken for a request that is denied after all. It runs on a context of
// its own: the request's may be what failed, and a hold left behind would count until its deadline.
func (s *Service) releaseHolds(ds []descriptorState, keys []string, holds []int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, i := range holds {
		st := &ds[i]
		if st.holdID == "" {
			continue
		}
		// A failure here leaves the hold to expire after the policy's window, the most a lost release costs.
		_, _ = s.lim.HoldPolicy(ctx, domain.PolicyHold{Policy: st.policy, Key: keys[i], Op: domain.OpSettle, ID: st.holdID})
		st.holdID = ""
	}
}

// headersFor returns the RateLimit headers of the most restrictive descriptor: of the denied ones, the one whose
// Retry-After is longest (with Retry-After); else the one with the fewest units left (the first on a tie).
// Unlimited, unmatched and degraded descriptors have no quota to report.
func headersFor(ds []descriptorState, results []domain.Result, statuses []*rlsv3.RateLimitResponse_DescriptorStatus, overall rlsv3.RateLimitResponse_Code) []*corev3.HeaderValue {
	best := -1
	bestDenied := false
	for i, st := range ds {
		if st.check < 0 || results[st.check].Degraded || (st.quotaOver && overall == rlsv3.RateLimitResponse_OK) {
			continue // a quota descriptor over its limit in a request that passed restricts nothing
		}
		r := results[st.check]
		isDenied := statuses[i].Code == rlsv3.RateLimitResponse_OVER_LIMIT
		switch {
		case best < 0:
		case isDenied && !bestDenied:
		case isDenied && bestDenied && retryOf(st, r) > retryOf(ds[best], results[ds[best].check]):
		case !isDenied && !bestDenied && statuses[i].LimitRemaining < statuses[best].LimitRemaining:
		default:
			continue
		}
		best, bestDenied = i, isDenied
	}
	if best < 0 {
		return nil
	}
	r := results[ds[best].check]
	r.Remaining = int64(statuses[best].LimitRemaining)
	h := []*corev3.HeaderValue{
		{Key: ratelimitheader.PolicyHeader, Value: ratelimitheader.Policy(r)},
		{Key: ratelimitheader.RateLimitHeader, Value: ratelimitheader.RateLimit(r)},
	}
	if bestDenied {
		r.RetryAfter = retryOf(ds[best], r)
		h = append(h, &corev3.HeaderValue{Key: ratelimitheader.RetryAfterHeader, Value: strconv.Itoa(ratelimitheader.RetryAfterSeconds(r))})
	}
	return h
}

// retryOf is when a denied descriptor may succeed: the store's Retry-After, or for a cost that can never fit
// (above the limit) the end of the current window, when a smaller request could.
func retryOf(st descriptorState, r domain.Result) time.Duration {
	if st.oversized || r.RetryAfter == 0 {
		return r.ResetAfter
	}
	return r.RetryAfter
}

func clamp32(n int64) uint32 {
	switch {
	case n < 0:
		return 0
	case n > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(n)
}

// grpcError maps a domain error to a gRPC status. A store failure under failure_mode deny is UNAVAILABLE, so
// Envoy's own failure_mode_deny decides what the proxied request gets.
func grpcError(err error) error {
	switch {
	case errors.Is(err, domain.ErrUnavailable):
		return status.Error(codes.Unavailable, "store unavailable and the policy's failure_mode is deny")
	case errors.Is(err, domain.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded before the store answered")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	}
	return status.Error(codes.Internal, "internal error")
}

package envoyrls_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

const (
	ok   = rlsv3.RateLimitResponse_OK
	over = rlsv3.RateLimitResponse_OVER_LIMIT
)

// start is aligned to every unit's window (210 days is a multiple of a week and of 30 days), so fixed windows and
// the time since the first admitted unit agree: every algorithm reports the same reset at the start.
var start = time.Unix(210*86400*100, 0)

type harness struct {
	t     *testing.T
	clock *clocktest.Clock
	svc   *envoyrls.Service
	store *memory.Store
}

func newHarness(t *testing.T, dir string, opts envoyrls.ServiceOptions) *harness {
	t.Helper()
	rules, err := envoyrls.LoadDir(dir, envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(start)
	store := memory.New(clock, memory.Options{MaxKeys: 1000})
	lim, err := domain.NewService(nil, memory.NewPolicies(clock), store, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, clock: clock, svc: envoyrls.NewService(lim, rules, opts), store: store}
}

// desc builds a descriptor from "k=v" pairs.
func desc(pairs ...string) *rlcommon.RateLimitDescriptor {
	d := &rlcommon.RateLimitDescriptor{}
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: k, Value: v})
	}
	return d
}

func withHits(d *rlcommon.RateLimitDescriptor, n uint64) *rlcommon.RateLimitDescriptor {
	d.HitsAddend = wrapperspb.UInt64(n)
	return d
}

func (h *harness) ask(dom string, ds ...*rlcommon.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	h.t.Helper()
	resp, err := h.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: dom, Descriptors: ds})
	if err != nil {
		h.t.Fatalf("ShouldRateLimit: %v", err)
	}
	if len(resp.Statuses) != len(ds) {
		h.t.Fatalf("%d statuses for %d descriptors", len(resp.Statuses), len(ds))
	}
	return resp
}

// summary returns the overall code and each status's code and remaining, for compact assertions.
func summary(r *rlsv3.RateLimitResponse) string {
	var b strings.Builder
	b.WriteString(r.OverallCode.String())
	for _, s := range r.Statuses {
		b.WriteString(" ")
		b.WriteString(s.Code.String())
		if s.CurrentLimit != nil {
			b.WriteString("/")
			b.WriteString(itoa(int64(s.LimitRemaining)))
		}
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func expect(t *testing.T, what string, r *rlsv3.RateLimitResponse, want string) {
	t.Helper()
	if got := summary(r); got != want {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func TestIstioShape(t *testing.T) {
	h := newHarness(t, "testdata/istio", envoyrls.ServiceOptions{})
	// /productpage: 2 per minute.
	expect(t, "productpage 1", h.ask("ratelimit", desc("PATH=/productpage")), "OK OK/1")
	r := h.ask("ratelimit", desc("PATH=/productpage"))
	expect(t, "productpage 2", r, "OK OK/0")
	cl := r.Statuses[0].CurrentLimit
	if cl.RequestsPerUnit != 2 || cl.Unit != rlsv3.RateLimitResponse_RateLimit_MINUTE {
		t.Errorf("current_limit %v, want 2 per MINUTE", cl)
	}
	if d := r.Statuses[0].DurationUntilReset.AsDuration(); d != time.Minute {
		t.Errorf("duration_until_reset %s, want 1m at the start of the window", d)
	}
	expect(t, "productpage 3", h.ask("ratelimit", desc("PATH=/productpage")), "OVER_LIMIT OVER_LIMIT/0")
	// Any other path: the bare-key default, 5 per minute, counted per path.
	expect(t, "/reviews", h.ask("ratelimit", desc("PATH=/reviews")), "OK OK/4")
	expect(t, "/ratings", h.ask("ratelimit", desc("PATH=/ratings")), "OK OK/4")
	// A wildcard value: /api/* is 3 per second, each path its own counter.
	expect(t, "/api/a", h.ask("ratelimit", desc("PATH=/api/a")), "OK OK/2")
	expect(t, "/api/b", h.ask("ratelimit", desc("PATH=/api/b")), "OK OK/2")
	// Unknown domain or extra entries: no limit, OK without a current_limit.
	expect(t, "other domain", h.ask("other", desc("PATH=/productpage")), "OK OK")
	expect(t, "deeper descriptor", h.ask("ratelimit", desc("PATH=/productpage", "x=y")), "OK OK")
	// The window ends: /productpage is admitted again.
	h.clock.Advance(time.Minute)
	expect(t, "productpage next window", h.ask("ratelimit", desc("PATH=/productpage")), "OK OK/1")
}

const eg = "default/eg/http"
const egRoute = "httproute/default/http-ratelimit/rule/0/match/0"

func TestEnvoyGatewayShape(t *testing.T) {
	h := newHarness(t, "testdata/envoygateway", envoyrls.ServiceOptions{})
	route := egRoute + "=" + egRoute
	// Exact header value: 3 per hour.
	for i, want := range []string{"OK OK/2", "OK OK/1", "OK OK/0", "OVER_LIMIT OVER_LIMIT/0"} {
		expect(t, "x-user-id one #"+itoa(int64(i)), h.ask(eg, desc(route, "rule-0-match-0=one")), want)
	}
	// A value the exact rule does not name matches nothing at that key.
	expect(t, "x-user-id two", h.ask(eg, desc(route, "rule-0-match-0=two")), "OK OK")
	// Distinct header: 2 per hour for each value.
	expect(t, "distinct a", h.ask(eg, desc(route, "rule-1-match-0=a")), "OK OK/1")
	expect(t, "distinct b", h.ask(eg, desc(route, "rule-1-match-0=b")), "OK OK/1")
	// masked_remote_address under a CIDR entry: 4 per minute per address.
	cidr := "rule-2-match-0=0.0.0.0/0"
	expect(t, "10.0.0.1", h.ask(eg, desc(route, cidr, "masked_remote_address=10.0.0.1/32")), "OK OK/3")
	expect(t, "10.0.0.2", h.ask(eg, desc(route, cidr, "masked_remote_address=10.0.0.2/32")), "OK OK/3")
	// The CIDR level alone has no limit (it sits one level deeper).
	expect(t, "cidr only", h.ask(eg, desc(route, cidr)), "OK OK")
}

// TestEnvoyGatewayCosts: request cost 0 checks without consuming (hits_addend 0); the response cost is sent as
// hits_addend on stream done; a request-level hits_addend applies to descriptors without their own.
func TestEnvoyGatewayCosts(t *testing.T) {
	h := newHarness(t, "testdata/envoygateway", envoyrls.ServiceOptions{})
	d := func() *rlcommon.RateLimitDescriptor {
		return desc(egRoute+"="+egRoute, "rule-3-match--1=rule-3-match--1")
	}
	// Request phase: cost 0 is a peek: all 10 units left, nothing recorded.
	expect(t, "peek", h.ask(eg, withHits(d(), 0)), "OK OK/10")
	expect(t, "peek again", h.ask(eg, withHits(d(), 0)), "OK OK/10")
	// Response phase: 7 tokens used.
	expect(t, "response cost 7", h.ask(eg, withHits(d(), 7)), "OK OK/3")
	expect(t, "peek after", h.ask(eg, withHits(d(), 0)), "OK OK/3")
	// A response cost of 4 does not fit the 3 left: denied, and (sluice) nothing recorded.
	expect(t, "response cost 4", h.ask(eg, withHits(d(), 4)), "OVER_LIMIT OVER_LIMIT/0")
	expect(t, "peek after denial", h.ask(eg, withHits(d(), 0)), "OK OK/3")
	// Request-level hits_addend: 3 for a descriptor without its own.
	resp, err := h.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: eg, Descriptors: []*rlcommon.RateLimitDescriptor{d()}, HitsAddend: 3})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "request hits_addend 3", resp, "OK OK/0")
	// Exhausted: a peek now says OVER_LIMIT (no unit is left for a request).
	expect(t, "peek exhausted", h.ask(eg, withHits(d(), 0)), "OVER_LIMIT OVER_LIMIT/0")
	// A cost above the limit can never be admitted: OVER_LIMIT, never an error.
	h.clock.Advance(time.Minute)
	expect(t, "cost 11 of 10", h.ask(eg, withHits(d(), 11)), "OVER_LIMIT OVER_LIMIT/0")
	expect(t, "nothing recorded", h.ask(eg, withHits(d(), 0)), "OK OK/10")
}

func TestContourShape(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	expect(t, "foo 1", h.ask("contour", desc("generic_key=foo")), "OK OK/1")
	expect(t, "vhost+address", h.ask("contour", desc("generic_key=vhost", "remote_address=192.0.2.1")), "OK OK/2")
	expect(t, "vhost alone", h.ask("contour", desc("generic_key=vhost")), "OK OK")
	// unlimited: OK with limit_remaining MaxUint32 and no current_limit, never stored.
	r := h.ask("contour", desc("generic_key=unlimited"))
	if r.OverallCode != ok || r.Statuses[0].LimitRemaining != math.MaxUint32 || r.Statuses[0].CurrentLimit != nil {
		t.Errorf("unlimited: %v", r)
	}
}

// TestAllOrNothing: sluice decides a request's descriptors together: a request denied by one descriptor draws
// nothing from the others (envoyproxy/ratelimit would have counted it on every one).
func TestAllOrNothing(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	foo := desc("generic_key=foo")                                // 2 per minute
	addr := desc("generic_key=vhost", "remote_address=192.0.2.9") // 3 per minute
	expect(t, "both 1", h.ask("contour", foo, addr), "OK OK/1 OK/2")
	expect(t, "both 2", h.ask("contour", foo, addr), "OK OK/0 OK/1")
	// foo is exhausted: the request is denied; addr reports its 1 unit still there.
	expect(t, "denied", h.ask("contour", foo, addr), "OVER_LIMIT OVER_LIMIT/0 OK/1")
	expect(t, "denied again", h.ask("contour", foo, addr), "OVER_LIMIT OVER_LIMIT/0 OK/1")
	// addr alone still has its unit: the denials drew nothing from it.
	expect(t, "addr alone", h.ask("contour", addr), "OK OK/0")
}

func TestShadowMode(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	expect(t, "shadow 1", h.ask("contour", desc("generic_key=shadow")), "OK OK/0")
	// Over its limit, but shadow_mode: OK.
	expect(t, "shadow 2", h.ask("contour", desc("generic_key=shadow")), "OK OK/0")
}

func TestReplaces(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	// premium replaces burst: with both, burst is not applied (status OK without a limit), whatever the order.
	for i := 0; i < 4; i++ {
		expect(t, "burst replaced", h.ask("contour", desc("generic_key=burst"), desc("generic_key=premium")), "OK OK OK/"+itoa(int64(4-i)))
	}
	// Alone, burst applies: 2 per second, not drawn by the requests above.
	expect(t, "burst alone", h.ask("contour", desc("generic_key=burst")), "OK OK/1")
}

func TestLimitOverride(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	d := func() *rlcommon.RateLimitDescriptor {
		x := desc("generic_key=foo")
		x.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_HOUR}
		return x
	}
	// The override skips the config's 2 per minute.
	r := h.ask("contour", d())
	expect(t, "override 1", r, "OK OK/0")
	if cl := r.Statuses[0].CurrentLimit; cl.RequestsPerUnit != 1 || cl.Unit != rlsv3.RateLimitResponse_RateLimit_HOUR {
		t.Errorf("current_limit %v, want the override", cl)
	}
	expect(t, "override 2", h.ask("contour", d()), "OVER_LIMIT OVER_LIMIT/0")
	// The config's limit for the same entries is its own counter.
	expect(t, "config limit", h.ask("contour", desc("generic_key=foo")), "OK OK/1")
	// An override that cannot be honoured is a clear error.
	bad := desc("generic_key=foo")
	bad.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_YEAR}
	_, err := h.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "contour", Descriptors: []*rlcommon.RateLimitDescriptor{bad}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "YEAR") {
		t.Errorf("YEAR override: %v, want InvalidArgument naming the unit", err)
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	for name, req := range map[string]*rlsv3.RateLimitRequest{
		"no domain":                 {Descriptors: []*rlcommon.RateLimitDescriptor{desc("generic_key=foo")}},
		"no descriptors":            {Domain: "contour"},
		"negative hits on a window": {Domain: "contour", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: desc("generic_key=foo").Entries, IsNegativeHits: true}}},
	} {
		if _, err := h.svc.ShouldRateLimit(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestHeaders(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{Headers: true})
	foo := desc("generic_key=foo")                                // 2 per minute
	addr := desc("generic_key=vhost", "remote_address=192.0.2.7") // 3 per minute
	hdrs := func(r *rlsv3.RateLimitResponse) map[string]string {
		m := map[string]string{}
		for _, hv := range r.ResponseHeadersToAdd {
			m[hv.Key] = hv.Value
		}
		return m
	}
	r := h.ask("contour", foo, addr)
	m := hdrs(r)
	// The most restrictive: foo, with 1 left of 2.
	if !strings.HasSuffix(m["RateLimit-Policy"], `";q=2;w=60`) || !strings.HasSuffix(m["RateLimit"], `";r=1;t=60`) || m["Retry-After"] != "" {
		t.Errorf("headers when admitted: %v", m)
	}
	h.ask("contour", foo)
	h.clock.Advance(15 * time.Second)
	m = hdrs(h.ask("contour", foo, addr))
	if !strings.HasSuffix(m["RateLimit"], `";r=0;t=45`) || m["Retry-After"] != "45" {
		t.Errorf("headers when denied: %v", m)
	}
}

// TestStoreFailure: a store that cannot answer is UNAVAILABLE under failure_mode deny (Envoy's
// failure_mode_deny then decides), and a degraded OK under failure_mode allow.
func TestStoreFailure(t *testing.T) {
	for _, fm := range []domain.FailureMode{domain.FailDeny, domain.FailAllow} {
		rules, err := envoyrls.LoadDir("testdata/contour", envoyrls.LoadOptions{FailureMode: fm})
		if err != nil {
			t.Fatal(err)
		}
		clock := clocktest.New(start)
		lim, err := domain.NewService(nil, memory.NewPolicies(clock), failingStore{}, nil, clock)
		if err != nil {
			t.Fatal(err)
		}
		svc := envoyrls.NewService(lim, rules, envoyrls.ServiceOptions{Headers: true})
		resp, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "contour", Descriptors: []*rlcommon.RateLimitDescriptor{desc("generic_key=foo")}})
		switch fm {
		case domain.FailDeny:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("deny: %v, want UNAVAILABLE", err)
			}
		case domain.FailAllow:
			if err != nil || resp.OverallCode != ok || len(resp.ResponseHeadersToAdd) != 0 {
				t.Errorf("allow: %v %v, want a degraded OK without quota headers", resp, err)
			}
		}
	}
}

type failingStore struct{}

var errDown = errors.New("store down")

func (failingStore) Decide(context.Context, domain.BucketRequest) (domain.Decision, error) {
	return domain.Decision{}, errDown
}
func (failingStore) DecideBatch(context.Context, []domain.BucketRequest, bool) ([]domain.Decision, error) {
	return nil, errDown
}
func (failingStore) Hold(context.Context, domain.BucketHold) (domain.HoldDecision, error) {
	return domain.HoldDecision{}, errDown
}
func (failingStore) Reset(context.Context, string, string) error { return errDown }
func (failingStore) DropPolicy(context.Context, string) error    { return errDown }
func (failingStore) Ping(context.Context) error                  { return errDown }

// TestFixedWindowEpochAligned: by default a unit counts in epoch-aligned windows, as envoyproxy/ratelimit: 50 s
// into a minute, the window resets in 10 s and then admits the whole limit again.
func TestFixedWindowEpochAligned(t *testing.T) {
	h := newHarness(t, "testdata/istio", envoyrls.ServiceOptions{})
	h.clock.Advance(50 * time.Second)
	h.ask("ratelimit", desc("PATH=/productpage"))
	r := h.ask("ratelimit", desc("PATH=/productpage"))
	expect(t, "two in the window", r, "OK OK/0")
	if d := r.Statuses[0].DurationUntilReset.AsDuration(); d != 10*time.Second {
		t.Errorf("duration_until_reset %s, want 10s (the minute's end)", d)
	}
	expect(t, "third", h.ask("ratelimit", desc("PATH=/productpage")), "OVER_LIMIT OVER_LIMIT/0")
	h.clock.Advance(10 * time.Second)
	expect(t, "next minute", h.ask("ratelimit", desc("PATH=/productpage")), "OK OK/1")
}

// TestShadowModeOversized: a cost above a shadow_mode limit is answered OK (shadow never denies) and recorded
// nowhere.
func TestShadowModeOversized(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	expect(t, "shadow cost 5 of 1", h.ask("contour", withHits(desc("generic_key=shadow"), 5)), "OK OK/1")
	expect(t, "nothing recorded", h.ask("contour", desc("generic_key=shadow")), "OK OK/0")
}

// TestGlobalShadow: with LoadOptions.Shadow (SHADOW_MODE) every limit, overrides included, answers OK.
func TestGlobalShadow(t *testing.T) {
	rules, err := envoyrls.LoadDir("testdata/istio", envoyrls.LoadOptions{Shadow: true})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "testdata/istio", envoyrls.ServiceOptions{Shadow: true})
	h.svc.SetRules(rules)
	for i := 0; i < 4; i++ {
		if r := h.ask("ratelimit", desc("PATH=/productpage")); r.OverallCode != ok {
			t.Errorf("request %d: %s, want OK in shadow mode", i, summary(r))
		}
	}
	o := desc("PATH=/x")
	o.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_MINUTE}
	h.ask("ratelimit", o)
	if r := h.ask("ratelimit", o); r.OverallCode != ok {
		t.Errorf("override in shadow mode: %s", summary(r))
	}
}

func concurrencyHarness(t *testing.T) *harness {
	t.Helper()
	rules, err := envoyrls.Load([]string{"streams.yaml"}, map[string][]byte{"streams.yaml": []byte(`domain: ai
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    rate_limit: {unit: hour, requests_per_unit: 100}
`)}, envoyrls.LoadOptions{FileAlgorithms: map[string]domain.Algorithm{"streams.yaml": domain.Concurrency}})
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(start)
	store := memory.New(clock, memory.Options{MaxKeys: 1000})
	lim, err := domain.NewService(nil, memory.NewPolicies(clock), store, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, clock: clock, svc: envoyrls.NewService(lim, rules, envoyrls.ServiceOptions{}), store: store}
}

func negative(d *rlcommon.RateLimitDescriptor) *rlcommon.RateLimitDescriptor {
	d.IsNegativeHits = true
	return d
}

// TestConcurrencyOverRLS: on a concurrency policy a hit takes an anonymous hold and Envoy's negative hit (stream
// done) gives it back, so the request/stream-done pair limits streams in flight; a lost negative hit lasts until
// the window (the longest a hold lives), never longer.
func TestConcurrencyOverRLS(t *testing.T) {
	h := concurrencyHarness(t)
	tenant := func() *rlcommon.RateLimitDescriptor { return desc("tenant=acme") }
	expect(t, "stream 1", h.ask("ai", tenant()), "OK OK/1")
	expect(t, "stream 2", h.ask("ai", tenant()), "OK OK/0")
	expect(t, "stream 3 while two are open", h.ask("ai", tenant()), "OVER_LIMIT OVER_LIMIT/0")
	expect(t, "stream 1 done", h.ask("ai", negative(tenant())), "OK OK/1")
	expect(t, "stream 3 again", h.ask("ai", tenant()), "OK OK/0")
	// Two streams open, their negative hits lost: the units come back at the window's end, not before.
	h.clock.Advance(time.Minute - time.Millisecond)
	expect(t, "just before the window", h.ask("ai", tenant()), "OVER_LIMIT OVER_LIMIT/0")
	h.clock.Advance(time.Millisecond)
	expect(t, "at the window", h.ask("ai", tenant()), "OK OK/1")
	// A negative hit with nothing held gives nothing back and is OK; a second one too.
	h.ask("ai", negative(tenant()))
	expect(t, "nothing held", h.ask("ai", negative(tenant())), "OK OK/2")
	expect(t, "nothing held after all", h.ask("ai", tenant()), "OK OK/1")
}

// A request whose other descriptor is denied records nothing: its anonymous hold is released at once.
func TestConcurrencyOverRLSAllOrNothing(t *testing.T) {
	h := concurrencyHarness(t)
	resp, err := h.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "ai",
		Descriptors: []*rlcommon.RateLimitDescriptor{desc("tenant=acme"), withHits(desc("path=/v1/chat"), 101)}})
	if err != nil || resp.OverallCode != over {
		t.Fatalf("%v %v", resp, err)
	}
	expect(t, "the tenant's units after a denied request", h.ask("ai", withHits(desc("tenant=acme"), 2)), "OK OK/0")
}

// labels records the policy labels an Observer is given.
type labels struct {
	domain.NopObserver
	mu   sync.Mutex
	seen map[string]int
}

func (l *labels) Decided(policy, _ string, _ domain.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[policy]++
}

// TestLimitOverridesMintNoMetricSeries: 2,000 limit overrides with random domains (a client's choice) reach the
// Observer, hence sluice_decisions_total, under the one label envoyrls.OverrideMetric, while each domain keeps a
// counter of its own.
func TestLimitOverridesMintNoMetricSeries(t *testing.T) {
	rules, err := envoyrls.LoadDir("testdata/contour", envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(start)
	obs := &labels{seen: map[string]int{}}
	lim, err := domain.NewService(nil, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 10_000}), obs, clock)
	if err != nil {
		t.Fatal(err)
	}
	svc := envoyrls.NewService(lim, rules, envoyrls.ServiceOptions{})
	rng := rand.New(rand.NewPCG(1132, 24))
	ask := func(dom string) rlsv3.RateLimitResponse_Code {
		d := desc("generic_key=foo")
		d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_HOUR}
		resp, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: dom, Descriptors: []*rlcommon.RateLimitDescriptor{d}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.OverallCode
	}
	for i := range 2000 {
		dom := fmt.Sprintf("tenant-%d-%x", i, rng.Uint64())
		if got := ask(dom); got != ok {
			t.Fatalf("first request of domain %s: %v", dom, got)
		}
		if i%100 == 0 && ask(dom) != over {
			t.Fatalf("second request of domain %s within its 1 per hour: admitted", dom)
		}
	}
	if len(obs.seen) != 1 || obs.seen[envoyrls.OverrideMetric] != 2020 {
		t.Fatalf("policy labels seen: %d distinct (%v...), want only %q, 2,020 times", len(obs.seen), firstKeys(obs.seen, 3), envoyrls.OverrideMetric)
	}
}

func firstKeys(m map[string]int, n int) []string {
	var out []string
	for k := range m {
		if len(out) == n {
			break
		}
		out = append(out, k)
	}
	return out
}

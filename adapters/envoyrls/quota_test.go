package envoyrls_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
)

// quota_mode (issue 24): a quota descriptor over its limit fails the request only when every quota descriptor of
// the request is over (or a descriptor without quota_mode is); it records nothing, and the passed descriptors
// are named in the response's dynamic metadata.

const quotaConfig = `domain: q
descriptors:
  - key: plan
    value: monthly
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: plan
    value: daily
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: plan
    value: burst
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
`

func quotaHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "q.yaml"), []byte(quotaConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	return newHarness(t, dir, envoyrls.ServiceOptions{})
}

func passed(r *rlsv3.RateLimitResponse) []float64 {
	var out []float64
	for _, v := range r.GetDynamicMetadata().GetFields()["passedDescriptors"].GetListValue().GetValues() {
		out = append(out, v.GetNumberValue())
	}
	return out
}

func TestQuotaMode(t *testing.T) {
	h := quotaHarness(t)
	monthly, daily := func() *rlcommon.RateLimitDescriptor { return desc("plan=monthly") }, func() *rlcommon.RateLimitDescriptor { return desc("plan=daily") }
	expect(t, "1", h.ask("q", monthly(), daily()), "OK OK/1 OK/3")
	r := h.ask("q", monthly(), daily())
	expect(t, "2", r, "OK OK/0 OK/2")
	if got := passed(r); !slices.Equal(got, []float64{0, 1}) || r.DynamicMetadata.Fields["domain"].GetStringValue() != "q" {
		t.Fatalf("metadata %v, want domain q and passedDescriptors [0 1]", r.DynamicMetadata)
	}
	// monthly is over: the request passes on daily alone; monthly records nothing and says OVER_LIMIT.
	r = h.ask("q", monthly(), daily())
	expect(t, "monthly over", r, "OK OVER_LIMIT/0 OK/1")
	if got := passed(r); !slices.Equal(got, []float64{1}) {
		t.Fatalf("passedDescriptors %v, want [1]", got)
	}
	expect(t, "daily's last", h.ask("q", monthly(), daily()), "OK OVER_LIMIT/0 OK/0")
	// Every quota descriptor over: denied, nothing recorded anywhere (ip keeps its 5).
	r = h.ask("q", monthly(), daily(), desc("ip=1"))
	expect(t, "all quotas over", r, "OVER_LIMIT OVER_LIMIT/0 OVER_LIMIT/0 OK/5")
	if got := passed(r); !slices.Equal(got, []float64{2}) {
		t.Fatalf("passedDescriptors %v, want [2]", got)
	}
	// A limit that is not a quota fails the request whatever the quotas say, and nothing is recorded.
	expect(t, "burst alone", h.ask("q", desc("plan=burst"), withHits(desc("user=u"), 3)), "OK OK/2 OK/0")
	expect(t, "user over", h.ask("q", desc("plan=burst"), desc("user=u")), "OVER_LIMIT OK/2 OVER_LIMIT/0")
	// A quota descriptor whose cost exceeds its limit is only over: burst passes the request.
	expect(t, "oversized quota", h.ask("q", withHits(monthly(), 9), desc("plan=burst")), "OK OVER_LIMIT/0 OK/1")
	// Alone and oversized: every quota descriptor is over.
	expect(t, "oversized alone", h.ask("q", withHits(desc("plan=burst"), 4)), "OVER_LIMIT OVER_LIMIT/0")
	// No quota descriptor in the request: no metadata.
	if r := h.ask("q", desc("ip=2")); r.DynamicMetadata != nil {
		t.Fatalf("metadata without quota descriptors: %v", r.DynamicMetadata)
	}
	h.clock.Advance(time.Minute)
	expect(t, "next window", h.ask("q", monthly(), daily()), "OK OK/1 OK/3")
}

// TestQuotaModeMatchesTheModel: random requests over distinct keys of quota and plain descriptors with random
// hits, time moving across windows; every answer must be the model's: a plain descriptor over fails the request,
// as does every quota descriptor over; a passed request records exactly the descriptors within their limits, a
// denied one nothing.
func TestQuotaModeMatchesTheModel(t *testing.T) {
	h := quotaHarness(t)
	type spec struct {
		desc  string
		limit int
		quota bool
	}
	specs := []spec{{"plan=monthly", 2, true}, {"plan=daily", 4, true}, {"plan=burst", 3, true}, {"ip=1", 5, false}, {"user=u", 3, false}}
	used := make([]int, len(specs))
	window := start.Unix() / 60
	rng := rand.New(rand.NewPCG(24, 7))
	for step := range 3000 {
		h.clock.Advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
		if w := h.clock.Now().Unix() / 60; w != window {
			window, used = w, make([]int, len(specs))
		}
		picked := rng.Perm(len(specs))[:1+rng.IntN(len(specs))]
		hits := make([]int, len(picked))
		ds := make([]*rlcommon.RateLimitDescriptor, len(picked))
		for i, k := range picked {
			hits[i] = 1 + rng.IntN(3)
			ds[i] = withHits(desc(specs[k].desc), uint64(hits[i]))
		}
		fits := func(i int) bool { return used[picked[i]]+hits[i] <= specs[picked[i]].limit }
		quotas, quotasFit, plainOver := 0, 0, false
		for i, k := range picked {
			switch {
			case specs[k].quota:
				quotas++
				if fits(i) {
					quotasFit++
				}
			case !fits(i):
				plainOver = true
			}
		}
		// Denied before anything is decided: a plain descriptor's cost above its limit, or every quota
		// descriptor's: the others are peeked (they report the units left, OVER_LIMIT when none).
		early, quotasOversized := false, 0
		for i, k := range picked {
			if hits[i] > specs[k].limit {
				if specs[k].quota {
					quotasOversized++
				} else {
					early = true
				}
			}
		}
		early = early || (quotas > 0 && quotasOversized == quotas)
		pass := !early && !plainOver && (quotas == 0 || quotasFit > 0)
		want := "OVER_LIMIT"
		if pass {
			want = "OK"
		}
		for i, k := range picked {
			switch {
			case early && hits[i] <= specs[k].limit && used[k] < specs[k].limit:
				want += fmt.Sprintf(" OK/%d", specs[k].limit-used[k])
			case early:
				want += " OVER_LIMIT/0"
			case !fits(i):
				want += " OVER_LIMIT/0"
			case pass:
				used[k] += hits[i]
				want += fmt.Sprintf(" OK/%d", specs[k].limit-used[k])
			default:
				want += fmt.Sprintf(" OK/%d", specs[k].limit-used[k])
			}
		}
		resp, err := h.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "q", Descriptors: ds})
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(resp); got != want {
			t.Fatalf("step %d %v hits %v: got %q, want %q", step, picked, hits, got, want)
		}
	}
}

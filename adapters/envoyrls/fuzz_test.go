package envoyrls_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
)

// FuzzLoad: any file either loads, with every policy valid, or fails with a ConfigError; it never panics.
func FuzzLoad(f *testing.F) {
	for _, fx := range []string{"istio", "envoygateway", "contour"} {
		b, err := os.ReadFile("testdata/" + fx + "/config.yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("domain: d\ndescriptors:\n  - key: a\n    value: b*\n    share_threshold: true\n    rate_limit: {unit: week, requests_per_unit: 4294967295, name: n, replaces: [{name: m}]}\n"))
	f.Add([]byte("domain: [\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := envoyrls.Load([]string{"f.yaml"}, map[string][]byte{"f.yaml": b}, envoyrls.LoadOptions{})
		if err != nil {
			var ce *envoyrls.ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v is not a ConfigError with problems", err)
			}
			return
		}
		if rs.Fingerprint == "" {
			t.Fatal("no fingerprint")
		}
	})
}

// FuzzShouldRateLimit: any request gets one status per descriptor or a gRPC error, never a panic, and never
// more admitted than a limit allows.
func FuzzShouldRateLimit(f *testing.F) {
	f.Add("ratelimit", "PATH", "/productpage", "", "", uint32(0), uint64(1), true, uint32(0), int32(0))
	f.Add("default/eg/http", egRoute, egRoute, "rule-0-match-0", "one", uint32(3), uint64(0), true, uint32(0), int32(0))
	f.Add("contour", "generic_key", "foo", "", "", uint32(1), uint64(7), false, uint32(5), int32(3))
	f.Add("ratelimit", "PATH", strings.Repeat("x", 700), "k", "v", uint32(0), uint64(1), false, uint32(0), int32(0))
	f.Fuzz(func(t *testing.T, dom, k1, v1, k2, v2 string, reqHits uint32, hits uint64, setHits bool, rpu uint32, unit int32) {
		if !utf8.ValidString(dom + k1 + v1 + k2 + v2) {
			return // proto3 strings are UTF-8: gRPC refuses others before they reach the service
		}
		h := newHarness(t, "testdata/istio", envoyrls.ServiceOptions{Headers: true})
		d := desc(k1 + "=" + v1)
		d.Entries[0].Key, d.Entries[0].Value = k1, v1
		if k2 != "" {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: k2, Value: v2})
		}
		if setHits {
			d.HitsAddend = wrapperspb.UInt64(hits)
		}
		if rpu > 0 {
			d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: rpu, Unit: typev3.RateLimitUnit(unit)}
		}
		req := &rlsv3.RateLimitRequest{Domain: dom, Descriptors: []*rlcommon.RateLimitDescriptor{d, desc("PATH=/productpage")}, HitsAddend: reqHits}
		admitted := 0
		for range 4 {
			resp, err := h.svc.ShouldRateLimit(context.Background(), req)
			if err != nil {
				return
			}
			if len(resp.Statuses) != 2 {
				t.Fatalf("%d statuses for 2 descriptors", len(resp.Statuses))
			}
			if resp.OverallCode == ok {
				admitted++
			}
		}
		// In domain ratelimit the second descriptor is /productpage (2 per minute): with all-or-nothing, at most 2
		// requests pass.
		if dom == "ratelimit" && admitted > 2 {
			t.Fatalf("%d of 4 admitted past a limit of 2", admitted)
		}
	})
}

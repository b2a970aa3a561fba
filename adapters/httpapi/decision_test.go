package httpapi

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// generatedCheck200 is what the generated code wrote for a 200 check before checkResponse: the reference.
func generatedCheck200(res domain.Result) api.Check200JSONResponse {
	policy := rateLimitPolicy(res)
	h := api.Check200ResponseHeaders{RateLimitPolicy: &policy}
	if !res.Degraded {
		rl := rateLimit(res)
		h.RateLimit = &rl
	}
	if !res.Allowed {
		ra := retryAfterSeconds(res)
		h.RetryAfter = &ra
	}
	return api.Check200JSONResponse{Body: decisionBody(res), Headers: h}
}

// TestCheckResponseMatchesTheGeneratedEncoder: the hand-written 200 answer of POST /v1/check has the generated
// encoder's status, headers and body, byte for byte, also for keys that encoding/json escapes beyond what JSON
// requires ("<", "&", U+2028) and invalid UTF-8 (which the strict decoder refuses before it could get here).
func TestCheckResponseMatchesTheGeneratedEncoder(t *testing.T) {
	p := domain.Policy{Name: "login", Limit: 5, Window: 90 * time.Second}
	big := domain.Policy{Name: "api.v2_x-y", Limit: domain.MaxLimit, Window: 31 * 24 * time.Hour}
	cases := map[string]domain.Result{
		"allowed":      {Policy: p, Key: "10.0.0.1", Decision: domain.Decision{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: 90 * time.Second}},
		"denied":       {Policy: p, Key: "user/ü", Decision: domain.Decision{Limit: 5, ResetAfter: 1500 * time.Millisecond, RetryAfter: 300 * time.Microsecond}},
		"degraded":     {Policy: p, Key: "k", Degraded: true, Decision: domain.Decision{Allowed: true, Limit: 5}},
		"shadow":       {Policy: p, Key: "k", ShadowDenied: true, Decision: domain.Decision{Allowed: true, Limit: 5}},
		"bounds":       {Policy: big, Key: "k", Decision: domain.Decision{Allowed: true, Limit: domain.MaxLimit, Remaining: domain.MaxLimit - 1, ResetAfter: big.Window}},
		"escapes":      {Policy: p, Key: "a\"b\\c\x00\x1f\t\u00e9\U0001F600", Decision: domain.Decision{Allowed: true, Limit: 5, Remaining: 1}},
		"html":         {Policy: p, Key: "<script>&\u2028\u2029", Decision: domain.Decision{Allowed: true, Limit: 5, Remaining: 1}},
		"bad utf-8":    {Policy: p, Key: "a\xffb", Decision: domain.Decision{Allowed: true, Limit: 5, Remaining: 1}},
		"empty remain": {Policy: p, Key: "k", Decision: domain.Decision{Limit: 5, RetryAfter: time.Hour}},
	}
	for name, res := range cases {
		t.Run(name, func(t *testing.T) {
			want, got := httptest.NewRecorder(), httptest.NewRecorder()
			if err := generatedCheck200(res).VisitCheckResponse(want); err != nil {
				t.Fatal(err)
			}
			if err := (checkResponse{res}).VisitCheckResponse(got); err != nil {
				t.Fatal(err)
			}
			if got.Code != want.Code {
				t.Errorf("status %d, want %d", got.Code, want.Code)
			}
			if !reflect.DeepEqual(got.Header(), want.Header()) {
				t.Errorf("headers\n got %v\nwant %v", got.Header(), want.Header())
			}
			if got.Body.String() != want.Body.String() {
				t.Errorf("body\n got %q\nwant %q", got.Body, want.Body)
			}
			var g, w any
			if err := json.Unmarshal(got.Body.Bytes(), &g); err != nil {
				t.Fatalf("body %q is not JSON: %v", got.Body, err)
			}
			if err := json.Unmarshal(want.Body.Bytes(), &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("body value\n got %v\nwant %v", g, w)
			}
		})
	}
}

func BenchmarkCheckResponse(b *testing.B) {
	res := domain.Result{Policy: domain.Policy{Name: "login", Limit: 5, Window: 90 * time.Second}, Key: "10.0.0.1", Decision: domain.Decision{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: 90 * time.Second}}
	w := httptest.NewRecorder()
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			w.Body.Reset()
			_ = checkResponse{res}.VisitCheckResponse(w)
		}
	})
	b.Run("generated", func(b *testing.B) {
		for b.Loop() {
			w.Body.Reset()
			_ = generatedCheck200(res).VisitCheckResponse(w)
		}
	})
}

// FuzzCheckResponse: for any key, policy name and numbers, the hand-written answer is the generated one.
func FuzzCheckResponse(f *testing.F) {
	f.Add("10.0.0.1", "login", int64(5), int64(4), int64(90_000_000), int64(0), true, false, false)
	f.Add("<&>\u2028", "p", int64(domain.MaxLimit), int64(0), int64(1), int64(3_600_000_000), false, true, true)
	f.Add("a\xffb\x00", "p", int64(1), int64(-1), int64(-5), int64(-7), false, false, true)
	f.Fuzz(func(t *testing.T, key, policy string, limit, remaining, resetUs, retryUs int64, allowed, degraded, shadow bool) {
		res := domain.Result{
			Policy: domain.Policy{Name: policy, Limit: limit, Window: time.Duration(resetUs) * time.Microsecond}, Key: key,
			Degraded: degraded, ShadowDenied: shadow,
			Decision: domain.Decision{Allowed: allowed, Limit: limit, Remaining: remaining,
				ResetAfter: time.Duration(resetUs) * time.Microsecond, RetryAfter: time.Duration(retryUs) * time.Microsecond},
		}
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		if err := generatedCheck200(res).VisitCheckResponse(want); err != nil {
			t.Fatal(err)
		}
		if err := (checkResponse{res}).VisitCheckResponse(got); err != nil {
			t.Fatal(err)
		}
		if got.Code != want.Code || !reflect.DeepEqual(got.Header(), want.Header()) || got.Body.String() != want.Body.String() {
			t.Fatalf("got %d %v %q\nwant %d %v %q", got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	})
}

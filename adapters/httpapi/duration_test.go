package httpapi_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/domain"
)

// durationGrammar is openapi.yaml's Duration schema as the contract states it: its pattern, and its minLength.
func durationGrammar(t testing.TB) func(string) bool {
	t.Helper()
	doc, _ := spec(t)
	s := doc.Components.Schemas["Duration"].Value
	re := regexp.MustCompile(s.Pattern)
	return func(v string) bool { return re.MatchString(v) && uint64(len(v)) >= s.MinLength }
}

var durationSeeds = []string{
	"1s", "1500ms", "30s", "5m", "1h30m", "7d", "1d12h", "31d", "1d2h3m4s5ms", "0s", "60s", "90m",
	"", "d", "ms", "1", "1.5h", "1000000us", "1us", "1ns", "1µs", "-1s", "+5m", " 1s", "1s ", "1e3s", "1S",
	"1s1h", "1s1s", "1m1m", "1ms1s", "1mms", "1hh", "1d-1h", "1h 30m", "0x10s", "１s",
	"106751d", "106752d", "9223372036854775807ms", "9223372036854775808ms", "99999999999999999999s",
}

// FuzzDurationGrammar: domain.ParseDuration accepts a string exactly when openapi.yaml's Duration pattern does,
// except for sums too large for a time.Duration (which the pattern cannot express), refused with "too large".
// And what parses, FormatDuration writes back in the same grammar.
func FuzzDurationGrammar(f *testing.F) {
	matches := durationGrammar(f)
	for _, s := range durationSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := domain.ParseDuration(s)
		switch {
		case err == nil && !matches(s):
			t.Fatalf("ParseDuration(%q) = %s, but openapi.yaml's Duration refuses it", s, d)
		case err != nil && matches(s) && !strings.Contains(err.Error(), "too large"):
			t.Fatalf("ParseDuration(%q): %v, but openapi.yaml's Duration allows it", s, err)
		case err == nil:
			if out := domain.FormatDuration(d); !matches(out) {
				t.Fatalf("FormatDuration(%s) = %q, outside openapi.yaml's Duration", d, out)
			}
		}
	})
}

// TestPolicyWindowGrammar: windows the spec's pattern forbids are refused over the API, naming the window.
func TestPolicyWindowGrammar(t *testing.T) {
	e := newEnv(t)
	for _, w := range []string{"1.5h", "1000000us", "1s1h", "60s60s"} {
		wantProblem(t, e.do("PUT", "/v1/policies/new", map[string]any{"limit": 1, "window": w}, invalidRequest()), 400, "validation", "window")
	}
	// A resolution that does not parse is reported with every other bad field.
	r := e.do("PUT", "/v1/policies/new", map[string]any{"limit": 0, "window": "1m", "algorithm": "sliding_window", "resolution": "1.5s"}, invalidRequest())
	if got := fields(t, r); strings.Join(got, ",") != "resolution,limit" {
		t.Fatalf("fields %v, want resolution and limit", got)
	}
	if r := e.do("PUT", "/v1/policies/new", map[string]any{"limit": 1, "window": "1h30m"}); r.Status != 201 || !strings.Contains(string(r.Body), `"window":"1h30m"`) {
		t.Fatalf("1h30m: %d %s", r.Status, r.Body)
	}
}

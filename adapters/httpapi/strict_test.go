package httpapi_test

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/api"
)

// fields returns the fields a validation problem names, in order.
func fields(t *testing.T, r response) []string {
	t.Helper()
	p := r.problem(t)
	if r.Status != 400 || p.Type != "https://sluice.dev/problems/validation" || p.Errors == nil {
		t.Fatalf("want a validation problem, got %d %s", r.Status, r.Body)
	}
	var out []string
	for _, f := range *p.Errors {
		out = append(out, f.Field)
	}
	return out
}

// TestJSONBodiesAreStrict: a duplicate member, a member name in another case, and invalid UTF-8 (raw or as a lone
// surrogate escape) are validation problems naming the field; encoding/json accepted all of them (the last
// duplicate won, "Policy" filled policy, invalid bytes became U+FFFD so two keys shared one bucket).
func TestJSONBodiesAreStrict(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, path, body, field string
	}{
		{"duplicate policy", "/v1/check", `{"policy":"nope","policy":"login","key":"k"}`, "policy"},
		{"duplicate key", "/v1/check", `{"policy":"login","key":"a","key":"b"}`, "key"},
		{"duplicate in a nested check", "/v1/checks", `{"checks":[{"policy":"login","key":"a"},{"policy":"login","key":"a","cost":1,"cost":0}]}`, "checks[1].cost"},
		{"duplicate atomic", "/v1/checks", `{"atomic":false,"atomic":true,"checks":[{"policy":"login","key":"a"}]}`, "atomic"},
		{"upper-case name", "/v1/check", `{"Policy":"login","key":"k"}`, "Policy"},
		{"upper-case names", "/v1/check", `{"policy":"login","KEY":"k"}`, "KEY"},
		{"nested upper-case", "/v1/checks", `{"checks":[{"policy":"login","Key":"a"}]}`, "checks[0].Key"},
		{"invalid UTF-8 key", "/v1/check", "{\"policy\":\"login\",\"key\":\"a\xffb\"}", "key"},
		{"lone surrogate key", "/v1/check", `{"policy":"login","key":"a\udc00b"}`, "key"},
		{"invalid UTF-8 nested key", "/v1/checks", "{\"checks\":[{\"policy\":\"login\",\"key\":\"\xc3\"}]}", "checks[0].key"},
		{"duplicate policy field", "/v1/policies/new", `{"limit":1,"window":"1m","limit":2}`, "limit"},
		{"upper-case policy field", "/v1/policies/new", `{"limit":1,"Window":"1m"}`, "Window"},
	} {
		t.Run(c.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(c.path, "/v1/policies/") {
				method = "PUT"
			}
			got := fields(t, e.in(t).do(method, c.path, c.body, invalidRequest()))
			if !contains(got, c.field) {
				t.Fatalf("fields %v, want %q", got, c.field)
			}
		})
	}
	// Nothing was spent by the refused bodies, and the policy was not created.
	if d, fresh := e.peek("login", "k"), e.peek("login", "never-used"); d.Remaining != fresh.Remaining {
		t.Fatalf("a refused body spent a unit: %+v", d)
	}
	wantProblem(t, e.do("GET", "/v1/policies/new", nil), 404, "not-found", "")
}

// TestBodiesReportEveryField: every bad field of a body is in one problem, not only the first.
func TestBodiesReportEveryField(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, method, path, body string
		want                     []string
	}{
		{"policy values", "PUT", "/v1/policies/new", `{"limit":0,"window":"1x","algorithm":"x"}`, []string{"window", "limit", "algorithm"}},
		{"policy types", "PUT", "/v1/policies/new", `{"limit":"5","window":60,"shadow":"yes","failure_mode":1}`, []string{"limit", "window", "shadow", "failure_mode"}},
		{"check types", "POST", "/v1/check", `{"policy":1,"key":null,"cost":1.5,"extra":true}`, []string{"policy", "key", "cost", "extra"}},
		{"checks types", "POST", "/v1/checks", `{"atomic":"yes","checks":[{"policy":"login","key":"a","cost":-1.5},{"policy":[],"key":"b"}]}`, []string{"atomic", "checks[0].cost", "checks[1].policy"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := fields(t, e.in(t).do(c.method, c.path, c.body, invalidRequest()))
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("fields %v, want %v", got, c.want)
			}
		})
	}
	// The integer message is plain words, not a Go type.
	r := e.do("POST", "/v1/check", `{"policy":"login","key":"k","cost":1.5}`, invalidRequest())
	var p api.Problem
	r.json(t, &p)
	if d := (*p.Errors)[0].Detail; !strings.Contains(d, "must be an integer") || strings.Contains(d, "int64") {
		t.Fatalf("cost 1.5: %q", d)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestEmptyBodyIsMalformed: an empty JSON body is a malformed problem in plain words, not "EOF".
func TestEmptyBodyIsMalformed(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/v1/check", "", invalidRequest(), header("Content-Type", "application/json"))
	wantProblem(t, r, 400, "malformed", "")
	if p := r.problem(t); p.Detail == nil || !strings.Contains(*p.Detail, "the body is empty") {
		t.Fatalf("body %s", r.Body)
	}
}

package httpapi_test

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/adapters/httpapi"
)

func TestChecksAtomicIsAllOrNothing(t *testing.T) {
	e := newEnv(t)
	e.decision(check("one", "k")) // "one" (limit 1) is now used up for k
	out := e.checks(map[string]any{"atomic": true, "checks": []any{check("login", "k", 2), check("one", "k")}})
	if out.Allowed || len(out.Decisions) != 2 || !out.Decisions[0].Allowed || out.Decisions[1].Allowed {
		t.Fatalf("atomic batch with one denial: %+v", out)
	}
	if out.Decisions[1].RetryAfterMs <= 0 || out.Decisions[0].Policy != "login" || out.Decisions[1].Policy != "one" {
		t.Fatalf("decisions: %+v", out.Decisions)
	}
	// Nothing was consumed: the check that fit reports what login has left now (5 of 5), as RLS reports it
	// (domain.RolledBack), not what it would have left had the batch been recorded (3).
	if out.Decisions[0].Remaining != 5 {
		t.Fatalf("the admitted check of a denied atomic batch reports remaining %d, want 5 (nothing consumed)", out.Decisions[0].Remaining)
	}
	if d := e.peek("login", "k"); d.Remaining != 4 { // a peek answers as a cost-1 check would
		t.Fatalf("an atomic batch that was denied consumed login: peek remaining %d, want 4", d.Remaining)
	}
	// All admitted: everything is recorded.
	out = e.checks(map[string]any{"atomic": true, "checks": []any{check("login", "k", 2), check("fifty", "k", 10)}})
	if !out.Allowed || out.Decisions[0].Remaining != 3 || out.Decisions[1].Remaining != 40 {
		t.Fatalf("atomic batch all admitted: %+v", out)
	}
	if d := e.peek("fifty", "k"); d.Remaining != 39 {
		t.Fatalf("fifty after the admitted batch: peek remaining %d, want 39", d.Remaining)
	}
}

func TestChecksNonAtomicDecidesEachOnItsOwn(t *testing.T) {
	e := newEnv(t)
	e.decision(check("one", "k"))
	// atomic omitted: false by default.
	out := e.checks(map[string]any{"checks": []any{check("login", "k", 2), check("one", "k")}})
	if out.Allowed || !out.Decisions[0].Allowed || out.Decisions[1].Allowed {
		t.Fatalf("non-atomic batch: %+v", out)
	}
	if d := e.peek("login", "k"); d.Remaining != 2 {
		t.Fatalf("the admitted check of a non-atomic batch was not recorded: peek remaining %d, want 2", d.Remaining)
	}
	out = e.checks(map[string]any{"atomic": false, "checks": []any{check("login", "k")}})
	if !out.Allowed || out.Decisions[0].Remaining != 2 {
		t.Fatalf("atomic:false: %+v", out)
	}
}

func TestChecksSameKeyTwice(t *testing.T) {
	e := newEnv(t)
	// Each check sees the units recorded by the ones before it.
	out := e.checks(map[string]any{"checks": []any{check("login", "k", 2), check("login", "k", 2)}})
	if !out.Allowed || out.Decisions[0].Remaining != 3 || out.Decisions[1].Remaining != 1 {
		t.Fatalf("same key twice, non-atomic: %+v", out)
	}
	// 1 left: the second check of 1 is denied, so an atomic batch records neither.
	out = e.checks(map[string]any{"atomic": true, "checks": []any{check("login", "k"), check("login", "k")}})
	if out.Allowed || !out.Decisions[0].Allowed || out.Decisions[1].Allowed {
		t.Fatalf("same key twice, atomic, second over the limit: %+v", out)
	}
	if d := e.peek("login", "k"); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("peek %+v, want allowed with remaining 0: the denied atomic batch recorded something", d)
	}
	// Same key in the same batch under two policies: separate state.
	out = e.checks(map[string]any{"atomic": true, "checks": []any{check("login", "k"), check("fifty", "k")}})
	if !out.Allowed || out.Decisions[0].Remaining != 0 || out.Decisions[1].Remaining != 49 {
		t.Fatalf("same key, two policies: %+v", out)
	}
}

func TestChecksValidationNamesEveryField(t *testing.T) {
	e := newEnv(t, func(o *httpapi.Options) { o.MaxBodyBytes = 64 << 10 })
	long := strings.Repeat("x", 513)
	cases := []struct {
		name   string
		body   any
		status int
		slug   string
		fields []string
	}{
		{"several bad checks", map[string]any{"checks": []any{
			check("Bad!", "k"), check("login", ""), check("login", "k", 6), check("login", long), check("login", "k", -1),
		}}, 400, "validation", []string{"checks[0].policy", "checks[1].key", "checks[2].cost", "checks[3].key", "checks[4].cost"}},
		{"no checks", map[string]any{"checks": []any{}}, 400, "validation", []string{"checks"}},
		{"checks missing", map[string]any{"atomic": true}, 400, "validation", []string{"checks"}},
		{"unknown field in a check", `{"checks":[{"policy":"login","key":"k","cots":1}]}`, 400, "validation", []string{"checks[0].cots"}},
		{"unknown top-level field", `{"checks":[{"policy":"login","key":"k"}],"atomik":true}`, 400, "validation", []string{"atomik"}},
		{"atomic not a boolean", `{"checks":[{"policy":"login","key":"k"}],"atomic":"yes"}`, 400, "validation", []string{"atomic"}},
		{"malformed", `{"checks":[`, 400, "malformed", nil},
		{"unknown policy", map[string]any{"checks": []any{check("login", "k"), check("nope", "k")}}, 404, "not-found", nil},
	}
	var tooMany []any
	for range 101 {
		tooMany = append(tooMany, check("fifty", "k"))
	}
	cases = append(cases, struct {
		name   string
		body   any
		status int
		slug   string
		fields []string
	}{"101 checks (maxItems 100)", map[string]any{"checks": tooMany}, 400, "validation", []string{"checks"}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.in(t)
			r := e.do("POST", "/v1/checks", c.body, invalidRequest())
			wantProblem(t, r, c.status, c.slug, "")
			for _, f := range c.fields {
				wantProblem(t, r, c.status, c.slug, f)
			}
		})
	}
	// Nothing of the invalid batches was recorded.
	if d := e.peek("fifty", "k"); d.Remaining != 49 {
		t.Fatalf("the batch of 101 consumed quota: peek remaining %d", d.Remaining)
	}
	if d := e.peek("login", "k"); d.Remaining != 4 {
		t.Fatalf("invalid batches consumed quota: peek remaining %d, want 4", d.Remaining)
	}
}

func TestChecksShadowNeverFailsABatch(t *testing.T) {
	e := newEnv(t)
	e.decision(check("trial", "k")) // trial (limit 1, shadow) is used up
	out := e.checks(map[string]any{"atomic": true, "checks": []any{check("trial", "k"), check("login", "k")}})
	if !out.Allowed || !out.Decisions[0].Allowed || out.Decisions[0].ShadowDenied == nil || !*out.Decisions[0].ShadowDenied {
		t.Fatalf("a shadow denial must admit and say so: %+v", out)
	}
	if out.Decisions[0].RetryAfterMs != 0 {
		t.Fatalf("a shadow-admitted decision has retry_after_ms %d", out.Decisions[0].RetryAfterMs)
	}
	if d := e.peek("login", "k"); d.Remaining != 3 {
		t.Fatalf("the batch with a shadow denial was not recorded: login peek remaining %d, want 3", d.Remaining)
	}
}

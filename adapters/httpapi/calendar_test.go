package httpapi_test

import (
	"testing"
	"time"
)

// Calendar periods over the API: a policy with a period, zone and anchor, shown back; its decisions' reset_after
// is exact to the next boundary, period_ms and RateLimit-Policy's w are the civil period's length (a 23-hour day
// on a spring-forward day); a period with another algorithm, with a window, or with a bad zone or anchor is a 400
// naming the field.
func TestCalendarPolicyOverTheAPI(t *testing.T) {
	e := newEnv(t)
	p := e.putPolicy("daily", map[string]any{"limit": 2, "period": "day", "time_zone": "America/New_York"}, 201)
	if p.Period == nil || *p.Period != "day" || p.TimeZone == nil || *p.TimeZone != "America/New_York" || p.Anchor == nil ||
		p.Algorithm != "fixed_window" || p.Window != "2d" {
		t.Fatalf("created %+v", p)
	}
	if got := *p.Anchor; got != "2001-01-01T00:00:00-05:00" {
		t.Fatalf("default anchor %s", got)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// Noon on Sunday March 8, 2026: the day clocks spring forward in New York, 23 hours long.
	e.clock.Set(time.Date(2026, 3, 8, 12, 0, 0, 0, ny))
	d, r := e.decision(check("daily", "k"))
	if !d.Allowed || d.ResetAfterMs != 12*3600*1000 || d.PeriodMs == nil || *d.PeriodMs != 23*3600*1000 {
		t.Fatalf("check on a spring-forward day: %+v", d)
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"daily";q=2;w=82800` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	e.decision(check("daily", "k"))
	d, r = e.decision(check("daily", "k"))
	if d.Allowed || d.RetryAfterMs != 12*3600*1000 || r.Header.Get("Retry-After") != "43200" {
		t.Fatalf("third check: %+v %v", d, r.Header)
	}
	e.clock.Set(time.Date(2026, 3, 9, 0, 0, 0, 0, ny))
	if d, _ := e.decision(check("daily", "k")); !d.Allowed || d.ResetAfterMs != 24*3600*1000 {
		t.Fatalf("at the next midnight: %+v", d)
	}

	monthly := e.putPolicy("billing", map[string]any{"limit": 1000, "period": "month", "time_zone": "Europe/Paris", "anchor": "2026-01-31T09:00:00+01:00"}, 201)
	if *monthly.Anchor != "2026-01-31T09:00:00+01:00" || monthly.Window != "32d" {
		t.Fatalf("monthly %+v", monthly)
	}
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1, "period": "week", "algorithm": "sliding_log"}), 400, "validation", "period")
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1, "period": "week", "window": "7d"}), 400, "validation", "window")
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1, "period": "week", "time_zone": "Mars/Olympus"}), 400, "validation", "time_zone")
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1, "time_zone": "UTC", "window": "1h"}), 400, "validation", "period")
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1}), 400, "validation", "window")
	wantProblem(t, e.do("PUT", "/v1/policies/bad", map[string]any{"limit": 1, "period": "month", "anchor": "the 31st of each month"}), 400, "validation", "anchor")
}

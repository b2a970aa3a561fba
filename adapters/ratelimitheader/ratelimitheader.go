// Package ratelimitheader formats the RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-
// headers-11 (-10 has the same syntax) and Retry-After (RFC 9110 §10.2.3, delay-seconds) from a decision. It is
// protocol-neutral: the HTTP API sets them on its responses and the Envoy RLS front end returns them in
// response_headers_to_add, so both write exactly the same values.
package ratelimitheader

import (
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// Header names, in the case the draft and RFC 9110 write them.
const (
	PolicyHeader     = "RateLimit-Policy"
	RateLimitHeader  = "RateLimit"
	RetryAfterHeader = "Retry-After"
)

// CeilSeconds rounds d up to whole seconds: a client told to wait 0 s after a 400 ms retry delay would retry too
// early.
func CeilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Policy formats the RateLimit-Policy field of r's policy: "name";q=limit;w=window-seconds, where the window of
// a calendar period is the length of the period that decided r (a civil day is 23 to 25 hours, a month 28 to 31
// days), not the policy's Window (the longest a period can last). Policy names are [a-z0-9_.-], safe inside an
// sf-string; keys never appear in headers.
func Policy(r domain.Result) string {
	var a [112]byte // a policy name (at most 64 bytes) and two int64s fit: one allocation, the string
	return string(AppendPolicy(a[:0], r))
}

// AppendPolicy appends what Policy returns to b.
func AppendPolicy(b []byte, r domain.Result) []byte {
	p := r.Policy
	b = append(b, '"')
	b = append(b, p.Name...)
	b = append(b, `";q=`...)
	b = strconv.AppendInt(b, p.Limit, 10)
	b = append(b, ";w="...)
	return strconv.AppendInt(b, CeilSeconds(Window(r)), 10)
}

// Window is the window r's policy counts over: its Window, or for a calendar period the length of the period
// that decided r (Decision.Period).
func Window(r domain.Result) time.Duration {
	if r.Period > 0 {
		return r.Period
	}
	return r.Policy.Window
}

// RateLimit formats the RateLimit field: "name";r=remaining;t=seconds-until-the-quota-is-whole.
func RateLimit(r domain.Result) string {
	var a [112]byte
	return string(AppendRateLimit(a[:0], r))
}

// AppendRateLimit appends what RateLimit returns to b.
func AppendRateLimit(b []byte, r domain.Result) []byte {
	b = append(b, '"')
	b = append(b, r.Policy.Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, r.Remaining, 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, CeilSeconds(r.ResetAfter), 10)
}

// RetryAfterSeconds is the Retry-After of a denial: at least 1, since a denied client must wait.
func RetryAfterSeconds(r domain.Result) int {
	return int(max(CeilSeconds(r.RetryAfter), 1))
}

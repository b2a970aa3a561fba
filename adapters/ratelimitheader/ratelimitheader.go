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

// Policy formats the RateLimit-Policy field: "name";q=limit;w=window-seconds. Policy names are [a-z0-9_.-], safe
// inside an sf-string; keys never appear in headers.
func Policy(p domain.Policy) string {
	return `"` + p.Name + `";q=` + strconv.FormatInt(p.Limit, 10) + ";w=" + strconv.FormatInt(CeilSeconds(p.Window), 10)
}

// RateLimit formats the RateLimit field: "name";r=remaining;t=seconds-until-the-quota-is-whole.
func RateLimit(r domain.Result) string {
	return `"` + r.Policy.Name + `";r=` + strconv.FormatInt(r.Remaining, 10) + ";t=" + strconv.FormatInt(CeilSeconds(r.ResetAfter), 10)
}

// RetryAfterSeconds is the Retry-After of a denial: at least 1, since a denied client must wait.
func RetryAfterSeconds(r domain.Result) int {
	return int(max(CeilSeconds(r.RetryAfter), 1))
}

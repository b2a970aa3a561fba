package httpapi

import (
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// ceilSeconds rounds d up to whole seconds: a client told to wait 0 s after a 400 ms retry delay would retry
// too early.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// rateLimitPolicy formats the RateLimit-Policy field of draft-ietf-httpapi-ratelimit-headers-10:
// "name";q=limit;w=window-seconds. Policy names are [a-z0-9_.-], safe inside an sf-string; keys never appear in
// headers.
func rateLimitPolicy(p domain.Policy) string {
	return `"` + p.Name + `";q=` + strconv.FormatInt(p.Limit, 10) + ";w=" + strconv.FormatInt(ceilSeconds(p.Window), 10)
}

// rateLimit formats the RateLimit field: "name";r=remaining;t=seconds-until-the-quota-is-whole.
func rateLimit(r domain.Result) string {
	return `"` + r.Policy.Name + `";r=` + strconv.FormatInt(r.Remaining, 10) + ";t=" + strconv.FormatInt(ceilSeconds(r.ResetAfter), 10)
}

// retryAfterSeconds is the Retry-After of a denial: at least 1, since a denied client must wait.
func retryAfterSeconds(r domain.Result) int {
	return int(max(ceilSeconds(r.RetryAfter), 1))
}

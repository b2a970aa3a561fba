package httpapi

import (
	"github.com/sluice-dev/sluice/adapters/ratelimitheader"
	"github.com/sluice-dev/sluice/domain"
)

// The RateLimit header formatting lives in adapters/ratelimitheader, shared with the Envoy RLS front end; these
// names keep the handlers' call sites as they were.

func rateLimitPolicy(r domain.Result) string { return ratelimitheader.Policy(r) }

func rateLimit(r domain.Result) string { return ratelimitheader.RateLimit(r) }

func retryAfterSeconds(r domain.Result) int { return ratelimitheader.RetryAfterSeconds(r) }

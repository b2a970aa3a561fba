package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/sluice-dev/sluice/adapters/ratelimitheader"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// checkResponse is the 200 answer of POST /v1/check, the hottest path of the service. It writes what the
// generated api.Check200JSONResponse writes (the same headers, a body of openapi.yaml's Decision schema with its
// members in the same order) without the generic encoder's reflection and per-header fmt.Sprint: one pooled
// buffer holds the body and the header values are formatted once. contract_test.go checks every answer against
// openapi.yaml, and TestCheckResponseMatchesTheGeneratedEncoder compares it with the generated encoder byte for
// byte.
type checkResponse struct{ res domain.Result }

// respBufs holds response-body buffers between requests.
var respBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Canonical header keys (net/http's form, as Header.Set would store them).
var (
	hdrContentType = http.CanonicalHeaderKey("Content-Type")
	hdrPolicy      = http.CanonicalHeaderKey(ratelimitheader.PolicyHeader)
	hdrRateLimit   = http.CanonicalHeaderKey(ratelimitheader.RateLimitHeader)
	hdrRetryAfter  = http.CanonicalHeaderKey(ratelimitheader.RetryAfterHeader)
)

// VisitCheckResponse implements api.CheckResponseObject.
func (c checkResponse) VisitCheckResponse(w http.ResponseWriter) error {
	r := c.res
	h := w.Header()
	h[hdrContentType] = []string{"application/json"}
	if !r.Degraded {
		h[hdrRateLimit] = []string{rateLimit(r)}
	}
	h[hdrPolicy] = []string{rateLimitPolicy(r.Policy)}
	if !r.Allowed {
		h[hdrRetryAfter] = []string{strconv.Itoa(retryAfterSeconds(r))}
	}
	bp := respBufs.Get().(*[]byte)
	b, err := appendDecision((*bp)[:0], decisionBody(r))
	if err != nil {
		respBufs.Put(bp)
		return err
	}
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		respBufs.Put(bp)
	}
	return err
}

// appendDecision appends d as JSON and a newline, as json.Encoder ends every value with one.
func appendDecision(b []byte, d api.Decision) ([]byte, error) {
	b = append(b, `{"allowed":`...)
	b = strconv.AppendBool(b, d.Allowed)
	if d.Degraded != nil {
		b = append(b, `,"degraded":true`...)
	}
	b = append(b, `,"key":`...)
	b, err := appendString(b, d.Key)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, d.Limit, 10)
	b = append(b, `,"policy":`...)
	if b, err = appendString(b, d.Policy); err != nil {
		return nil, err
	}
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, `,"reset_after_ms":`...)
	b = strconv.AppendInt(b, d.ResetAfterMs, 10)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, d.RetryAfterMs, 10)
	if d.ShadowDenied != nil {
		b = append(b, `,"shadow_denied":true`...)
	}
	return append(b, "}\n"...), nil
}

// appendString appends s as a JSON string escaped as encoding/json escapes it: besides what JSON requires, "<",
// ">", "&", U+2028 and U+2029 as \u escapes, so a body stays safe to embed in HTML or JavaScript. Strings holding
// none of those (nearly every key) take jsontext's quoting, which then writes the same bytes; invalid UTF-8 (which
// the strict decoder refuses before a check gets here) is written as encoding/json writes it, as U+FFFD.
func appendString(b []byte, s string) ([]byte, error) {
	if strings.ContainsAny(s, "<>&\u2028\u2029") || !utf8.ValidString(s) {
		q, err := json.Marshal(s)
		return append(b, q...), err
	}
	return jsontext.AppendQuote(b, s)
}

package httpapi

import (
	"encoding/json"
	"fmt"
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
	// The header values are formatted into one buffer and become one string, sliced; the four one-value
	// slices share one array.
	var a [256]byte
	hb := ratelimitheader.AppendPolicy(a[:0], r)
	ends := [3]int{len(hb), len(hb), len(hb)} // the ends of RateLimit-Policy, RateLimit and Retry-After
	if !r.Degraded {
		hb = ratelimitheader.AppendRateLimit(hb, r)
		ends[1], ends[2] = len(hb), len(hb)
	}
	if !r.Allowed {
		hb = strconv.AppendInt(hb, int64(retryAfterSeconds(r)), 10)
		ends[2] = len(hb)
	}
	vals := string(hb)
	vs := make([]string, 4)
	vs[0], vs[1], vs[2], vs[3] = "application/json", vals[:ends[0]], vals[ends[0]:ends[1]], vals[ends[1]:ends[2]]
	h := w.Header()
	h[hdrContentType] = vs[0:1:1]
	if !r.Degraded {
		h[hdrRateLimit] = vs[2:3:3]
	}
	h[hdrPolicy] = vs[1:2:2]
	if !r.Allowed {
		h[hdrRetryAfter] = vs[3:4:4]
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
	if d.Override != nil {
		b = append(b, `,"override":`...)
		if b, err = appendString(b, *d.Override); err != nil {
			return nil, err
		}
	}
	if d.PeriodMs != nil {
		b = append(b, `,"period_ms":`...)
		b = strconv.AppendInt(b, *d.PeriodMs, 10)
	}
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

// directCheck is the generated strict handler with its POST /v1/check, the hottest path of the service, done
// here: it reads and decodes the body with readJSONBody, which is what the generated Check reaches through
// runtime.BindJSONBody, without the runtime's one-byte peek, the readers it joins around the body and the
// middleware closure (this package installs no strict middleware). Errors take the same two handlers with the
// same wrapping, so every answer is the generated handler's: TestDirectCheckMatchesTheGeneratedHandler sends
// both the same requests, valid and hostile, and compares status, headers and body; FuzzDirectCheck does so on
// random bodies. Every other operation is the generated strict handler's.
type directCheck struct {
	api.ServerInterface
	srv                         *server
	requestError, responseError func(http.ResponseWriter, *http.Request, error)
}

// Check implements api.ServerInterface for POST /v1/check.
func (h directCheck) Check(w http.ResponseWriter, r *http.Request) {
	var body api.CheckJSONRequestBody
	if err := readJSONBody(r.Body, &body); err != nil {
		h.requestError(w, r, fmt.Errorf("can't decode JSON body: %w", err))
		return
	}
	res, err := h.srv.check(r.Context(), &body)
	if err == nil {
		err = checkResponse{res}.VisitCheckResponse(w)
	}
	if err != nil {
		h.responseError(w, r, err)
	}
}

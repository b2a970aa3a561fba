package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// problemBase prefixes every problem type URI. Types are stable: clients branch on them.
const problemBase = "https://sluice.dev/problems/"

// kind is one row of the error table: an HTTP status and a stable problem type.
type kind struct {
	status int
	slug   string
	title  string
}

var (
	kindValidation = kind{http.StatusBadRequest, "validation", "The request has invalid fields"}
	kindMalformed  = kind{http.StatusBadRequest, "malformed", "The request body is not valid JSON for this operation"}
	kindUnauthn    = kind{http.StatusUnauthorized, "unauthenticated", "A valid bearer token is required"}
	kindForbidden  = kind{http.StatusForbidden, "forbidden", "The token's role does not allow this operation"}
	kindNotFound   = kind{http.StatusNotFound, "not-found", "No such policy"}
	kindNoRoute    = kind{http.StatusNotFound, "not-found", "No such endpoint"}
	kindConflict   = kind{http.StatusConflict, "conflict", "The policy is read-only: it comes from the config file"}
	// The hold kinds (domain.HoldError): the detail says which hold and why.
	kindHoldNotFound = kind{http.StatusNotFound, "hold-not-found", "No such hold"}
	kindHoldConflict = kind{http.StatusConflict, "hold-conflict", "The hold operation conflicts with an earlier one"}
	kindHoldExpired  = kind{http.StatusConflict, "hold-expired", "The hold has passed its deadline"}
	kindTooLarge     = kind{http.StatusRequestEntityTooLarge, "body-too-large", "The request body is too large"}
	kindMediaType    = kind{http.StatusUnsupportedMediaType, "unsupported-media-type", "The request body must be application/json"}
	kindRateLimited  = kind{http.StatusTooManyRequests, "rate-limited", "Rate limit exceeded"}
	kindInternal     = kind{http.StatusInternalServerError, "internal", "Internal error"}
	kindUnavailable  = kind{http.StatusServiceUnavailable, "store-unavailable", "The rate-limit store could not answer"}
	// kindClientGone answers a client that disconnected mid-request; nobody reads it, so it only has to be valid.
	kindClientGone   = kind{http.StatusServiceUnavailable, "store-unavailable", "The request was cancelled"}
	kindNotReady     = kind{http.StatusServiceUnavailable, "not-ready", "Not ready"}
	kindMethodNotAll = kind{http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed"}
)

// classify is the one table from errors to problems. Anything it does not know is internal (500), and its text
// is logged, not sent.
func classify(err error) (kind, []domain.FieldError) {
	var ve *domain.ValidationError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ve):
		return kindValidation, ve.Fields
	case errors.As(err, &mbe):
		return kindTooLarge, nil
	case errors.Is(err, domain.ErrPolicyNotFound), errors.Is(err, domain.ErrOverrideNotFound):
		return kindNotFound, nil
	case errors.Is(err, domain.ErrHoldNotFound):
		return kindHoldNotFound, nil
	case errors.Is(err, domain.ErrHoldConflict):
		return kindHoldConflict, nil
	case errors.Is(err, domain.ErrHoldExpired):
		return kindHoldExpired, nil
	case errors.Is(err, domain.ErrReadOnlyPolicy):
		return kindConflict, nil
	case errors.Is(err, domain.ErrUnavailable):
		return kindUnavailable, nil
	case errors.Is(err, context.Canceled):
		return kindClientGone, nil
	case errors.Is(err, errUnauthenticated):
		return kindUnauthn, nil
	case errors.Is(err, errForbidden):
		return kindForbidden, nil
	case errors.Is(err, errMediaType):
		return kindMediaType, nil
	case errors.Is(err, errMalformed):
		return kindMalformed, nil
	}
	return kindInternal, nil
}

// problem builds the RFC 9457 body.
func problem(k kind, detail string, fields []domain.FieldError) api.Problem {
	p := api.Problem{Type: problemBase + k.slug, Title: k.title, Status: k.status}
	if detail != "" {
		p.Detail = &detail
	}
	if len(fields) > 0 {
		fe := make([]api.FieldError, len(fields))
		for i, f := range fields {
			fe[i] = api.FieldError{Field: f.Field, Detail: f.Detail}
		}
		p.Errors = &fe
	}
	return p
}

// detailFor is the detail text a client sees for err: the domain's own words for the kinds it owns, nothing
// more for internal errors.
func detailFor(k kind, err error) string {
	switch k {
	case kindInternal:
		return ""
	case kindUnavailable:
		return unavailableDetail[domain.StoreCause(err)]
	}
	return err.Error()
}

// unavailableDetail is the detail of a 503 per cause (domain.StoreCause): what happened, without the store's own
// words (they may name hosts; the log has them).
var unavailableDetail = map[string]string{
	domain.CauseTimeout: "the store did not answer in time and the policy's failure_mode is deny; retry after the Retry-After delay",
	domain.CauseFull:    "the memory store is full: every slot holds a key with units in its window (raise memory.max_keys), and the policy's failure_mode is deny; retry after the Retry-After delay",
	domain.CauseFailed:  "the store failed to answer (the server log has the cause) and the policy's failure_mode is deny; retry after the Retry-After delay",
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, p api.Problem) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
	}
	if p.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="sluice"`)
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// unavailableRetryAfter is the Retry-After, in seconds, of a 503: long enough not to hammer a store that is
// recovering, short enough that clients come back soon after it does.
const unavailableRetryAfter = 1

var (
	errUnauthenticated = errors.New("missing or unknown bearer token")
	errForbidden       = errors.New("forbidden")
	errMediaType       = errors.New("unsupported media type")
	errMalformed       = errors.New("malformed body")
)

// decodeError turns a request-decoding error from the generated code into a problem error with the field named
// when it can be. Errors arrive wrapped ("can't decode JSON body: ...").
func decodeError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	var ve *domain.ValidationError
	if errors.As(err, &ve) {
		return ve
	}
	var me *malformedError
	if errors.As(err, &me) {
		return me
	}
	if errors.Is(err, io.EOF) {
		return &malformedError{msg: "the body is empty; send a JSON object"}
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "can't decode JSON body: ")
	return &malformedError{msg: msg}
}

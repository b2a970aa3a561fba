package domain

import (
	"context"
	"errors"
	"strings"
)

// The closed set of domain errors. Adapters map them to transport errors in one table; anything else is internal.
var (
	// ErrInvalid marks a request or policy that breaks a rule; the error is a *ValidationError naming the fields.
	ErrInvalid = errors.New("invalid")
	// ErrPolicyNotFound: no policy has that name.
	ErrPolicyNotFound = errors.New("policy not found")
	// ErrOverrideNotFound: the policy has no override with that match.
	ErrOverrideNotFound = errors.New("override not found")
	// ErrReadOnlyPolicy: the policy comes from the config file and cannot be changed over the API.
	ErrReadOnlyPolicy = errors.New("policy is read-only: it comes from the config file")
	// ErrUnavailable: the store could not answer (down, timed out, or full) and the policy's failure_mode is deny.
	ErrUnavailable = errors.New("store unavailable")
	// ErrStoreFull is returned by a bounded store that holds only live keys and is asked to track a new one. It
	// is never returned to callers as such: the Limiter treats it as any store failure (ErrUnavailable or a
	// degraded admit, per failure_mode), because evicting a live key would reset its counter and over-admit.
	ErrStoreFull = errors.New("store full: every slot holds a key with units in its window")
	// ErrHoldNotFound: no hold has that id on the key (never acquired, its policy re-created, or its record gone
	// after its deadline). The error is a *HoldError.
	ErrHoldNotFound = errors.New("hold not found")
	// ErrHoldConflict: the id is held with another amount, was settled with another amount, or its units were
	// converted by a change of policy so a refund gives nothing back. The error is a *HoldError.
	ErrHoldConflict = errors.New("hold conflict")
	// ErrHoldExpired: the hold's deadline has passed: a refund gives nothing back, a renewal is refused, and a
	// concurrency hold's units are back already. The error is a *HoldError.
	ErrHoldExpired = errors.New("hold expired")
)

// HoldError is a hold operation the store refused, with the hold as it stands (for the client to see why).
type HoldError struct {
	Kind   error // ErrHoldNotFound, ErrHoldConflict or ErrHoldExpired
	Hold   Hold
	Detail string
}

func (e *HoldError) Error() string { return e.Kind.Error() + ": " + e.Detail }

// Is makes errors.Is(err, e.Kind) true.
func (e *HoldError) Is(target error) bool { return target == e.Kind }

// FieldError names one invalid field as the client wrote it ("key", "checks[2].cost", "limit").
type FieldError struct {
	Field  string
	Detail string
}

// ValidationError lists every invalid field of one request, so a client can fix them all at once.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid: ")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Field)
		b.WriteString(": ")
		b.WriteString(f.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true for every validation error.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Add records a problem with field. It returns e so calls can be chained.
func (e *ValidationError) Add(field, detail string) *ValidationError {
	e.Fields = append(e.Fields, FieldError{Field: field, Detail: detail})
	return e
}

// Err returns e when it holds a problem and nil otherwise, so validators can build one and return it in one step.
func (e *ValidationError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Invalid returns a validation error about one field.
func Invalid(field, detail string) error {
	return &ValidationError{Fields: []FieldError{{Field: field, Detail: detail}}}
}

// UnavailableError carries the store failure behind ErrUnavailable, for logs; clients only see the kind.
type UnavailableError struct {
	Policy string
	Err    error
}

func (e *UnavailableError) Error() string {
	if e.Policy == "" {
		return "store unavailable: " + e.Err.Error()
	}
	return "store unavailable for policy " + e.Policy + ": " + e.Err.Error()
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap exposes the store's own error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// The causes of a store failure: a closed set, for problem details and metric labels.
const (
	// CauseTimeout: the store did not answer before the call's deadline.
	CauseTimeout = "timeout"
	// CauseFull: a bounded store holds only live keys and cannot track a new one (ErrStoreFull).
	CauseFull = "full"
	// CauseFailed: any other failure (refused connection, failing statement, schema behind the build).
	CauseFailed = "failed"
)

// StoreCause classifies a store failure into CauseTimeout, CauseFull or CauseFailed. A timeout is
// context.DeadlineExceeded anywhere in the chain, or an error that says Timeout() (net.Error).
func StoreCause(err error) string {
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, ErrStoreFull):
		return CauseFull
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &te) && te.Timeout():
		return CauseTimeout
	}
	return CauseFailed
}

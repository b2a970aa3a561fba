// Package domain is sluice's core: policies, the exact sliding-log algorithm, decisions, and the ports the rest of
// the program plugs into.
//
// The ports are Limiter (what the HTTP adapter calls), BucketStore (atomic per-(policy, key) state, implemented by
// adapters/memory and adapters/postgres, both held to the conformance suite in domain/storetest), PolicyStore (API
// policies) and Clock. This package imports no database, HTTP or wiring code, so its rules can be read and tested on
// their own.
//
// A denial is a value (Decision.Allowed == false), never an error. Errors form a small closed set: ErrInvalid
// (with a *ValidationError naming the fields), ErrPolicyNotFound, ErrReadOnlyPolicy and ErrUnavailable.
package domain

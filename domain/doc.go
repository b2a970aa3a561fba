// Package domain is sluice's core: policies, the five algorithms (four that count units in a window, and
// concurrency, which counts units held), decisions and holds, and the ports the rest of the program plugs into.
//
// The ports are Limiter (what the protocol adapters call: adapters/httpapi and the Envoy RLS front end),
// BucketStore (atomic per-(policy, key) state, implemented by the store adapters and held to the conformance suite
// in domain/storetest), PolicyStore (API policies; PolicyLoader when they load after start-up) and Clock. One
// PolicyLifecycle (lifecycle.go) owns every policy: config, API and Envoy RLS, their resolution, floors,
// generations and loaded state; PolicyCache (policycache.go) is the one replica-side copy of a shared store's API
// policies. This package imports no database, HTTP or wiring code, so its rules can be read and tested on their
// own.
//
// The algorithm is a seam of its own: a policy's Rule (algorithm, limit, window, resolution, floor, generation)
// travels with every check to the store, and algorithmTable (algorithm.go) lists every algorithm once, with its
// code for the Redis script and its pure functions: the step (slidinglog.go, tokenbucket.go, fixedwindow.go,
// concurrency.go), the units its state still counts and how to hold units (for a change of algorithm), when its
// state is empty, and how a hold's settle adjusts it (hold.go). Bucket.Decide and Bucket.ApplyHold are the
// callers, in unix microseconds with exact integer arithmetic, and Algorithms is derived from the table. Stores apply those steps atomically: the memory store calls them; the Postgres and Redis stores
// mirror them in one SQL step and one Lua step per algorithm, and the conformance suite (domain/storetest)
// requires identical decisions. Adding an algorithm is a row and its step file here, its model in
// algorithm_test.go, its SQL step, its Lua step and its name in openapi.yaml and the chart's schema
// (TestAlgorithmTableAcrossRuntimes in the repository root checks those names).
//
// A denial is a value (Decision.Allowed == false), never an error. Errors form a small closed set: ErrInvalid
// (with a *ValidationError naming the fields), ErrPolicyNotFound, ErrReadOnlyPolicy, ErrUnavailable (with
// ErrStoreFull as one of its causes), and for holds ErrHoldNotFound, ErrHoldConflict and ErrHoldExpired (each a
// *HoldError).
package domain

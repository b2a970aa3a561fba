// Package domain is sluice's core: policies, the four algorithms, decisions, and the ports the rest of the program
// plugs into.
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
// travels with every check to the store, and Bucket.Decide (algorithm.go) is the one place that dispatches to an
// algorithm's pure step (slidinglog.go, tokenbucket.go, fixedwindow.go), in unix microseconds with exact integer
// arithmetic. Stores apply those steps atomically: the memory store calls them; the Postgres and Redis stores
// mirror them in one SQL function and one script per algorithm, and the conformance suite requires identical
// decisions. Adding an algorithm is its step file here (with its state's conversion in Bucket.convert and a case in
// Decide), its model in algorithm_test.go, its SQL step function and its case in sluice_step (a migration), and
// its branch of the Redis script.
//
// A denial is a value (Decision.Allowed == false), never an error. Errors form a small closed set: ErrInvalid
// (with a *ValidationError naming the fields), ErrPolicyNotFound, ErrReadOnlyPolicy and ErrUnavailable.
package domain

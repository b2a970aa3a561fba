-- name: ListPolicies :many
SELECT name, quota, window_ms, algorithm, resolution_ms, failure_mode, shadow, floor_us, generation
FROM sluice_policies ORDER BY name;

-- name: PutPolicy :one
-- Creates or replaces an API policy (sluice_put_policy: a new generation on creation, the floor raised when the
-- window or algorithm changes).
SELECT p.created::boolean AS created, p.floor_us::bigint AS floor_us, p.generation::bigint AS generation
FROM sluice_put_policy(@name::text, @quota::bigint, @window_ms::bigint, @algorithm::text, @resolution_ms::bigint,
                       @failure_mode::text, @shadow::boolean, sqlc.narg(now_us)::bigint) AS p;

-- name: DeletePolicy :execrows
DELETE FROM sluice_policies WHERE name = @name;

-- name: RegisterConfigPolicy :one
-- Records a config-file policy as the database last saw it; prev_replica is not empty when another replica's file
-- said something else (what it said is in the other prev_ columns).
SELECT coalesce(r.floor_us, 0)::bigint AS floor_us, coalesce(r.prev_quota, 0)::bigint AS prev_quota, coalesce(r.prev_window_ms, 0)::bigint AS prev_window_ms,
       coalesce(r.prev_algorithm, '')::text AS prev_algorithm, coalesce(r.prev_replica, '')::text AS prev_replica
FROM sluice_register_config_policy(@name::text, @quota::bigint, @window_ms::bigint, @algorithm::text,
                                   @resolution_ms::bigint, @replica::text, sqlc.narg(now_us)::bigint) AS r;

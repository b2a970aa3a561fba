-- name: ListPolicies :many
SELECT name, quota, window_ms, algorithm, failure_mode, shadow FROM sluice_policies ORDER BY name;

-- name: UpsertPolicy :one
-- created is true when the row is new (xmax is 0 for a freshly inserted tuple, not for an updated one).
INSERT INTO sluice_policies AS p (name, quota, window_ms, algorithm, failure_mode, shadow)
VALUES (@name, @quota, @window_ms, @algorithm, @failure_mode, @shadow)
ON CONFLICT (name) DO UPDATE
SET quota = excluded.quota, window_ms = excluded.window_ms, algorithm = excluded.algorithm,
    failure_mode = excluded.failure_mode, shadow = excluded.shadow, updated_at = now()
RETURNING (p.xmax = 0)::boolean AS created;

-- name: DeletePolicy :execrows
DELETE FROM sluice_policies WHERE name = @name;

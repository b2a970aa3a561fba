-- name: Decide :one
-- One check, one round trip. now_us NULL means the database clock.
SELECT d.allowed::boolean AS allowed, d.remaining::bigint AS remaining,
       d.reset_after_us::bigint AS reset_after_us, d.retry_after_us::bigint AS retry_after_us
FROM sluice_decide(@policy::text, @key::bytea, @lim::bigint, @window_us::bigint, @cost::bigint,
                   sqlc.narg(now_us)::bigint) AS d;

-- name: DecideBatch :one
-- Several checks, one round trip; the results are arrays in request order.
SELECT d.allowed::boolean[] AS allowed, d.remaining::bigint[] AS remaining,
       d.reset_after_us::bigint[] AS reset_after_us, d.retry_after_us::bigint[] AS retry_after_us
FROM sluice_decide_batch(@policies::text[], @keys::bytea[], @limits::bigint[], @windows_us::bigint[],
                         @costs::bigint[], @shadows::boolean[], @atomic::boolean, sqlc.narg(now_us)::bigint) AS d;

-- name: ResetKey :exec
DELETE FROM sluice_buckets WHERE policy = @policy AND key = @key;

-- name: DropPolicyPage :execrows
-- Deletes up to page_size keys of a policy; called until it deletes nothing, so each statement stays short.
DELETE FROM sluice_buckets
WHERE (policy, key) IN (
    SELECT b.policy, b.key FROM sluice_buckets b WHERE b.policy = @policy ORDER BY b.key LIMIT @page_size
);

-- name: DecideBatchBounded :one
-- A non-atomic batch that gives up (SQLSTATE 55P03, nothing recorded) when a row stays locked by another session
-- for longer than lock_wait_ms; see sluice_decide_batch_bounded.
SELECT d.allowed::boolean[] AS allowed, d.remaining::bigint[] AS remaining,
       d.reset_after_us::bigint[] AS reset_after_us, d.retry_after_us::bigint[] AS retry_after_us
FROM sluice_decide_batch_bounded(@policies::text[], @keys::bytea[], @limits::bigint[], @windows_us::bigint[],
                                 @costs::bigint[], @shadows::boolean[], sqlc.narg(now_us)::bigint,
                                 @lock_wait_ms::integer) AS d;

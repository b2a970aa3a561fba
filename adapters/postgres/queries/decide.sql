-- name: DecideBatch :one
-- Every decision, one round trip: a single check is a batch of one (see sluice_decide_batch). now_us NULL means
-- the database clock, lock_wait_ms NULL means waiting for row locks up to the statement timeout.
SELECT d.status::smallint[] AS status, d.allowed::boolean[] AS allowed, d.lim::bigint[] AS lim,
       d.remaining::bigint[] AS remaining, d.reset_after_us::bigint[] AS reset_after_us,
       d.retry_after_us::bigint[] AS retry_after_us
FROM sluice_decide_batch(@policies::text[], @keys::bytea[], @algs::text[], @limits::bigint[],
                         @windows_us::bigint[], @res_us::bigint[], @floors_us::bigint[], @gens::bigint[],
                         @costs::bigint[], @shadows::boolean[], @stored::boolean[], @atomic::boolean,
                         sqlc.narg(now_us)::bigint, sqlc.narg(lock_wait_ms)::integer) AS d;

-- name: ResetKey :exec
DELETE FROM sluice_buckets WHERE policy = @policy AND key = @key;

-- name: DropPolicyPage :execrows
-- Deletes up to page_size keys of a deleted policy; called until it deletes nothing, so each statement stays
-- short. Keys of the generation in force (the policy was re-created meanwhile, through any replica) are kept.
DELETE FROM sluice_buckets
WHERE (policy, key) IN (
    SELECT b.policy, b.key FROM sluice_buckets b
    WHERE b.policy = @policy
      AND NOT EXISTS (SELECT 1 FROM sluice_policies p WHERE p.name = b.policy AND p.generation = b.gen)
    ORDER BY b.key LIMIT @page_size
);

-- name: Hold :one
-- One hold operation, one round trip (see sluice_hold): op is the domain.HoldOp code; now_us NULL means the
-- database clock.
SELECT h.status::smallint AS status, h.allowed::boolean AS allowed, h.lim::bigint AS lim,
       h.remaining::bigint AS remaining, h.reset_after_us::bigint AS reset_after_us,
       h.retry_after_us::bigint AS retry_after_us, h.hold_status::smallint AS hold_status, h.hold_id::bytea AS hold_id,
       h.amount::bigint AS amount, h.at_us::bigint AS at_us, h.expires_us::bigint AS expires_us,
       h.settled::boolean AS settled, h.overdraft::bigint AS overdraft
FROM sluice_hold(@policy::text, @key::bytea, @op::smallint, @id::bytea, @amount::bigint, @ttl_us::bigint, @alg::text,
                 @lim::bigint, @window_us::bigint, @res_us::bigint, @floor_us::bigint, @gen::bigint, @stored::boolean,
                 sqlc.narg(now_us)::bigint) AS h;

-- name: ApplyBatch :one
-- Checks and hold operations in one round trip and one transaction (see sluice_apply_batch): ops are the
-- domain.HoldOp codes (0: a check). now_us NULL means the database clock, lock_wait_ms NULL means waiting for row
-- locks up to the statement timeout.
SELECT b.status::smallint[] AS status, b.allowed::boolean[] AS allowed, b.lim::bigint[] AS lim,
       b.remaining::bigint[] AS remaining, b.reset_after_us::bigint[] AS reset_after_us,
       b.retry_after_us::bigint[] AS retry_after_us, b.hold_status::smallint[] AS hold_status,
       b.hold_id::bytea[] AS hold_id, b.amount::bigint[] AS amount, b.at_us::bigint[] AS at_us,
       b.expires_us::bigint[] AS expires_us, b.settled::boolean[] AS settled, b.overdraft::bigint[] AS overdraft
FROM sluice_apply_batch(@policies::text[], @keys::bytea[], @ops::smallint[], @ids::bytea[], @amounts::bigint[],
                        @ttls_us::bigint[], @algs::text[], @limits::bigint[], @windows_us::bigint[], @res_us::bigint[],
                        @floors_us::bigint[], @gens::bigint[], @stored::boolean[], sqlc.narg(now_us)::bigint,
                        sqlc.narg(lock_wait_ms)::integer) AS b;

-- name: DecideGroups :one
-- Several callers' batches in one statement (see sluice_decide_groups): ends[g] is the 1-based index of group
-- g's last check, atomic[g] whether it is atomic.
SELECT d.status::smallint[] AS status, d.allowed::boolean[] AS allowed, d.lim::bigint[] AS lim,
       d.remaining::bigint[] AS remaining, d.reset_after_us::bigint[] AS reset_after_us,
       d.retry_after_us::bigint[] AS retry_after_us
FROM sluice_decide_groups(@policies::text[], @keys::bytea[], @algs::text[], @limits::bigint[],
                          @windows_us::bigint[], @res_us::bigint[], @floors_us::bigint[], @gens::bigint[],
                          @costs::bigint[], @shadows::boolean[], @stored::boolean[], @ends::integer[],
                          @atomic::boolean[], sqlc.narg(now_us)::bigint, sqlc.narg(lock_wait_ms)::integer) AS d;

-- name: JanitorPage :one
-- One bounded batch of the janitor: the next page_size keys after (after_policy, after_key) in primary-key order
-- are read and those with nothing left that can count are deleted: past expires_us (by the window the row was
-- written with) and past its newest instant plus the longest window now in force for its policy (an API policy's
-- or the config policy the database last saw), so a window grown since the row was written keeps its units (the
-- expiry rule); and no hold record that still matters (domain.Bucket.Empty's holdsKept rule, migration 00005):
-- past holds_until (the latest deadline) and past holds_at (the newest unsettled record) plus the longest of those
-- windows. A row whose state still counts but whose hold records no longer matter by the same rule has them
-- dropped (pruned, as the next hold operation would prune them). The DELETE and the UPDATE re-check the row's
-- current version (after waiting for a concurrent decision, if any), so a key admitted or held meanwhile survives
-- with its records.
WITH page AS (
    SELECT b.policy, b.key FROM sluice_buckets b
    WHERE (b.policy, b.key) > (@after_policy::text, @after_key::bytea)
    ORDER BY b.policy, b.key
    LIMIT @page_size::int
), gone AS (
    DELETE FROM sluice_buckets x USING page
    WHERE x.policy = page.policy AND x.key = page.key
      AND greatest(x.expires_us,
                   x.newest_us + coalesce((SELECT p.window_ms * 1000 FROM sluice_policies p WHERE p.name = x.policy), 0),
                   x.newest_us + coalesce((SELECT c.window_ms * 1000 FROM sluice_config_policies c WHERE c.name = x.policy), 0))
          <= coalesce(sqlc.narg(now_us)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
      AND greatest(x.holds_until, x.holds_at + x.window_us,
                   x.holds_at + coalesce((SELECT p.window_ms * 1000 FROM sluice_policies p WHERE p.name = x.policy), 0),
                   x.holds_at + coalesce((SELECT c.window_ms * 1000 FROM sluice_config_policies c WHERE c.name = x.policy), 0))
          <= coalesce(sqlc.narg(now_us)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
    RETURNING 1
), pruned AS (
    UPDATE sluice_buckets x SET holds = '{}', holds_until = 0, holds_at = 0
    FROM page
    WHERE x.policy = page.policy AND x.key = page.key AND cardinality(x.holds) > 0
      AND greatest(x.expires_us,
                   x.newest_us + coalesce((SELECT p.window_ms * 1000 FROM sluice_policies p WHERE p.name = x.policy), 0),
                   x.newest_us + coalesce((SELECT c.window_ms * 1000 FROM sluice_config_policies c WHERE c.name = x.policy), 0))
          > coalesce(sqlc.narg(now_us)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
      AND greatest(x.holds_until, x.holds_at + x.window_us,
                   x.holds_at + coalesce((SELECT p.window_ms * 1000 FROM sluice_policies p WHERE p.name = x.policy), 0),
                   x.holds_at + coalesce((SELECT c.window_ms * 1000 FROM sluice_config_policies c WHERE c.name = x.policy), 0))
          <= coalesce(sqlc.narg(now_us)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
    RETURNING 1
), last AS (
    SELECT page.policy, page.key FROM page ORDER BY page.policy DESC, page.key DESC LIMIT 1
)
SELECT (SELECT count(*) FROM page)::int AS scanned,
       (SELECT count(*) FROM gone)::int AS deleted,
       (SELECT count(*) FROM pruned)::int AS pruned,
       coalesce((SELECT last.policy FROM last), '')::text AS last_policy,
       coalesce((SELECT last.key FROM last), '\x'::bytea)::bytea AS last_key;

-- name: TryAdvisoryLock :one
SELECT pg_try_advisory_lock(@lock_id::bigint) AS locked;

-- name: AdvisoryUnlock :one
SELECT pg_advisory_unlock(@lock_id::bigint) AS unlocked;

-- name: SetLocalStatementTimeout :exec
SELECT set_config('statement_timeout', @timeout::text, true);

-- name: CountBuckets :one
SELECT count(*) FROM sluice_buckets;

-- +goose Up

-- The decision core's schema (shared/design.md): the state of four algorithms, the policies' floors and generations,
-- config policies as the database last saw them, and the composite types the decision functions pass around. The
-- functions themselves (one step per algorithm, the dispatch, the batch routine, the policy functions) are in
-- migrations/functions/, applied after the migrations (postgres.Migrate, adapters/postgres/functions.go); the functions
-- this migration first created, and those of 00001 and 00002 it dropped, are replaced there.

DROP FUNCTION IF EXISTS sluice_decide_batch_bounded(text[], bytea[], bigint[], bigint[], bigint[], boolean[], bigint, integer);
DROP FUNCTION IF EXISTS sluice_decide_batch(text[], bytea[], bigint[], bigint[], bigint[], boolean[], boolean, bigint);
DROP FUNCTION IF EXISTS sluice_decide(text, bytea, bigint, bigint, bigint, bigint);

-- A key's state under any algorithm (domain.Bucket): alg and gen say what wrote it ('' = empty); ats, cums and
-- base are the log of sliding_log and sliding_window; a, f, c are token_bucket's tat = a + f/c µs, or
-- fixed_window's newest admission instant (a) and its window's units (f). newest_us and window_us (the window it
-- was written under) let the janitor apply the window now in force; expires_us is when nothing in it counts
-- under the window it was written with.
ALTER TABLE sluice_buckets
    ADD COLUMN alg text NOT NULL DEFAULT 'sliding_log',
    ADD COLUMN gen bigint NOT NULL DEFAULT 0,
    ADD COLUMN a bigint NOT NULL DEFAULT 0,
    ADD COLUMN f bigint NOT NULL DEFAULT 0,
    ADD COLUMN c bigint NOT NULL DEFAULT 0,
    ADD COLUMN newest_us bigint NOT NULL DEFAULT 0,
    ADD COLUMN window_us bigint NOT NULL DEFAULT 0;
UPDATE sluice_buckets SET newest_us = coalesce(ats[cardinality(ats)], 0), window_us = expires_us - coalesce(ats[cardinality(ats)], expires_us);

-- sliding_log keeps one row per admitted instant with a running sum (cum), so an admission writes one small row
-- instead of rewriting the key's whole log, and a decision is two index probes: the newest entry at or before the
-- window's start (how many units had been admitted before it) and, for a denial, the oldest entry whose departure
-- leaves room (by cum). The key's sluice_buckets row keeps the newest entry's instant (a) and cum (f) and the cum
-- of the newest entry pruned (base). Entries that left the window are pruned a few at a time by admissions, and
-- with their key's row by the janitor (ON DELETE CASCADE).
CREATE TABLE sluice_log_entries (
    policy text COLLATE "C" NOT NULL,
    key    bytea NOT NULL,
    at     bigint NOT NULL,
    cum    bigint NOT NULL,
    PRIMARY KEY (policy, key, at),
    FOREIGN KEY (policy, key) REFERENCES sluice_buckets (policy, key) ON DELETE CASCADE
);
CREATE INDEX sluice_log_entries_cum ON sluice_log_entries (policy, key, cum);
INSERT INTO sluice_log_entries (policy, key, at, cum)
SELECT b.policy, b.key, u.at, u.cum FROM sluice_buckets b, unnest(b.ats, b.cums) AS u(at, cum)
WHERE b.alg = 'sliding_log';
UPDATE sluice_buckets SET a = coalesce(ats[cardinality(ats)], 0), f = coalesce(cums[cardinality(cums)], base),
    c = 1, ats = '{}', cums = '{}'
WHERE alg = 'sliding_log';

-- API policies: resolution (sliding_window), the floor of the expiry rule (raised when the window or algorithm
-- changes) and the generation (a new one at every creation: a re-created policy never counts the old one's keys).
CREATE SEQUENCE sluice_policy_generations;
ALTER TABLE sluice_policies
    ADD COLUMN resolution_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN floor_us bigint NOT NULL DEFAULT 0,
    ADD COLUMN generation bigint NOT NULL DEFAULT nextval('sluice_policy_generations'),
    ADD CONSTRAINT sluice_policies_quota_max CHECK (quota <= 9007199254740991),
    ADD CONSTRAINT sluice_policies_window_max CHECK (window_ms <= 2678400000);

-- Config-file policies as the database last saw them, one row per name, written by each replica at start-up
-- (sluice_register_config_policy): the floor of a config policy whose window or algorithm changed between
-- replicas' files (the registering replica carries it in its checks from then on), and what an operator reads to
-- see which file each replica runs (docs/operator.md, "Config policies").
CREATE TABLE sluice_config_policies (
    name          text COLLATE "C" PRIMARY KEY,
    quota         bigint NOT NULL,
    window_ms     bigint NOT NULL,
    algorithm     text NOT NULL,
    resolution_ms bigint NOT NULL,
    floor_us      bigint NOT NULL DEFAULT 0,
    replica       text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE sluice_state AS (alg text, gen bigint, ats bigint[], cums bigint[], base bigint, a bigint, f bigint, c bigint);
CREATE TYPE sluice_step AS (st sluice_state, allowed boolean, remaining bigint, reset_us bigint, retry_us bigint);

-- +goose Down
DROP FUNCTION IF EXISTS sluice_register_config_policy(text, bigint, bigint, text, bigint, text, bigint);
DROP FUNCTION IF EXISTS sluice_put_policy(text, bigint, bigint, text, bigint, text, boolean, bigint);
DROP FUNCTION IF EXISTS sluice_decide_batch(text[], bytea[], text[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], boolean[], boolean[], boolean, bigint, integer);
DROP FUNCTION IF EXISTS sluice_write_log(text, bytea, sluice_state, bigint);
DROP FUNCTION IF EXISTS sluice_stored_state(sluice_state);
DROP FUNCTION IF EXISTS sluice_expiry(sluice_state, bigint);
DROP FUNCTION IF EXISTS sluice_step(sluice_state, text, bytea, bigint, text, bigint, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_step_sliding_log(sluice_state, text, bytea, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_step_fixed_window(sluice_state, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_step_token_bucket(sluice_state, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_step_log(sluice_state, bigint, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_next_floor(bigint, text, bigint, bigint);
DROP TYPE sluice_step;
DROP TYPE sluice_state;
DROP TABLE sluice_config_policies;
DROP TABLE sluice_log_entries;
ALTER TABLE sluice_policies DROP CONSTRAINT sluice_policies_window_max, DROP CONSTRAINT sluice_policies_quota_max,
    DROP COLUMN generation, DROP COLUMN floor_us, DROP COLUMN resolution_ms;
DROP SEQUENCE sluice_policy_generations;
ALTER TABLE sluice_buckets DROP COLUMN window_us, DROP COLUMN newest_us, DROP COLUMN c, DROP COLUMN f,
    DROP COLUMN a, DROP COLUMN gen, DROP COLUMN alg;
-- The functions of 00001 and 00002 are not restored: migrate down to 2 only from a build of that version. The
-- functions above are those a database migrated by an older build holds (00004's down drops the current ones).

-- +goose Up

-- One row per (policy, key): the exact sliding log of domain/slidinglog.go, updated in place.
--
-- The log is two parallel arrays: ats (instants of admitted units, unix microseconds of the database clock,
-- strictly increasing) and cums (units admitted up to and including that instant, increasing). base is the cum
-- of the newest entry that has left the window, so the units in the window are cums[n] - base and the instant at
-- which enough units have left for a cost to fit is a binary search over cums.
--
-- Only the primary key is indexed and its columns never change, and fillfactor leaves room on each page, so the
-- updates of the decision path are HOT (heap-only: no index write). expires_us (newest instant + window) is what
-- the janitor reads; it is deliberately not indexed (the janitor walks the primary key in pages instead).
--
-- Keys are bytea: stored and compared exactly, NUL bytes included. policy uses the "C" collation so that the
-- order in which multi-checks lock keys is byte order, the same on every replica and every database locale.
CREATE TABLE sluice_buckets (
    policy     text COLLATE "C" NOT NULL,
    key        bytea NOT NULL,
    ats        bigint[] NOT NULL,
    cums       bigint[] NOT NULL,
    base       bigint NOT NULL,
    expires_us bigint NOT NULL,
    PRIMARY KEY (policy, key)
) WITH (fillfactor = 70);

-- Policies created over the API (config-file policies never reach the database). limit and window travel with
-- every decision, so a changed policy applies at once and keeps its keys' history.
CREATE TABLE sluice_policies (
    name         text COLLATE "C" PRIMARY KEY,
    quota        bigint NOT NULL CHECK (quota >= 1),
    window_ms    bigint NOT NULL CHECK (window_ms >= 1000),
    algorithm    text NOT NULL,
    failure_mode text NOT NULL,
    shadow       boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The functions this migration first created (sluice_decide and sluice_decide_batch over the arrays above) were
-- dropped by 00003; today's functions are in migrations/functions/.

-- +goose Down
DROP FUNCTION IF EXISTS sluice_decide_batch(text[], bytea[], bigint[], bigint[], bigint[], boolean[], boolean, bigint);
DROP FUNCTION IF EXISTS sluice_decide(text, bytea, bigint, bigint, bigint, bigint);
DROP TABLE sluice_policies;
DROP TABLE sluice_buckets;

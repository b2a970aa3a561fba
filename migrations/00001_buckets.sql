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

-- sluice_decide applies one check in one statement (one round trip). p_now_us is NULL in production: the database
-- clock (clock_timestamp(), read after the row is fetched) decides, so replicas whose clocks disagree enforce one
-- cap. Tests pass an instant instead.
--
-- Concurrency: the row is first read without a lock. A peek or a denial returns from that read and writes nothing
-- (no row lock either: a lock would write the tuple's xmax, assign a transaction id and emit WAL). An admission
-- writes with an optimistic UPDATE on the tuple read (ctid and xmin); if another transaction changed or deleted it
-- meanwhile, the UPDATE matches nothing and the check is decided again under SELECT ... FOR UPDATE, which always
-- makes progress. The row lock lasts until the end of this statement (its implicit transaction), never longer.
-- A denial computed from the lock-free read is exact: it counts only committed admissions, and concurrent
-- transactions can only add units (or reset the key, in which case the denial is ordered before the reset).
--
-- Cost: O(log n) to decide (binary searches), but an admission rewrites both arrays (n = distinct instants in the
-- window, at most limit): PostgreSQL has no in-place array append on disk, so the new row version copies them,
-- and arrays above ~2 kB are compressed or moved to TOAST. For the usual limits (tens to a few hundred distinct
-- instants in a window) this is a few kB per admission; a key with a limit of 100,000 admitted at 100,000
-- distinct microseconds would rewrite 1.6 MB per admission. Entries at one instant merge, and entries that left
-- the window are trimmed on every write, so n stays the live count.
-- +goose StatementBegin
CREATE FUNCTION sluice_decide(
    p_policy text, p_key bytea, p_limit bigint, p_window_us bigint, p_cost bigint, p_now_us bigint,
    OUT allowed boolean, OUT remaining bigint, OUT reset_after_us bigint, OUT retry_after_us bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_ats    bigint[];
    v_cums   bigint[];
    v_base   bigint;
    v_xmin   xid;
    v_ctid   tid;
    v_now    bigint;
    v_n      int;
    v_lo     int;
    v_hi     int;
    v_mid    int;
    v_used   bigint;
    v_need   bigint := greatest(p_cost, 1); -- a peek (cost 0) reports what a cost-1 check would get
    v_target bigint;
    v_locked boolean := false;
    v_tries  int := 0;
BEGIN
    LOOP
        v_tries := v_tries + 1;
        IF v_tries > 8 THEN
            RAISE EXCEPTION 'sluice_decide: row for policy % kept changing', p_policy USING ERRCODE = '40001';
        END IF;
        IF v_locked THEN
            SELECT b.ats, b.cums, b.base INTO v_ats, v_cums, v_base
            FROM sluice_buckets b WHERE b.policy = p_policy AND b.key = p_key FOR UPDATE;
        ELSE
            SELECT b.ats, b.cums, b.base, b.xmin, b.ctid INTO v_ats, v_cums, v_base, v_xmin, v_ctid
            FROM sluice_buckets b WHERE b.policy = p_policy AND b.key = p_key;
        END IF;
        v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);

        IF NOT FOUND THEN
            -- An empty log: every check fits (cost <= limit).
            allowed := true;
            remaining := p_limit - v_need;
            reset_after_us := p_window_us;
            retry_after_us := 0;
            IF p_cost = 0 THEN
                RETURN;
            END IF;
            INSERT INTO sluice_buckets AS b (policy, key, ats, cums, base, expires_us)
            VALUES (p_policy, p_key, ARRAY[v_now], ARRAY[p_cost], 0, v_now + p_window_us)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                RETURN;
            END IF;
            v_locked := true; -- another transaction created the row first: decide again under its lock
            CONTINUE;
        END IF;

        v_n := cardinality(v_ats);
        IF v_n > 0 AND v_ats[v_n] > v_now THEN
            v_now := v_ats[v_n]; -- time never runs backwards for a log (clock step, or a writer just ahead of us)
        END IF;
        -- First live entry: the oldest with at > now - window.
        v_lo := 1;
        v_hi := v_n + 1;
        WHILE v_lo < v_hi LOOP
            v_mid := (v_lo + v_hi) / 2;
            IF v_ats[v_mid] > v_now - p_window_us THEN
                v_hi := v_mid;
            ELSE
                v_lo := v_mid + 1;
            END IF;
        END LOOP;
        IF v_lo > v_n THEN
            v_used := 0;
        ELSE
            IF v_lo > 1 THEN
                v_base := v_cums[v_lo - 1];
            END IF;
            v_used := v_cums[v_n] - v_base;
        END IF;

        IF v_used + v_need > p_limit THEN
            -- Denied: nothing is written.
            allowed := false;
            remaining := greatest(p_limit - v_used, 0); -- used exceeds a lowered limit: nothing is left
            reset_after_us := v_ats[v_n] + p_window_us - v_now;
            -- The oldest live entry whose departure leaves room: units after it, cums[n] - cums[j], <= limit - cost.
            v_target := v_cums[v_n] - (p_limit - v_need);
            v_hi := v_n;
            WHILE v_lo < v_hi LOOP
                v_mid := (v_lo + v_hi) / 2;
                IF v_cums[v_mid] >= v_target THEN
                    v_hi := v_mid;
                ELSE
                    v_lo := v_mid + 1;
                END IF;
            END LOOP;
            retry_after_us := v_ats[v_lo] + p_window_us - v_now;
            RETURN;
        END IF;

        allowed := true;
        remaining := p_limit - v_used - v_need;
        reset_after_us := p_window_us;
        retry_after_us := 0;
        IF p_cost = 0 THEN
            RETURN; -- a peek writes nothing
        END IF;
        -- Record: drop the entries that left the window, then merge into the newest entry or append one.
        IF v_lo > v_n THEN
            v_ats := ARRAY[v_now];
            v_cums := ARRAY[p_cost];
            v_base := 0;
        ELSE
            IF v_lo > 1 THEN
                v_ats := v_ats[v_lo:v_n];
                v_cums := v_cums[v_lo:v_n];
                v_n := v_n - v_lo + 1;
            END IF;
            IF v_ats[v_n] >= v_now THEN
                v_cums[v_n] := v_cums[v_n] + p_cost;
            ELSE
                v_ats := v_ats || v_now;
                v_cums := v_cums || (v_cums[v_n] + p_cost);
            END IF;
        END IF;
        IF v_locked THEN
            UPDATE sluice_buckets SET ats = v_ats, cums = v_cums, base = v_base, expires_us = v_now + p_window_us
            WHERE policy = p_policy AND key = p_key;
            RETURN;
        END IF;
        UPDATE sluice_buckets SET ats = v_ats, cums = v_cums, base = v_base, expires_us = v_now + p_window_us
        WHERE ctid = v_ctid AND xmin = v_xmin;
        IF FOUND THEN
            RETURN;
        END IF;
        v_locked := true; -- the row changed since we read it: decide again under its lock
    END LOOP;
END
$$;
-- +goose StatementEnd

-- sluice_decide_batch applies several checks in one statement (one round trip). Distinct (policy, key) pairs are
-- locked in byte order of (policy, key), the one order every caller uses, so concurrent batches cannot deadlock;
-- a pair with no row yet and a check that may record gets a placeholder row inserted in that same order (removed
-- again if nothing is recorded). Checks of one pair are applied in request order, each seeing the units recorded
-- by the ones before it, and the pair's row is written once: this is also how many concurrent checks of one hot
-- key can be coalesced into one call. With p_atomic, a denied non-shadow check rolls back everything the batch
-- recorded (a subtransaction); the decisions returned are as evaluated.
-- +goose StatementBegin
CREATE FUNCTION sluice_decide_batch(
    p_policies text[], p_keys bytea[], p_limits bigint[], p_windows_us bigint[], p_costs bigint[],
    p_shadows boolean[], p_atomic boolean, p_now_us bigint,
    OUT allowed boolean[], OUT remaining bigint[], OUT reset_after_us bigint[], OUT retry_after_us bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    r        record;
    i        int;
    v_ats    bigint[];
    v_cums   bigint[];
    v_base   bigint;
    v_now0   bigint;
    v_now    bigint;
    v_n      int;
    v_lo     int;
    v_hi     int;
    v_mid    int;
    v_used   bigint;
    v_need   bigint;
    v_limit  bigint;
    v_window bigint;
    v_target bigint;
    v_found  boolean;
    v_placeholder boolean;
    v_changed boolean;
    v_commit boolean := true;
BEGIN
    v_n := cardinality(p_policies);
    IF cardinality(p_keys) <> v_n OR cardinality(p_limits) <> v_n OR cardinality(p_windows_us) <> v_n
        OR cardinality(p_costs) <> v_n OR cardinality(p_shadows) <> v_n THEN
        RAISE EXCEPTION 'sluice_decide_batch: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    allowed := array_fill(false, ARRAY[v_n]);
    remaining := array_fill(0::bigint, ARRAY[v_n]);
    reset_after_us := array_fill(0::bigint, ARRAY[v_n]);
    retry_after_us := array_fill(0::bigint, ARRAY[v_n]);
    v_now0 := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    BEGIN
        FOR r IN
            SELECT u.p, u.k, array_agg(u.i ORDER BY u.i) AS idx, bool_or(u.c > 0) AS writes
            FROM unnest(p_policies, p_keys, p_costs) WITH ORDINALITY AS u(p, k, c, i)
            GROUP BY u.p, u.k
            ORDER BY u.p COLLATE "C", u.k
        LOOP
            v_placeholder := false;
            LOOP
                SELECT b.ats, b.cums, b.base INTO v_ats, v_cums, v_base
                FROM sluice_buckets b WHERE b.policy = r.p AND b.key = r.k FOR UPDATE;
                v_found := FOUND;
                EXIT WHEN v_found OR NOT r.writes;
                INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us)
                VALUES (r.p, r.k, '{}', '{}', 0, 0)
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_placeholder := true;
                    EXIT;
                END IF;
            END LOOP;
            IF NOT v_found THEN
                v_ats := '{}';
                v_cums := '{}';
                v_base := 0;
            END IF;
            v_n := cardinality(v_ats);
            v_now := v_now0;
            IF v_n > 0 AND v_ats[v_n] > v_now THEN
                v_now := v_ats[v_n];
            END IF;
            -- Checks of one (policy, key) come from one policy, so they share its window: expire once.
            v_window := p_windows_us[r.idx[1]];
            v_lo := 1;
            v_hi := v_n + 1;
            WHILE v_lo < v_hi LOOP
                v_mid := (v_lo + v_hi) / 2;
                IF v_ats[v_mid] > v_now - v_window THEN
                    v_hi := v_mid;
                ELSE
                    v_lo := v_mid + 1;
                END IF;
            END LOOP;
            IF v_lo > v_n THEN
                v_ats := '{}';
                v_cums := '{}';
                v_base := 0;
            ELSIF v_lo > 1 THEN
                v_base := v_cums[v_lo - 1];
                v_ats := v_ats[v_lo:v_n];
                v_cums := v_cums[v_lo:v_n];
            END IF;
            v_changed := false;
            FOREACH i IN ARRAY r.idx LOOP
                v_limit := p_limits[i];
                v_window := p_windows_us[i];
                v_need := greatest(p_costs[i], 1);
                v_n := cardinality(v_ats);
                v_used := CASE WHEN v_n = 0 THEN 0 ELSE v_cums[v_n] - v_base END;
                IF v_used + v_need <= v_limit THEN
                    allowed[i] := true;
                    remaining[i] := v_limit - v_used - v_need;
                    reset_after_us[i] := v_window;
                    retry_after_us[i] := 0;
                    IF p_costs[i] > 0 THEN
                        IF v_n > 0 AND v_ats[v_n] >= v_now THEN
                            v_cums[v_n] := v_cums[v_n] + p_costs[i];
                        ELSE
                            v_ats := v_ats || v_now;
                            v_cums := v_cums || (CASE WHEN v_n = 0 THEN v_base ELSE v_cums[v_n] END + p_costs[i]);
                        END IF;
                        v_changed := true;
                    END IF;
                ELSE
                    allowed[i] := false;
                    remaining[i] := greatest(v_limit - v_used, 0);
                    reset_after_us[i] := v_ats[v_n] + v_window - v_now;
                    v_target := v_cums[v_n] - (v_limit - v_need);
                    v_lo := 1;
                    v_hi := v_n;
                    WHILE v_lo < v_hi LOOP
                        v_mid := (v_lo + v_hi) / 2;
                        IF v_cums[v_mid] >= v_target THEN
                            v_hi := v_mid;
                        ELSE
                            v_lo := v_mid + 1;
                        END IF;
                    END LOOP;
                    retry_after_us[i] := v_ats[v_lo] + v_window - v_now;
                    IF p_atomic AND NOT p_shadows[i] THEN
                        v_commit := false;
                    END IF;
                END IF;
            END LOOP;
            IF v_changed THEN
                UPDATE sluice_buckets SET ats = v_ats, cums = v_cums, base = v_base, expires_us = v_now + v_window
                WHERE policy = r.p AND key = r.k;
            ELSIF v_placeholder THEN
                DELETE FROM sluice_buckets WHERE policy = r.p AND key = r.k;
            END IF;
        END LOOP;
        IF NOT v_commit THEN
            RAISE EXCEPTION USING ERRCODE = 'SL001'; -- undo this batch's writes; caught just below
        END IF;
    EXCEPTION WHEN SQLSTATE 'SL001' THEN
        NULL; -- the decisions are kept: they are plain variables, not rolled back
    END;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION IF EXISTS sluice_decide_batch(text[], bytea[], bigint[], bigint[], bigint[], boolean[], boolean, bigint);
DROP FUNCTION IF EXISTS sluice_decide(text, bytea, bigint, bigint, bigint, bigint);
DROP TABLE sluice_policies;
DROP TABLE sluice_buckets;

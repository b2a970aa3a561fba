-- +goose Up

-- The decision core (shared/design.md): four algorithms, each one step function; one batch routine that every
-- decision goes through; the policy in force in the database at each decision; the expiry rule's floors and the
-- policies' generations. The functions mirror domain/algorithm.go, domain/slidinglog.go, domain/tokenbucket.go
-- and domain/fixedwindow.go exactly (same integer rounding), and the conformance suite holds both to the same
-- decisions. Instants are unix microseconds of the database clock.

DROP FUNCTION sluice_decide_batch_bounded(text[], bytea[], bigint[], bigint[], bigint[], boolean[], bigint, integer);
DROP FUNCTION sluice_decide_batch(text[], bytea[], bigint[], bigint[], bigint[], boolean[], boolean, bigint);
DROP FUNCTION sluice_decide(text, bytea, bigint, bigint, bigint, bigint);

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
-- (sluice_register_config_policy): the floor of a config policy whose window changed between replicas' files,
-- and what an operator reads to see which file each replica runs (docs/operator.md, "Config policies").
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

-- sluice_next_floor is domain.NextFloor: the newest instant whose units had stopped counting under the old
-- window and algorithm at p_now.
-- +goose StatementBegin
CREATE FUNCTION sluice_next_floor(p_old_floor bigint, p_old_alg text, p_old_window_us bigint, p_now bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_old_floor, CASE WHEN p_old_alg = 'fixed_window'
                                      THEN p_now - p_now % p_old_window_us - 1
                                      ELSE p_now - p_old_window_us END)
$$;
-- +goose StatementEnd

-- sluice_step_log is the step of sliding_log and sliding_window (domain/slidinglog.go): units count while their
-- instant is after greatest(now - window, floor); an admitted cost is recorded at p_rec. A peek (cost 0) reports
-- what a cost-1 check would get. O(log n) to decide; an admission rewrites the arrays (n entries: at most the
-- limit under sliding_log, at most window/resolution + 1 under sliding_window).
-- +goose StatementBegin
CREATE FUNCTION sluice_step_log(s sluice_state, p_now bigint, p_rec bigint, p_cost bigint, p_limit bigint,
                                p_window bigint, p_floor bigint)
RETURNS sluice_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r      sluice_step;
    n      int := coalesce(cardinality(s.ats), 0);
    lo     int;
    hi     int;
    mid    int;
    used   bigint;
    need   bigint := greatest(p_cost, 1);
    cutoff bigint := greatest(p_now - p_window, p_floor);
    target bigint;
    newest bigint;
BEGIN
    lo := 1;
    hi := n + 1;
    WHILE lo < hi LOOP
        mid := (lo + hi) / 2;
        IF s.ats[mid] > cutoff THEN hi := mid; ELSE lo := mid + 1; END IF;
    END LOOP;
    IF lo > n THEN
        s.ats := '{}'; s.cums := '{}'; s.base := 0; n := 0;
    ELSIF lo > 1 THEN
        s.base := s.cums[lo - 1];
        s.ats := s.ats[lo:n];
        s.cums := s.cums[lo:n];
        n := n - lo + 1;
    END IF;
    IF n > 0 AND s.base > 1152921504606846976 THEN -- 2^60: rebase, as Log.expire does, so cum never overflows
        s.cums := ARRAY(SELECT x - s.base FROM unnest(s.cums) WITH ORDINALITY AS u(x, i) ORDER BY i);
        s.base := 0;
    END IF;
    used := CASE WHEN n = 0 THEN 0 ELSE s.cums[n] - s.base END;
    r.allowed := used <= p_limit - need;
    IF r.allowed THEN
        newest := p_rec;
        IF n > 0 AND s.ats[n] > newest THEN newest := s.ats[n]; END IF;
        r.remaining := p_limit - used - need;
        r.reset_us := newest + p_window - p_now;
        r.retry_us := 0;
        IF p_cost > 0 THEN
            IF n > 0 AND s.ats[n] >= p_rec THEN
                s.cums[n] := s.cums[n] + p_cost;
            ELSE
                s.ats := s.ats || p_rec;
                s.cums := s.cums || (CASE WHEN n = 0 THEN s.base ELSE s.cums[n] END + p_cost);
            END IF;
        END IF;
    ELSE
        r.remaining := greatest(p_limit - used, 0);
        r.reset_us := s.ats[n] + p_window - p_now;
        target := s.cums[n] - (p_limit - need);
        lo := 1;
        hi := n;
        WHILE lo < hi LOOP
            mid := (lo + hi) / 2;
            IF s.cums[mid] >= target THEN hi := mid; ELSE lo := mid + 1; END IF;
        END LOOP;
        r.retry_us := s.ats[lo] + p_window - p_now;
    END IF;
    r.st := s;
    RETURN r;
END
$$;
-- +goose StatementEnd

-- sluice_step_token_bucket is token_bucket's step (domain/tokenbucket.go, GCRA): the emission interval is
-- window/limit µs, kept exact as tat = a + f/c; products such as cost × window are taken in numeric, so nothing
-- overflows at 2^53-1 over 31 days. Every rounding errs toward denial.
-- +goose StatementBegin
CREATE FUNCTION sluice_step_token_bucket(s sluice_state, p_now bigint, p_cost bigint, p_limit bigint, p_window bigint)
RETURNS sluice_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r    sluice_step;
    need bigint := greatest(p_cost, 1);
    a    bigint := coalesce(s.a, 0);
    f    bigint := coalesce(s.f, 0);
    x    numeric;
    q    bigint;
    na   bigint;
    nf   bigint;
BEGIN
    IF s.alg = 'token_bucket' AND s.c <> p_limit AND f > 0 THEN
        f := div(f::numeric * p_limit + s.c - 1, s.c); -- the fraction over the new limit, rounded up
        a := a + f / p_limit;
        f := f % p_limit;
    END IF;
    IF a < p_now OR (a = p_now AND f = 0) THEN
        a := p_now;
        f := 0;
    END IF;
    x := need::numeric * p_window;
    q := div(x, p_limit);
    na := a + q;
    nf := f + (x - q::numeric * p_limit)::bigint;
    IF nf >= p_limit THEN
        na := na + 1;
        nf := nf - p_limit;
    END IF;
    r.allowed := na - p_now < p_window OR (na - p_now = p_window AND nf = 0);
    IF r.allowed THEN
        r.remaining := least(greatest(div((p_now + p_window - na)::numeric * p_limit - nf, p_window), 0), p_limit);
        r.reset_us := na - p_now + (nf > 0)::int;
        r.retry_us := 0;
        IF p_cost > 0 THEN
            s.a := na; s.f := nf; s.c := p_limit;
        END IF;
    ELSE
        r.remaining := least(greatest(div((p_now + p_window - a)::numeric * p_limit - f, p_window), 0), p_limit);
        r.reset_us := a - p_now + (f > 0)::int;
        r.retry_us := na - p_window - p_now + (nf > 0)::int;
    END IF;
    r.st := s;
    RETURN r;
END
$$;
-- +goose StatementEnd

-- sluice_step_fixed_window is fixed_window's step (domain/fixedwindow.go): epoch-aligned windows, as
-- envoyproxy/ratelimit counts.
-- +goose StatementBegin
CREATE FUNCTION sluice_step_fixed_window(s sluice_state, p_now bigint, p_cost bigint, p_limit bigint, p_window bigint,
                                         p_floor bigint)
RETURNS sluice_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r     sluice_step;
    need  bigint := greatest(p_cost, 1);
    start bigint := p_now - p_now % p_window;
    used  bigint := 0;
BEGIN
    IF s.alg = 'fixed_window' AND s.a >= start AND s.a > p_floor THEN
        used := s.f;
    END IF;
    r.allowed := used <= p_limit - need;
    r.reset_us := start + p_window - p_now;
    IF r.allowed THEN
        r.remaining := p_limit - used - need;
        r.retry_us := 0;
        IF p_cost > 0 THEN
            s.a := greatest(coalesce(s.a, 0), p_now);
            s.f := used + p_cost;
        END IF;
    ELSE
        r.remaining := greatest(p_limit - used, 0);
        r.retry_us := r.reset_us;
    END IF;
    r.st := s;
    RETURN r;
END
$$;
-- +goose StatementEnd

-- sluice_step is domain.Bucket.Decide: state of another generation is dropped, state of another algorithm is
-- converted conservatively (its units still counting, taken as recorded at its newest instant), then the
-- algorithm's step runs. The only place that knows which algorithms exist.
-- +goose StatementBegin
CREATE FUNCTION sluice_step(s sluice_state, p_now bigint, p_alg text, p_limit bigint, p_window bigint, p_res bigint,
                            p_floor bigint, p_gen bigint, p_cost bigint)
RETURNS sluice_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r     sluice_step;
    units bigint := 0;
    at    bigint := 0;
    n     int;
    lo    int;
    d     bigint;
    q     bigint;
BEGIN
    IF s.alg <> '' AND (s.gen <> p_gen OR s.alg <> p_alg) THEN
        IF s.gen = p_gen THEN
            IF s.alg IN ('sliding_log', 'sliding_window') THEN
                n := coalesce(cardinality(s.ats), 0);
                lo := 1;
                WHILE lo <= n AND s.ats[lo] <= greatest(p_now - p_window, p_floor) LOOP lo := lo + 1; END LOOP;
                IF lo <= n THEN
                    units := s.cums[n] - CASE WHEN lo > 1 THEN s.cums[lo - 1] ELSE s.base END;
                    at := s.ats[n];
                END IF;
            ELSIF s.alg = 'token_bucket' THEN
                IF s.a > p_now OR (s.a = p_now AND s.f > 0) THEN
                    d := s.a - p_now + (s.f > 0)::int;
                    units := least(div(d::numeric * p_limit + p_window - 1, p_window), p_limit);
                    at := p_now;
                END IF;
            ELSIF s.alg = 'fixed_window' THEN
                IF s.a > greatest(p_now - p_window, p_floor) THEN
                    units := s.f;
                    at := s.a;
                END IF;
            END IF;
        END IF;
        s := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        IF units > 0 THEN
            units := least(units, 9007199254740991);
            s.alg := p_alg;
            s.gen := p_gen;
            IF p_alg = 'sliding_log' THEN
                s.ats := ARRAY[at]; s.cums := ARRAY[units];
            ELSIF p_alg = 'sliding_window' THEN
                s.ats := ARRAY[at + (p_res - at % p_res) % p_res]; s.cums := ARRAY[units];
            ELSIF p_alg = 'token_bucket' THEN
                q := div(units::numeric * p_window, p_limit);
                s.a := p_now + q;
                s.f := (units::numeric * p_window - q::numeric * p_limit)::bigint;
                s.c := p_limit;
            ELSE
                s.a := at; s.f := units;
            END IF;
        END IF;
    END IF;
    CASE p_alg
        WHEN 'sliding_log' THEN
            r := sluice_step_log(s, p_now, p_now, p_cost, p_limit, p_window, p_floor);
        WHEN 'sliding_window' THEN
            r := sluice_step_log(s, p_now, p_now + (p_res - p_now % p_res) % p_res, p_cost, p_limit, p_window, p_floor);
        WHEN 'token_bucket' THEN
            r := sluice_step_token_bucket(s, p_now, p_cost, p_limit, p_window);
        WHEN 'fixed_window' THEN
            r := sluice_step_fixed_window(s, p_now, p_cost, p_limit, p_window, p_floor);
    END CASE;
    IF s.alg = '' AND p_cost > 0 AND r.allowed THEN
        r.st.alg := p_alg;
        r.st.gen := p_gen;
    END IF;
    RETURN r;
END
$$;
-- +goose StatementEnd

-- sluice_decide_batch is the one routine every decision goes through (a single check is a batch of one): one
-- statement, one round trip. For each check it takes the rule the caller sent, or, for a stored (API) policy,
-- the policy as the database holds it at this statement (status 1 when it no longer exists, 2 when the cost
-- exceeds its limit); an out-of-bounds rule is refused alone (status 3), so one bad check never fails another.
--
-- Locking: every (policy, key) is first decided from a lock-free read. A pair whose checks are all peeks or
-- denials is done then: no row lock, no transaction id, nothing written (a denial from committed state is exact:
-- concurrent transactions can only add units, or reset the key, ordering the denial before the reset). With
-- p_atomic, a non-shadow denial there ends the batch at once. The pairs that admit are then locked in byte order
-- of (policy, key), the one order every caller uses, so concurrent batches cannot deadlock; decided again on the
-- locked row, with the clock read again; and written once each. A pair with no row gets a placeholder inserted in
-- that order (deleted again if nothing is recorded). With p_atomic, a non-shadow denial among them rolls back the
-- batch's writes (a subtransaction); the decisions returned are as evaluated. With p_lock_wait_ms, a row locked by
-- another session for longer fails the whole statement with SQLSTATE 55P03, recording nothing (the coalescer's
-- lanes then re-send per key).
-- +goose StatementBegin
CREATE FUNCTION sluice_decide_batch(
    p_policies text[], p_keys bytea[], p_algs text[], p_limits bigint[], p_windows_us bigint[], p_res_us bigint[],
    p_floors_us bigint[], p_gens bigint[], p_costs bigint[], p_shadows boolean[], p_stored boolean[],
    p_atomic boolean, p_now_us bigint, p_lock_wait_ms integer,
    OUT status smallint[], OUT allowed boolean[], OUT lim bigint[], OUT remaining bigint[],
    OUT reset_after_us bigint[], OUT retry_after_us bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    n        int := cardinality(p_policies);
    v_alg    text[] := p_algs;
    v_lim    bigint[] := p_limits;
    v_win    bigint[] := p_windows_us;
    v_res    bigint[] := p_res_us;
    v_floor  bigint[] := p_floors_us;
    v_gen    bigint[] := p_gens;
    i        int;
    g        record;
    pr       record;
    st       sluice_state;
    r        sluice_step;
    v_now    bigint;
    v_found  boolean;
    v_placeholder boolean;
    v_writes boolean;
    v_newest bigint;
    v_expires bigint;
    v_window bigint;
    v_commit boolean := true;
    v_lock   boolean[];
BEGIN
    IF cardinality(p_keys) <> n OR cardinality(p_algs) <> n OR cardinality(p_limits) <> n
        OR cardinality(p_windows_us) <> n OR cardinality(p_res_us) <> n OR cardinality(p_floors_us) <> n
        OR cardinality(p_gens) <> n OR cardinality(p_costs) <> n OR cardinality(p_shadows) <> n
        OR cardinality(p_stored) <> n THEN
        RAISE EXCEPTION 'sluice_decide_batch: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    IF p_lock_wait_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_lock_wait_ms, 1)::text, true);
    END IF;
    status := array_fill(0::smallint, ARRAY[n]);
    allowed := array_fill(false, ARRAY[n]);
    lim := array_fill(0::bigint, ARRAY[n]);
    remaining := array_fill(0::bigint, ARRAY[n]);
    reset_after_us := array_fill(0::bigint, ARRAY[n]);
    retry_after_us := array_fill(0::bigint, ARRAY[n]);
    v_lock := array_fill(false, ARRAY[n]);

    -- The policies in force: stored ones from sluice_policies, config ones' floors from sluice_config_policies.
    FOR pr IN
        SELECT u.i, p.name IS NOT NULL AS found, p.algorithm, p.quota, p.window_ms, p.resolution_ms, p.floor_us,
               p.generation, c.floor_us AS cfg_floor
        FROM unnest(p_policies, p_stored) WITH ORDINALITY AS u(name, stored, i)
        LEFT JOIN sluice_policies p ON u.stored AND p.name = u.name
        LEFT JOIN sluice_config_policies c ON NOT u.stored AND c.name = u.name
    LOOP
        i := pr.i;
        IF p_stored[i] THEN
            IF NOT pr.found THEN
                status[i] := 1;
                CONTINUE;
            END IF;
            v_alg[i] := pr.algorithm;
            v_lim[i] := pr.quota;
            v_win[i] := pr.window_ms * 1000;
            v_res[i] := pr.resolution_ms * 1000;
            v_floor[i] := pr.floor_us;
            v_gen[i] := pr.generation;
        ELSIF pr.cfg_floor IS NOT NULL THEN
            v_floor[i] := greatest(v_floor[i], pr.cfg_floor);
        END IF;
        IF v_lim[i] IS NULL OR v_lim[i] < 1 OR v_lim[i] > 9007199254740991 OR v_win[i] IS NULL
            OR v_win[i] < 1000000 OR v_win[i] > 2678400000000 OR v_win[i] % 1000 <> 0 OR p_costs[i] IS NULL
            OR p_costs[i] < 0 OR v_floor[i] IS NULL OR v_gen[i] IS NULL
            OR v_alg[i] NOT IN ('sliding_log', 'sliding_window', 'token_bucket', 'fixed_window')
            OR (v_alg[i] = 'sliding_window' AND (v_res[i] IS NULL OR v_res[i] < 1000 OR v_res[i] > v_win[i])) THEN
            status[i] := 3;
        ELSIF p_costs[i] > v_lim[i] THEN
            status[i] := 2;
        END IF;
        lim[i] := coalesce(v_lim[i], 0);
        IF status[i] <> 0 AND p_atomic THEN
            v_commit := false;
        END IF;
    END LOOP;
    IF NOT v_commit THEN
        RETURN; -- an atomic batch with a refused check records nothing
    END IF;

    -- Phase 1: every pair from a lock-free read.
    FOR g IN
        SELECT u.p, u.k, array_agg(u.i ORDER BY u.i) AS idx
        FROM unnest(p_policies, p_keys) WITH ORDINALITY AS u(p, k, i)
        GROUP BY u.p, u.k
        ORDER BY u.p COLLATE "C", u.k
    LOOP
        SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c INTO st
        FROM sluice_buckets b WHERE b.policy = g.p AND b.key = g.k;
        IF NOT FOUND THEN
            st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        END IF;
        v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
        v_writes := false;
        FOREACH i IN ARRAY g.idx LOOP
            CONTINUE WHEN status[i] <> 0;
            r := sluice_step(st, v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i]);
            st := r.st;
            allowed[i] := r.allowed;
            remaining[i] := r.remaining;
            reset_after_us[i] := r.reset_us;
            retry_after_us[i] := r.retry_us;
            IF r.allowed AND p_costs[i] > 0 THEN
                v_writes := true;
            ELSIF NOT r.allowed AND p_atomic AND NOT p_shadows[i] THEN
                v_commit := false;
            END IF;
        END LOOP;
        IF v_writes THEN
            FOREACH i IN ARRAY g.idx LOOP
                v_lock[i] := true;
            END LOOP;
        END IF;
    END LOOP;
    IF NOT v_commit OR NOT (true = ANY(v_lock)) THEN
        RETURN; -- peeks and denials only (or an atomic batch already denied): no lock taken, nothing written
    END IF;

    -- Phase 2: the pairs that admit, locked in byte order, decided again on the locked row and written once.
    BEGIN
        FOR g IN
            SELECT u.p, u.k, array_agg(u.i ORDER BY u.i) AS idx
            FROM unnest(p_policies, p_keys, v_lock) WITH ORDINALITY AS u(p, k, l, i)
            WHERE u.l
            GROUP BY u.p, u.k
            ORDER BY u.p COLLATE "C", u.k
        LOOP
            v_placeholder := false;
            LOOP
                SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c INTO st
                FROM sluice_buckets b WHERE b.policy = g.p AND b.key = g.k FOR UPDATE;
                v_found := FOUND;
                EXIT WHEN v_found;
                INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
                VALUES (g.p, g.k, '{}', '{}', 0, 0, '')
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_placeholder := true;
                    st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
                    EXIT;
                END IF;
            END LOOP;
            v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
            v_writes := false;
            FOREACH i IN ARRAY g.idx LOOP
                CONTINUE WHEN status[i] <> 0;
                r := sluice_step(st, v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i]);
                st := r.st;
                allowed[i] := r.allowed;
                remaining[i] := r.remaining;
                reset_after_us[i] := r.reset_us;
                retry_after_us[i] := r.retry_us;
                IF r.allowed AND p_costs[i] > 0 THEN
                    v_writes := true;
                    v_window := v_win[i];
                ELSIF NOT r.allowed AND p_atomic AND NOT p_shadows[i] THEN
                    v_commit := false;
                END IF;
            END LOOP;
            IF v_writes THEN
                IF st.alg IN ('sliding_log', 'sliding_window') THEN
                    v_newest := st.ats[cardinality(st.ats)];
                    v_expires := v_newest + v_window;
                ELSIF st.alg = 'token_bucket' THEN
                    v_newest := st.a + (st.f > 0)::int;
                    v_expires := v_newest;
                ELSE
                    v_newest := st.a;
                    v_expires := st.a - st.a % v_window + v_window;
                END IF;
                UPDATE sluice_buckets
                SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f,
                    c = st.c, newest_us = v_newest, window_us = v_window, expires_us = v_expires
                WHERE policy = g.p AND key = g.k;
            ELSIF v_placeholder THEN
                DELETE FROM sluice_buckets WHERE policy = g.p AND key = g.k;
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

-- sluice_put_policy creates or replaces an API policy: a new policy takes a new generation; a changed window or
-- algorithm raises the floor to the newest instant whose units had stopped counting (sluice_next_floor), by the
-- database clock unless p_now_us is given (tests).
-- +goose StatementBegin
CREATE FUNCTION sluice_put_policy(p_name text, p_quota bigint, p_window_ms bigint, p_algorithm text,
                                  p_resolution_ms bigint, p_failure_mode text, p_shadow boolean, p_now_us bigint,
                                  OUT created boolean, OUT floor_us bigint, OUT generation bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
BEGIN
    INSERT INTO sluice_policies AS p (name, quota, window_ms, algorithm, resolution_ms, failure_mode, shadow)
    VALUES (p_name, p_quota, p_window_ms, p_algorithm, p_resolution_ms, p_failure_mode, p_shadow)
    ON CONFLICT (name) DO UPDATE
    SET quota = excluded.quota, window_ms = excluded.window_ms, algorithm = excluded.algorithm,
        resolution_ms = excluded.resolution_ms, failure_mode = excluded.failure_mode, shadow = excluded.shadow,
        floor_us = CASE WHEN p.window_ms <> excluded.window_ms OR p.algorithm <> excluded.algorithm
                        THEN sluice_next_floor(p.floor_us, p.algorithm, p.window_ms * 1000, v_now)
                        ELSE p.floor_us END,
        updated_at = now()
    RETURNING (p.xmax = 0), p.floor_us, p.generation INTO created, floor_us, generation;
END
$$;
-- +goose StatementEnd

-- sluice_register_config_policy records a replica's config-file policy as the database last saw it, raising its
-- floor when its window or algorithm differs from the last replica's, and returns what it replaced (NULLs when
-- nothing or the same policy) so the replica can report a difference between replicas' files.
-- +goose StatementBegin
CREATE FUNCTION sluice_register_config_policy(p_name text, p_quota bigint, p_window_ms bigint, p_algorithm text,
                                              p_resolution_ms bigint, p_replica text, p_now_us bigint,
                                              OUT prev_quota bigint, OUT prev_window_ms bigint,
                                              OUT prev_algorithm text, OUT prev_replica text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    v_old sluice_config_policies;
BEGIN
    SELECT * INTO v_old FROM sluice_config_policies WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO sluice_config_policies (name, quota, window_ms, algorithm, resolution_ms, replica)
        VALUES (p_name, p_quota, p_window_ms, p_algorithm, p_resolution_ms, p_replica)
        ON CONFLICT (name) DO NOTHING;
        RETURN;
    END IF;
    IF v_old.quota <> p_quota OR v_old.window_ms <> p_window_ms OR v_old.algorithm <> p_algorithm
        OR v_old.resolution_ms <> p_resolution_ms THEN
        prev_quota := v_old.quota;
        prev_window_ms := v_old.window_ms;
        prev_algorithm := v_old.algorithm;
        prev_replica := v_old.replica;
    END IF;
    UPDATE sluice_config_policies
    SET quota = p_quota, window_ms = p_window_ms, algorithm = p_algorithm, resolution_ms = p_resolution_ms,
        replica = p_replica, updated_at = now(),
        floor_us = CASE WHEN v_old.window_ms <> p_window_ms OR v_old.algorithm <> p_algorithm
                        THEN sluice_next_floor(v_old.floor_us, v_old.algorithm, v_old.window_ms * 1000, v_now)
                        ELSE v_old.floor_us END
    WHERE name = p_name;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION sluice_register_config_policy(text, bigint, bigint, text, bigint, text, bigint);
DROP FUNCTION sluice_put_policy(text, bigint, bigint, text, bigint, text, boolean, bigint);
DROP FUNCTION sluice_decide_batch(text[], bytea[], text[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], boolean[], boolean[], boolean, bigint, integer);
DROP FUNCTION sluice_step(sluice_state, bigint, text, bigint, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION sluice_step_fixed_window(sluice_state, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION sluice_step_token_bucket(sluice_state, bigint, bigint, bigint, bigint);
DROP FUNCTION sluice_step_log(sluice_state, bigint, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION sluice_next_floor(bigint, text, bigint, bigint);
DROP TYPE sluice_step;
DROP TYPE sluice_state;
DROP TABLE sluice_config_policies;
ALTER TABLE sluice_policies DROP CONSTRAINT sluice_policies_window_max, DROP CONSTRAINT sluice_policies_quota_max,
    DROP COLUMN generation, DROP COLUMN floor_us, DROP COLUMN resolution_ms;
DROP SEQUENCE sluice_policy_generations;
ALTER TABLE sluice_buckets DROP COLUMN window_us, DROP COLUMN newest_us, DROP COLUMN c, DROP COLUMN f,
    DROP COLUMN a, DROP COLUMN gen, DROP COLUMN alg;
-- The functions of 00001 and 00002 are not restored: migrate down to 2 only from a build of that version.

-- revision: 3

-- sluice_units is the algorithms' units function (domain's algorithmRow.units): the units the state s (of
-- algorithm s.alg, written under the window p_sw) still counts at p_now under a rule of window p_window and floor
-- p_floor, and the instant they were recorded at (a log's newest entry; a token bucket's, and concurrency's, p_now;
-- a fixed window's newest admission). It changes nothing. units is NULL for a state of an algorithm this build
-- does not know. Conversions (sluice_step) and a settle's overdraft (sluice_hold) take it from here.
CREATE OR REPLACE FUNCTION sluice_units(s sluice_state, p_sw bigint, p_policy text, p_key bytea, p_now bigint,
                                        p_window bigint, p_floor bigint, p_holds sluice_hold[],
                                        OUT units bigint, OUT at bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      sluice_step;
    cutoff bigint := sluice_cutoff(p_now, p_window, p_floor);
    n      int;
    lo     int;
    d      bigint;
BEGIN
    units := 0;
    at := 0;
    CASE s.alg
        WHEN 'sliding_log' THEN
            IF s.c = 1 THEN
                -- The log is in sluice_log_entries: its units still counting, as the step counts them (a peek).
                r := sluice_step_sliding_log(s, p_policy, p_key, p_now, 0, 9007199254740991, p_window, p_floor);
                units := 9007199254740991 - 1 - r.remaining;
                at := s.a;
            ELSE
                n := coalesce(cardinality(s.ats), 0);
                lo := 1;
                WHILE lo <= n AND s.ats[lo] <= cutoff LOOP lo := lo + 1; END LOOP;
                IF lo <= n THEN
                    units := s.cums[n] - CASE WHEN lo > 1 THEN s.cums[lo - 1] ELSE s.base END;
                    at := s.ats[n];
                END IF;
            END IF;
        WHEN 'sliding_window' THEN
            n := coalesce(cardinality(s.ats), 0);
            lo := 1;
            WHILE lo <= n AND s.ats[lo] <= cutoff LOOP lo := lo + 1; END LOOP;
            IF lo <= n THEN
                units := s.cums[n] - CASE WHEN lo > 1 THEN s.cums[lo - 1] ELSE s.base END;
                at := s.ats[n];
            END IF;
        WHEN 'token_bucket' THEN
            IF s.a > p_now OR (s.a = p_now AND s.f > 0) THEN
                d := s.a - p_now + (s.f > 0)::int;
                units := least(div(d::numeric * s.c + p_sw - 1, p_sw), 9007199254740991);
                at := p_now;
            END IF;
        WHEN 'fixed_window' THEN
            IF s.a > cutoff AND p_now < s.a - s.a % p_sw + p_sw THEN
                units := s.f;
                at := s.a;
            END IF;
        WHEN 'concurrency' THEN
            units := sluice_held(p_holds, s.gen, p_now); -- its records hold its units (domain.concurrencyUnits)
            at := p_now;
        ELSE
            units := NULL; -- written by an algorithm this build does not know
    END CASE;
END
$$;

-- sluice_held is the units the hold records of generation p_gen hold at p_now under concurrency
-- (domain.concurrencyHeld): not released (settled) and before their deadline.
CREATE OR REPLACE FUNCTION sluice_held(p_holds sluice_hold[], p_gen bigint, p_now bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(sum(h.amount), 0)::bigint FROM unnest(p_holds) h
    WHERE h.gen = p_gen AND NOT h.settled AND p_now < h.expires
$$;

-- sluice_step_concurrency is concurrency's step (domain/concurrency.go, stepConcurrency): the units held are the
-- records' (p_holds, of generation p_gen, not released, before their deadline). It records nothing (sluice_hold
-- records the hold). reset_us is the time until the latest deadline; retry_us, when denied, the time until enough
-- deadlines have passed for the cost to fit (a peek: cost 1).
CREATE OR REPLACE FUNCTION sluice_step_concurrency(s sluice_state, p_holds sluice_hold[], p_now bigint, p_cost bigint,
                                                   p_limit bigint, p_gen bigint)
RETURNS sluice_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r    sluice_step;
    need bigint := greatest(p_cost, 1);
    held bigint := sluice_held(p_holds, p_gen, p_now);
    last bigint;
BEGIN
    SELECT max(h.expires) INTO last FROM unnest(p_holds) h WHERE h.gen = p_gen AND NOT h.settled AND p_now < h.expires;
    r.allowed := held <= p_limit - need;
    r.reset_us := CASE WHEN last > p_now THEN last - p_now ELSE 0 END;
    r.retry_us := 0;
    IF r.allowed THEN
        r.remaining := p_limit - held - need;
    ELSE
        r.remaining := greatest(p_limit - held, 0);
        SELECT u.expires - p_now INTO r.retry_us FROM (
            SELECT h.expires, held - sum(h.amount) OVER (ORDER BY h.expires ROWS UNBOUNDED PRECEDING) AS left_after
            FROM unnest(p_holds) h WHERE h.gen = p_gen AND NOT h.settled AND p_now < h.expires) u
        WHERE u.left_after <= p_limit - need ORDER BY u.expires LIMIT 1;
        r.retry_us := coalesce(r.retry_us, 0);
    END IF;
    r.st := s;
    RETURN r;
END
$$;

-- sluice_step is domain.Bucket.Decide (conversion spec v2 of issue 22): the one algorithm dispatch. It decides one
-- check on a view of the state and returns the view as the step left it; the caller keeps it only when the check
-- is admitted with a cost (a peek or a denial converts nothing and writes nothing). p_sw is the window the state
-- was last written under (the row's window_us).
--   - state of another generation is not counted (the view is empty);
--   - state of another algorithm, or a token bucket written under another limit or window, is converted: its
--     units still counting (a log's entries after the cutoff, at its newest instant; a token bucket's
--     outstanding units under the limit and window that wrote it, never capped by the new limit, at p_now; a
--     fixed window's units while its newest admission is after the cutoff) become one record of the rule's
--     algorithm (a fixed window's at p_now; a token bucket's as if emitted back to back from p_now, at most
--     2^43 µs ahead);
--   - then the rule's algorithm steps.
-- Under concurrency the view's units are the hold records (p_holds): those of a state decided as it is (empty, or
-- current), none of a converted view (as domain.Bucket.decide steps a converted view without the records); a check
-- of cost > 0 is refused (status 3, domain.StatusInvalidRule: nothing would release it) unless p_acquiring
-- (sluice_hold's acquire, which records a hold).
-- A rule of an unknown algorithm (or a sliding_window rule without a resolution in bounds), or a state of the
-- same generation written by an unknown algorithm, is refused: the result's allowed is NULL, which
-- sluice_decide_batch reports as status 3 (domain.StatusInvalidRule). Never a default algorithm.
DROP FUNCTION IF EXISTS sluice_step(sluice_state, text, bytea, bigint, text, bigint, bigint, bigint, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS sluice_step(sluice_state, bigint, text, bytea, bigint, text, bigint, bigint, bigint, bigint, bigint, bigint);
CREATE OR REPLACE FUNCTION sluice_step(s sluice_state, p_sw bigint, p_policy text, p_key bytea, p_now bigint,
                                       p_alg text, p_limit bigint, p_window bigint, p_res bigint, p_floor bigint,
                                       p_gen bigint, p_cost bigint, p_holds sluice_hold[] DEFAULT '{}',
                                       p_acquiring boolean DEFAULT false)
RETURNS sluice_step LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      sluice_step; -- all NULL: refused
    units  bigint := 0;
    at     bigint := 0;
    x      numeric;
    v_held sluice_hold[] := p_holds; -- the records the concurrency step sees
    q      bigint;
BEGIN
    CASE p_alg
        WHEN 'sliding_log', 'token_bucket', 'fixed_window' THEN
            NULL;
        WHEN 'concurrency' THEN
            IF p_cost > 0 AND NOT p_acquiring THEN
                RETURN r;
            END IF;
        WHEN 'sliding_window' THEN
            IF p_res IS NULL OR p_res < 1000 OR p_res > p_window THEN
                RETURN r;
            END IF;
        ELSE
            RETURN r;
    END CASE;
    IF s.alg <> '' AND s.gen <> p_gen THEN
        s := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        v_held := '{}';
    ELSIF s.alg <> '' AND (s.alg <> p_alg OR (s.alg = 'token_bucket' AND (s.c <> p_limit OR p_sw <> p_window))
                           OR (s.alg = 'fixed_window' AND p_sw <> p_window)) THEN
        SELECT u.units, u.at INTO units, at FROM sluice_units(s, p_sw, p_policy, p_key, p_now, p_window, p_floor, p_holds) u;
        IF units IS NULL THEN
            RETURN r; -- written by an algorithm this build does not know
        END IF;
        v_held := '{}';
        s := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        IF units > 0 THEN
            units := least(units, 9007199254740991);
            s.alg := p_alg;
            s.gen := p_gen;
            CASE p_alg
                WHEN 'sliding_log' THEN
                    s.ats := ARRAY[at]; s.cums := ARRAY[units]; -- c = 0: the log is in the arrays, not yet in the table
                WHEN 'sliding_window' THEN
                    s.ats := ARRAY[at + (p_res - at % p_res) % p_res]; s.cums := ARRAY[units];
                WHEN 'token_bucket' THEN
                    x := units::numeric * p_window;
                    q := div(x, p_limit);
                    IF q > 8796093022208 THEN -- 2^43 µs: a view far past any window (it denies)
                        s.a := p_now + 8796093022208;
                        s.f := 0;
                    ELSE
                        s.a := p_now + q;
                        s.f := (x - q::numeric * p_limit)::bigint;
                    END IF;
                    s.c := p_limit;
                WHEN 'fixed_window' THEN
                    s.a := p_now; s.f := units;
                WHEN 'concurrency' THEN
                    NULL; -- its units are records, which a conversion does not make (domain.holdConcurrency)
            END CASE;
        END IF;
    END IF;
    CASE p_alg
        WHEN 'sliding_log' THEN
            IF s.c = 1 THEN -- the log is in sluice_log_entries
                r := sluice_step_sliding_log(s, p_policy, p_key, p_now, p_cost, p_limit, p_window, p_floor);
            ELSE -- a new state: its log is in the arrays until sluice_decide_batch writes it
                r := sluice_step_log(s, p_now, p_now, p_cost, p_limit, p_window, p_floor);
            END IF;
        WHEN 'sliding_window' THEN
            r := sluice_step_log(s, p_now, p_now + (p_res - p_now % p_res) % p_res, p_cost, p_limit, p_window, p_floor);
        WHEN 'token_bucket' THEN
            r := sluice_step_token_bucket(s, p_now, p_cost, p_limit, p_window);
        WHEN 'fixed_window' THEN
            r := sluice_step_fixed_window(s, p_now, p_cost, p_limit, p_window, p_floor);
        WHEN 'concurrency' THEN
            r := sluice_step_concurrency(s, v_held, p_now, p_cost, p_limit, p_gen);
    END CASE;
    IF s.alg = '' AND p_cost > 0 AND r.allowed THEN
        r.st.alg := p_alg;
        r.st.gen := p_gen;
    END IF;
    RETURN r;
END
$$;

-- sluice_expiry is when a state written under p_window stops counting anything: the newest instant it holds and
-- the instant after which nothing in it counts (the janitor's inputs).
CREATE OR REPLACE FUNCTION sluice_expiry(st sluice_state, p_window bigint, OUT newest_us bigint, OUT expires_us bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF st.alg = 'sliding_log' THEN
        newest_us := st.a;
        expires_us := newest_us + p_window;
    ELSIF st.alg = 'sliding_window' THEN
        newest_us := coalesce(st.ats[cardinality(st.ats)], 0); -- a settle may have emptied the log
        expires_us := newest_us + p_window;
    ELSIF st.alg = 'token_bucket' THEN
        newest_us := st.a + (st.f > 0)::int;
        expires_us := newest_us;
    ELSIF st.alg = 'fixed_window' THEN
        newest_us := st.a;
        expires_us := st.a - st.a % p_window + p_window;
    ELSIF st.alg = 'concurrency' THEN
        newest_us := 0; -- its state is the hold records: the row's holds_until and holds_at (migration 00005)
        expires_us := 0;
    ELSE
        RAISE EXCEPTION 'sluice_expiry: unknown algorithm %', st.alg; -- sluice_step refuses it before any write
    END IF;
END
$$;

-- sluice_stored_state is the state as the key's sluice_buckets row keeps it: a sliding_log log still in the arrays
-- (c = 0, a new state) moves to sluice_log_entries (sluice_write_log), leaving its newest entry in a and f.
CREATE OR REPLACE FUNCTION sluice_stored_state(st sluice_state) RETURNS sluice_state LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n int := coalesce(cardinality(st.ats), 0);
BEGIN
    IF st.alg = 'sliding_log' AND st.c = 0 THEN
        IF n > 0 THEN
            st.a := st.ats[n];
            st.f := st.cums[n];
        END IF;
        st.ats := '{}';
        st.cums := '{}';
        st.c := 1;
    END IF;
    RETURN st;
END
$$;

-- sluice_write_log writes a sliding_log key's entries once its row is written (and so locked): a new state's
-- whole log (replacing whatever another generation or algorithm left), or else the newest entry; then prunes up to
-- 16 entries older than the newest one at or before the window's start (that one stays: it holds the cum the
-- next decision subtracts). A cum past 2^60 is rebased, as windowLog.expire does (domain/slidinglog.go).
CREATE OR REPLACE FUNCTION sluice_write_log(p_policy text, p_key bytea, st sluice_state, p_cutoff bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_mark bigint;
    v_rb   bigint;
BEGIN
    IF st.c = 0 THEN
        DELETE FROM sluice_log_entries WHERE policy = p_policy AND key = p_key;
        INSERT INTO sluice_log_entries (policy, key, at, cum)
        SELECT p_policy, p_key, u.at, u.cum FROM unnest(st.ats, st.cums) AS u(at, cum);
        RETURN;
    END IF;
    INSERT INTO sluice_log_entries AS e (policy, key, at, cum) VALUES (p_policy, p_key, st.a, st.f)
    ON CONFLICT (policy, key, at) DO UPDATE SET cum = excluded.cum;
    SELECT e.at INTO v_mark FROM sluice_log_entries e
    WHERE e.policy = p_policy AND e.key = p_key AND e.at <= p_cutoff ORDER BY e.at DESC LIMIT 1;
    IF v_mark IS NOT NULL THEN
        DELETE FROM sluice_log_entries WHERE ctid = ANY(ARRAY(
            SELECT e.ctid FROM sluice_log_entries e
            WHERE e.policy = p_policy AND e.key = p_key AND e.at < v_mark ORDER BY e.at LIMIT 16));
    END IF;
    IF st.f > 1152921504606846976 THEN
        SELECT min(e.cum) INTO v_rb FROM sluice_log_entries e WHERE e.policy = p_policy AND e.key = p_key;
        UPDATE sluice_log_entries SET cum = cum - v_rb WHERE policy = p_policy AND key = p_key;
        UPDATE sluice_buckets SET f = f - v_rb, base = base - v_rb WHERE policy = p_policy AND key = p_key;
    END IF;
END
$$;

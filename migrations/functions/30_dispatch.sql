-- revision: 1

-- sluice_step is domain.Bucket.Decide: state of another generation is dropped, state of another algorithm is
-- converted conservatively (its units still counting, taken as recorded at its newest instant), then the
-- algorithm's step runs. The only place that knows which algorithms exist.
CREATE OR REPLACE FUNCTION sluice_step(s sluice_state, p_policy text, p_key bytea, p_now bigint, p_alg text, p_limit bigint,
                            p_window bigint, p_res bigint, p_floor bigint, p_gen bigint, p_cost bigint)
RETURNS sluice_step LANGUAGE plpgsql STABLE AS $$
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
            IF s.alg = 'sliding_log' AND s.c = 1 THEN
                -- Its units still counting, as the step counts them (a peek at the old state).
                r := sluice_step_sliding_log(s, p_policy, p_key, p_now, 0, 9007199254740991, p_window, p_floor);
                units := 9007199254740991 - 1 - r.remaining;
                at := s.a;
            ELSIF s.alg IN ('sliding_log', 'sliding_window') THEN
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
                s.ats := ARRAY[at]; s.cums := ARRAY[units]; -- c = 0: the log is in the arrays, not yet in the table
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
        newest_us := st.ats[cardinality(st.ats)];
        expires_us := newest_us + p_window;
    ELSIF st.alg = 'token_bucket' THEN
        newest_us := st.a + (st.f > 0)::int;
        expires_us := newest_us;
    ELSE
        newest_us := st.a;
        expires_us := st.a - st.a % p_window + p_window;
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

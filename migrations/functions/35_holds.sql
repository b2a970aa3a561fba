-- revision: 1

-- Holds (shared/design.md, "Holds"; domain/hold.go): sluice_hold is domain.Bucket.ApplyHold, one statement, on the
-- key's sluice_buckets row (its state and its hold records, migration 00005) under the row lock every admitting
-- check of the key takes (sluice_decide_batch), so a hold and the checks of its key are decided one after the
-- other, never interleaved. The helpers below are the record rules of domain/hold.go.

-- sluice_least_lag is domain.Bucket.noteLag's comparison: the lesser of the bound (p_q + p_r/c µs; NULL: none yet)
-- and the lag an admission found, tat - now = p_lq + p_lr/c (at least 0).
CREATE OR REPLACE FUNCTION sluice_least_lag(p_q bigint, p_r bigint, p_lq bigint, p_lr bigint, OUT q bigint, OUT r bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_lq < 0 OR (p_lq = 0 AND p_lr = 0) THEN
        p_lq := 0;
        p_lr := 0;
    END IF;
    IF p_q IS NULL OR p_lq < p_q OR (p_lq = p_q AND p_lr < p_r) THEN
        q := p_lq;
        r := p_lr;
    ELSE
        q := p_q;
        r := p_r;
    END IF;
END
$$;

-- sluice_note_lag lowers every open token_bucket record's refund bound (mq + mr/c) to p_q + p_r/c
-- (domain.Bucket.noteLag); p_q NULL changes nothing (no admission on the current token bucket).
CREATE OR REPLACE FUNCTION sluice_note_lag(p_holds sluice_hold[], p_q bigint, p_r bigint) RETURNS sluice_hold[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    h sluice_hold;
BEGIN
    IF p_q IS NULL OR coalesce(cardinality(p_holds), 0) = 0 THEN
        RETURN p_holds;
    END IF;
    FOR i IN 1..cardinality(p_holds) LOOP
        h := p_holds[i];
        IF h.alg = 'token_bucket' AND NOT h.settled AND (p_q < h.mq OR (p_q = h.mq AND p_r < h.mr)) THEN
            h.mq := p_q;
            h.mr := p_r;
            p_holds[i] := h;
        END IF;
    END LOOP;
    RETURN p_holds;
END
$$;

-- sluice_prune_holds is domain.Bucket.pruneHolds: the records that can still matter at p_now under a window of
-- p_window µs and generation p_gen, in their order (another generation's go; a settled one past its deadline; any
-- whose units have left the window and whose deadline has passed).
CREATE OR REPLACE FUNCTION sluice_prune_holds(p_holds sluice_hold[], p_now bigint, p_window bigint, p_gen bigint)
RETURNS sluice_hold[] LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(ARRAY(
        SELECT p_holds[i] FROM generate_subscripts(p_holds, 1) AS i
        WHERE (p_holds[i]).gen = p_gen
          AND NOT ((p_holds[i]).settled AND p_now >= (p_holds[i]).expires)
          AND NOT (p_now >= (p_holds[i]).at + p_window AND p_now >= (p_holds[i]).expires)
        ORDER BY i), '{}')
$$;

-- sluice_drop_closed is domain.Bucket.dropClosed: the records that still count (not settled, and not a concurrency
-- hold past its deadline), for an acquire that finds the key full.
CREATE OR REPLACE FUNCTION sluice_drop_closed(p_holds sluice_hold[], p_now bigint) RETURNS sluice_hold[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(ARRAY(
        SELECT p_holds[i] FROM generate_subscripts(p_holds, 1) AS i
        WHERE NOT (p_holds[i]).settled AND NOT ((p_holds[i]).alg = 'concurrency' AND p_now >= (p_holds[i]).expires)
        ORDER BY i), '{}')
$$;

-- sluice_trim_settled is domain.Bucket.trimSettled: the records with only the last 16 (domain.MaxSettledKept)
-- settled ones in the key's list (acquisition order) kept; the settled records before them are dropped.
CREATE OR REPLACE FUNCTION sluice_trim_settled(p_holds sluice_hold[]) RETURNS sluice_hold[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    h      sluice_hold;
    v_drop int;
    v_out  sluice_hold[] := '{}';
BEGIN
    SELECT count(*) - 16 INTO v_drop FROM unnest(p_holds) x WHERE x.settled;
    IF v_drop <= 0 THEN
        RETURN p_holds;
    END IF;
    FOREACH h IN ARRAY p_holds LOOP
        IF h.settled AND v_drop > 0 THEN
            v_drop := v_drop - 1;
        ELSE
            v_out := v_out || h;
        END IF;
    END LOOP;
    RETURN v_out;
END
$$;

-- sluice_hold applies one hold operation (p_op: 1 acquire, 2 settle, 3 renew, 4 release anonymous holds; the
-- domain.HoldOp codes) to (p_policy, p_key) at p_now_us (NULL: the database clock), exactly as
-- domain.Bucket.ApplyHold: one statement, one round trip. p_amount is the amount to acquire, settle to, or release;
-- p_ttl_us the acquire's or renewal's TTL (0 or past the window: the window). The rule is the caller's, or with
-- p_stored the API policy as the database holds it once the row is locked (status 1 when it is gone, 2 when an
-- acquire's amount is over its limit), as sluice_decide_batch decides a stored check.
--
-- The key's row is locked (FOR UPDATE; a placeholder row is inserted for an acquire of a key without one, and
-- deleted again if nothing is recorded), so the hold is atomic with the key's checks. A key state of a newer
-- generation refuses the operation (status 1, hold_status HoldUnknown), as Decide refuses a stale check. The
-- results are the decision (status and the fields; for a settle, renewal or release, a peek after it), the hold as
-- it is after the operation (hold_id .. settled), hold_status (domain.HoldStatus) and the overdraft.
--
-- An acquire that the key's committed state denies is answered from a lock-free read (no lock, nothing written).
-- The store runs each call as its own transaction: one that changes nothing sets synchronous_commit off for it.
-- The row is written once at the end, and only when anything changed: the state (an acquire's admission, a settle's adjust or forced excess), the
-- records (pruned and trimmed as the domain prunes and trims them, at the same operations) and the janitor's holds_until and holds_at.
-- A sliding_log key's entries (sluice_log_entries) change in place: an admission or a forced excess writes its
-- entry (sluice_write_log); a settle moves the cums of its entry and every later one by the difference, and an
-- entry left with no unit is deleted (domain's adjustLog).
CREATE OR REPLACE FUNCTION sluice_hold(
    p_policy text, p_key bytea, p_op smallint, p_id bytea, p_amount bigint, p_ttl_us bigint,
    p_alg text, p_limit bigint, p_window_us bigint, p_res_us bigint, p_floor_us bigint, p_gen bigint,
    p_stored boolean, p_now_us bigint,
    OUT status smallint, OUT allowed boolean, OUT lim bigint, OUT remaining bigint, OUT reset_after_us bigint,
    OUT retry_after_us bigint, OUT hold_status smallint, OUT hold_id bytea, OUT amount bigint, OUT at_us bigint,
    OUT expires_us bigint, OUT settled boolean, OUT overdraft bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now    bigint := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    v_alg    text := p_alg;
    v_lim    bigint := p_limit;
    v_win    bigint := p_window_us;
    v_res    bigint := p_res_us;
    v_floor  bigint := p_floor_us;
    v_gen    bigint := p_gen;
    pr       record;
    st       sluice_state;
    v_sw     bigint;
    v_holds  sluice_hold[];
    v_found  boolean := false;
    v_ph     boolean := false;
    r        sluice_step;
    h        sluice_hold;
    k        int := 0;
    n        int;
    v_peek   boolean := true;  -- the decision is a peek after the operation
    v_od     boolean := false; -- the overdraft is reported
    v_delta  bigint;
    v_ttl    bigint;
    v_cur    boolean;
    v_at     bigint;
    v_start  bigint;
    v_x      numeric;
    v_q      bigint;
    v_rem    bigint;
    v_c1     bigint;
    v_prev   bigint;
    v_units  bigint;
    v_held   boolean;
    v_back   bigint;
    v_give   bigint;
    v_newest bigint;
    v_exp    bigint;
    v_until  bigint;
    v_hat    bigint;
    v_st0    sluice_state;  -- the row as read under the lock: written back only if anything changed
    v_sw0    bigint;
    v_h0     sluice_hold[];
    v_trim   boolean := false; -- a settle succeeded: the settled records are trimmed (domain.MaxSettledKept)
BEGIN
    status := 0; allowed := false; lim := coalesce(p_limit, 0); remaining := 0; reset_after_us := 0;
    retry_after_us := 0; hold_status := 0; hold_id := '\x'::bytea; amount := 0; at_us := 0; expires_us := 0;
    settled := false; overdraft := 0;
    IF p_op IS NULL OR p_op NOT IN (1, 2, 3, 4) OR p_policy IS NULL OR p_key IS NULL OR p_id IS NULL
        OR p_amount IS NULL OR p_amount < 0 OR (p_op = 1 AND p_amount < 1) THEN
        status := 3; hold_status := 2; -- domain.ApplyHold's answer to an operation it does not know
        RETURN;
    END IF;

    IF p_op = 1 THEN
        -- A lock-free read first: an acquire that the key's committed state denies is answered from it, taking no
        -- lock and writing nothing, as sluice_decide_batch answers a denial (a denial from committed state is the
        -- decision at that state; the records it would prune are pruned by the next operation that writes, as
        -- pruning changes no decision). Anything else is decided again under the row lock below.
        SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.window_us, b.holds
        INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_sw, v_holds
        FROM sluice_buckets b WHERE b.policy = p_policy AND b.key = p_key;
        v_found := FOUND;
        IF v_found AND p_stored THEN
            SELECT p.algorithm, p.quota, p.window_ms, p.resolution_ms, p.floor_us, p.generation INTO pr
            FROM sluice_policies p WHERE p.name = p_policy;
            v_found := FOUND;
            IF v_found THEN
                v_alg := pr.algorithm; v_lim := pr.quota; v_win := pr.window_ms * 1000;
                v_res := pr.resolution_ms * 1000; v_floor := pr.floor_us; v_gen := pr.generation;
            END IF;
        END IF;
        IF v_found AND v_lim BETWEEN 1 AND 9007199254740991 AND v_win BETWEEN 1000000 AND 2678400000000
            AND v_win % 1000 = 0 AND v_floor IS NOT NULL AND v_gen IS NOT NULL AND p_amount <= v_lim
            AND NOT (st.alg <> '' AND st.gen > v_gen) THEN
            v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_gen);
            IF cardinality(v_holds) < 1024
                AND NOT EXISTS (SELECT 1 FROM unnest(v_holds) x WHERE x.id = p_id AND x.gen = v_gen) THEN
                r := sluice_step(st, v_sw, p_policy, p_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, p_amount,
                                 v_holds, true);
                IF NOT r.allowed THEN
                    lim := v_lim; remaining := r.remaining; reset_after_us := r.reset_us; retry_after_us := r.retry_us;
                    RETURN;
                END IF;
            END IF;
        END IF;
        v_found := false;
    END IF;

    -- The row, locked: an acquire of a key without one inserts a placeholder (deleted below if nothing is kept).
    LOOP
        SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.window_us, b.holds
        INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_sw, v_holds
        FROM sluice_buckets b WHERE b.policy = p_policy AND b.key = p_key FOR UPDATE;
        v_found := FOUND;
        EXIT WHEN v_found OR p_op <> 1;
        INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
        VALUES (p_policy, p_key, '{}', '{}', 0, 0, '')
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            v_ph := true;
            EXIT;
        END IF;
    END LOOP;
    IF NOT v_found THEN
        st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        v_sw := 0;
        v_holds := '{}';
    END IF;
    v_st0 := st;
    v_sw0 := v_sw;
    v_h0 := v_holds;

    -- The stored policy, read once the row is locked (a DELETE that committed before has dropped its keys or
    -- waits for this lock).
    IF p_stored THEN
        SELECT p.algorithm, p.quota, p.window_ms, p.resolution_ms, p.floor_us, p.generation INTO pr
        FROM sluice_policies p WHERE p.name = p_policy;
        IF NOT FOUND THEN
            status := 1;
            IF v_ph THEN
                DELETE FROM sluice_buckets WHERE policy = p_policy AND key = p_key;
            END IF;
            RETURN;
        END IF;
        v_alg := pr.algorithm; v_lim := pr.quota; v_win := pr.window_ms * 1000; v_res := pr.resolution_ms * 1000;
        v_floor := pr.floor_us; v_gen := pr.generation;
        lim := v_lim;
    END IF;
    IF v_lim IS NULL OR v_lim < 1 OR v_lim > 9007199254740991 OR v_win IS NULL OR v_win < 1000000
        OR v_win > 2678400000000 OR v_win % 1000 <> 0 OR v_floor IS NULL OR v_gen IS NULL
        OR v_alg NOT IN ('sliding_log', 'sliding_window', 'token_bucket', 'fixed_window', 'concurrency') THEN
        status := 3; hold_status := CASE WHEN p_op = 1 THEN 0 ELSE 2 END;
    ELSIF p_op = 1 AND p_amount > v_lim THEN
        status := 2;
    ELSIF st.alg <> '' AND st.gen > v_gen THEN
        status := 1; hold_status := 2; -- a stale generation: refused as Decide refuses it, nothing pruned
    END IF;
    IF status <> 0 THEN
        IF v_ph THEN
            DELETE FROM sluice_buckets WHERE policy = p_policy AND key = p_key;
        END IF;
        RETURN;
    END IF;

    IF p_op <> 4 THEN
        v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_gen);
        n := cardinality(v_holds);
        FOR i IN 1..n LOOP
            IF (v_holds[i]).id = p_id AND (v_holds[i]).gen = v_gen THEN
                k := i;
                EXIT;
            END IF;
        END LOOP;
    END IF;

    IF p_op = 1 THEN
        -- Acquire (domain.Bucket.Acquire).
        IF k > 0 THEN
            h := v_holds[k];
            hold_status := CASE WHEN h.reserved <> p_amount THEN 3 ELSE 1 END;
        ELSE
            IF cardinality(v_holds) >= 1024 THEN -- domain.MaxHolds
                v_holds := sluice_drop_closed(v_holds, v_now);
            END IF;
            IF cardinality(v_holds) >= 1024 THEN
                hold_status := 6;
            ELSE
                v_peek := false;
                r := sluice_step(st, v_sw, p_policy, p_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, p_amount,
                                 v_holds, true);
                IF r.allowed IS NULL THEN
                    status := 3;
                ELSE
                    allowed := r.allowed; remaining := r.remaining; reset_after_us := r.reset_us;
                    retry_after_us := r.retry_us;
                END IF;
                IF r.allowed THEN
                    IF v_alg = 'token_bucket' AND (st.alg = '' OR (st.gen = v_gen AND st.alg = 'token_bucket'
                                                   AND st.c = v_lim AND v_sw = v_win)) THEN
                        SELECT sluice_note_lag(v_holds, l.q, l.r) INTO v_holds
                        FROM sluice_least_lag(NULL, NULL, st.a - v_now, st.f) l;
                    END IF;
                    st := r.st;
                    v_sw := v_win;
                    IF st.alg = 'sliding_log' THEN
                        PERFORM sluice_write_log(p_policy, p_key, st, sluice_cutoff(v_now, v_win, v_floor));
                        st := sluice_stored_state(st);
                    END IF;
                    v_ttl := CASE WHEN p_ttl_us <= 0 OR p_ttl_us > v_win THEN v_win ELSE p_ttl_us END;
                    v_at := v_now;
                    IF v_alg = 'sliding_window' THEN
                        v_at := v_now + (v_res - v_now % v_res) % v_res;
                    END IF;
                    h := ROW(p_id, p_amount, v_at, v_now + v_ttl, false, p_amount, v_gen, v_alg, 0, 0, 0, 0)::sluice_hold;
                    IF v_alg = 'token_bucket' THEN
                        h.c := v_lim; h.w := v_win; h.mq := 8796093022208; -- past any window (domain.maxTatLead)
                    END IF;
                    v_holds := v_holds || h;
                    k := cardinality(v_holds);
                    IF v_alg = 'concurrency' THEN
                        reset_after_us := greatest(reset_after_us, v_ttl); -- the new hold's units are back then
                    END IF;
                END IF;
            END IF;
        END IF;
    ELSIF p_op = 2 AND k > 0 THEN
        -- Settle (domain.Bucket.Settle).
        h := v_holds[k];
        v_cur := st.alg = h.alg AND st.gen = h.gen AND (h.alg <> 'token_bucket' OR (st.c = h.c AND v_sw = h.w));
        IF v_alg = 'concurrency' AND v_cur THEN
            IF h.settled AND p_amount = 0 THEN
                hold_status := 1; v_od := true;
            ELSIF h.settled THEN
                hold_status := 3;
            ELSIF v_now >= h.expires THEN
                hold_status := 4;
            ELSE
                h.amount := p_amount; h.settled := p_amount = 0;
                v_holds[k] := h;
                v_od := true;
                v_trim := true;
            END IF;
        ELSIF h.settled THEN
            IF h.amount = p_amount THEN
                hold_status := 1; v_od := true;
            ELSE
                hold_status := 3;
            END IF;
        ELSE
            v_delta := p_amount - h.amount;
            IF v_delta < 0 AND NOT v_cur THEN
                hold_status := 5;
            ELSIF v_delta < 0 AND v_now >= h.expires THEN
                hold_status := 4;
            ELSE
                IF v_delta <> 0 AND NOT v_cur THEN
                    -- The units were converted: the excess is recorded at now under the rule in force, on the state
                    -- converted first as an admission would (domain.Bucket.forceRecord).
                    IF st.alg <> '' AND NOT (st.gen = v_gen AND st.alg = v_alg
                            AND (v_alg <> 'token_bucket' OR (st.c = v_lim AND v_sw = v_win))
                            AND (v_alg <> 'fixed_window' OR v_sw = v_win)) THEN
                        r := sluice_step(st, v_sw, p_policy, p_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, 0,
                                         v_holds, true);
                        IF r.allowed IS NOT NULL THEN
                            st := r.st;
                        END IF;
                    END IF;
                    CASE v_alg
                        WHEN 'sliding_log', 'sliding_window' THEN
                            v_at := v_now;
                            IF v_alg = 'sliding_window' THEN
                                v_at := v_now + (v_res - v_now % v_res) % v_res;
                            END IF;
                            IF st.alg = 'sliding_log' AND st.c = 1 THEN -- the log is in sluice_log_entries
                                v_held := st.f > st.base AND st.a > sluice_cutoff(v_now, v_win, v_floor);
                                IF NOT v_held THEN
                                    st.base := st.f;
                                END IF;
                                IF NOT (v_held AND st.a >= v_at) THEN
                                    st.a := v_at;
                                END IF;
                                st.f := st.f + v_delta;
                            ELSE
                                n := coalesce(cardinality(st.ats), 0);
                                IF n > 0 AND st.ats[n] >= v_at THEN
                                    st.cums[n] := st.cums[n] + v_delta;
                                ELSE
                                    st.ats := coalesce(st.ats, '{}') || v_at;
                                    st.cums := coalesce(st.cums, '{}') || (CASE WHEN n = 0 THEN st.base ELSE st.cums[n] END + v_delta);
                                END IF;
                            END IF;
                        WHEN 'token_bucket' THEN
                            IF st.alg <> 'token_bucket' OR st.a < v_now OR (st.a = v_now AND st.f = 0) THEN
                                st.a := v_now; st.f := 0;
                            END IF;
                            v_x := v_delta::numeric * v_win;
                            v_q := div(v_x, v_lim);
                            st.a := st.a + v_q;
                            st.f := st.f + (v_x - v_q::numeric * v_lim)::bigint;
                            st.c := v_lim;
                            IF st.f >= st.c THEN
                                st.a := st.a + 1; st.f := st.f - st.c;
                            END IF;
                        WHEN 'fixed_window' THEN
                            IF st.alg <> 'fixed_window' OR st.a < v_now - v_now % v_win THEN
                                st.a := v_now; st.f := 0;
                            END IF;
                            st.a := greatest(st.a, v_now);
                            st.f := st.f + v_delta;
                        ELSE
                            NULL; -- concurrency: the excess is the record's amount
                    END CASE;
                    st.alg := v_alg;
                    st.gen := v_gen;
                    v_sw := v_win;
                    IF st.alg = 'sliding_log' THEN
                        PERFORM sluice_write_log(p_policy, p_key, st, sluice_cutoff(v_now, v_win, v_floor));
                        st := sluice_stored_state(st);
                    END IF;
                ELSIF v_delta <> 0 THEN
                    -- The algorithm's adjust, on the state that still holds the units where h recorded them.
                    CASE h.alg
                        WHEN 'sliding_log', 'sliding_window' THEN
                            IF h.alg = 'sliding_log' AND st.c = 1 THEN
                                SELECT e.cum INTO v_c1 FROM sluice_log_entries e
                                WHERE e.policy = p_policy AND e.key = p_key AND e.at = h.at;
                                IF FOUND THEN
                                    v_prev := coalesce((SELECT e.cum FROM sluice_log_entries e
                                                        WHERE e.policy = p_policy AND e.key = p_key AND e.at < h.at
                                                        ORDER BY e.at DESC LIMIT 1), st.base);
                                    v_units := v_c1 - v_prev;
                                    v_delta := greatest(v_delta, -v_units);
                                    UPDATE sluice_log_entries SET cum = cum + v_delta
                                    WHERE policy = p_policy AND key = p_key AND at >= h.at;
                                    st.f := st.f + v_delta;
                                    IF v_units + v_delta <= 0 THEN
                                        DELETE FROM sluice_log_entries WHERE policy = p_policy AND key = p_key AND at = h.at;
                                        IF st.a = h.at THEN
                                            st.a := coalesce((SELECT max(e.at) FROM sluice_log_entries e
                                                              WHERE e.policy = p_policy AND e.key = p_key), st.a);
                                        END IF;
                                    END IF;
                                END IF;
                            ELSE
                                n := coalesce(cardinality(st.ats), 0);
                                v_q := 0;
                                FOR i IN 1..n LOOP
                                    IF st.ats[i] = h.at THEN
                                        v_q := i;
                                        EXIT;
                                    END IF;
                                END LOOP;
                                IF v_q > 0 THEN
                                    v_prev := CASE WHEN v_q > 1 THEN st.cums[v_q - 1] ELSE st.base END;
                                    v_units := st.cums[v_q] - v_prev;
                                    v_delta := greatest(v_delta, -v_units);
                                    FOR i IN v_q..n LOOP
                                        st.cums[i] := st.cums[i] + v_delta;
                                    END LOOP;
                                    IF v_units + v_delta <= 0 THEN
                                        st.ats := st.ats[1:v_q - 1] || st.ats[v_q + 1:n];
                                        st.cums := st.cums[1:v_q - 1] || st.cums[v_q + 1:n];
                                        IF n = 1 THEN
                                            st.base := 0;
                                        END IF;
                                    END IF;
                                END IF;
                            END IF;
                        WHEN 'token_bucket' THEN
                            v_x := abs(v_delta)::numeric * v_sw;
                            v_q := div(v_x, st.c);
                            v_rem := (v_x - v_q::numeric * st.c)::bigint;
                            IF v_delta > 0 THEN
                                st.a := st.a + v_q; st.f := st.f + v_rem;
                                IF st.f >= st.c THEN
                                    st.a := st.a + 1; st.f := st.f - st.c;
                                END IF;
                            ELSE
                                IF h.mq < v_q OR (h.mq = v_q AND h.mr < v_rem) THEN
                                    v_q := h.mq; v_rem := h.mr;
                                END IF;
                                st.a := st.a - v_q; st.f := st.f - v_rem;
                                IF st.f < 0 THEN
                                    st.a := st.a - 1; st.f := st.f + st.c;
                                END IF;
                            END IF;
                        WHEN 'fixed_window' THEN
                            v_start := v_now - v_now % v_sw;
                            IF h.at >= v_start AND st.a >= v_start THEN
                                st.f := greatest(st.f + v_delta, 0);
                            END IF;
                        ELSE
                            NULL; -- concurrency: the record is the units
                    END CASE;
                END IF;
                h.amount := p_amount; h.settled := true;
                v_holds[k] := h;
                v_od := true;
                v_trim := true;
            END IF;
        END IF;
    ELSIF p_op = 3 AND k > 0 THEN
        -- Renew (domain.Bucket.Renew).
        h := v_holds[k];
        IF h.settled THEN
            hold_status := 3;
        ELSIF v_now >= h.expires THEN
            hold_status := 4;
        ELSE
            h.expires := v_now + CASE WHEN p_ttl_us <= 0 OR p_ttl_us > v_win THEN v_win ELSE p_ttl_us END;
            v_holds[k] := h;
        END IF;
    ELSIF p_op = 4 THEN
        -- Anonymous holds released by count, the earliest first (domain.Bucket.releaseAnonymous), under
        -- concurrency on its current state only.
        IF v_alg <> 'concurrency' OR (st.alg <> '' AND NOT (st.alg = 'concurrency' AND st.gen = v_gen)) THEN
            hold_status := 2;
        ELSE
            v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_gen);
            v_back := 0;
            FOR i IN 1..coalesce(cardinality(v_holds), 0) LOOP
                EXIT WHEN v_back >= p_amount;
                h := v_holds[i];
                CONTINUE WHEN h.gen <> v_gen OR length(h.id) = 0 OR get_byte(h.id, 0) <> 0 OR h.settled
                    OR v_now >= h.expires;
                v_give := least(h.amount, p_amount - v_back);
                h.amount := h.amount - v_give;
                h.settled := h.amount = 0;
                v_holds[i] := h;
                v_back := v_back + v_give;
            END LOOP;
            v_holds := sluice_trim_settled(v_holds);
            amount := v_back;
            IF v_back = 0 THEN
                hold_status := 2;
            END IF;
        END IF;
        k := 0;
    ELSE
        hold_status := 2; -- a settle or renewal of an id the key does not hold
    END IF;

    IF k > 0 AND hold_status <> 6 AND NOT (p_op = 1 AND NOT allowed AND hold_status = 0) THEN
        h := v_holds[k];
        hold_id := h.id; amount := h.amount; at_us := h.at; expires_us := h.expires; settled := h.settled;
    END IF;
    IF v_trim THEN
        v_holds := sluice_trim_settled(v_holds); -- after the hold is reported: it may be the record dropped
    END IF;
    IF v_od AND st.alg <> '' AND st.gen = v_gen AND st.alg = v_alg
        AND (v_alg <> 'token_bucket' OR (st.c = v_lim AND v_sw = v_win)) AND (v_alg <> 'fixed_window' OR v_sw = v_win) THEN
        SELECT u.units INTO v_units FROM sluice_units(st, v_sw, p_policy, p_key, v_now, v_win, v_floor, v_holds) u;
        overdraft := greatest(coalesce(v_units, 0) - v_lim, 0);
    END IF;
    IF v_peek THEN
        r := sluice_step(st, v_sw, p_policy, p_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, 0, v_holds);
        IF r.allowed IS NULL THEN
            status := 3; allowed := false;
        ELSE
            allowed := r.allowed; remaining := r.remaining; reset_after_us := r.reset_us; retry_after_us := r.retry_us;
        END IF;
    END IF;

    -- The row, written once when anything changed: or the placeholder deleted when nothing is kept.
    IF v_found AND st IS NOT DISTINCT FROM v_st0 AND v_sw IS NOT DISTINCT FROM v_sw0 AND v_holds IS NOT DISTINCT FROM v_h0 THEN
        -- A replay, a conflict, a denial that pruned nothing: the row stays as it is. The transaction only locked
        -- it, so its commit need not wait for the WAL flush (nothing it did must survive a crash).
        PERFORM set_config('synchronous_commit', 'off', true);
        RETURN;
    END IF;
    IF st.alg = '' AND cardinality(v_holds) = 0 THEN
        IF v_ph THEN
            DELETE FROM sluice_buckets WHERE policy = p_policy AND key = p_key;
        ELSIF v_found THEN
            UPDATE sluice_buckets SET holds = '{}', holds_until = 0, holds_at = 0
            WHERE policy = p_policy AND key = p_key;
        END IF;
        RETURN;
    END IF;
    IF NOT (v_found OR v_ph) THEN
        RETURN; -- no row and nothing to keep (a settle, renewal or release of a key without one)
    END IF;
    v_newest := 0;
    v_exp := 0;
    IF st.alg <> '' THEN
        SELECT e.newest_us, e.expires_us INTO v_newest, v_exp FROM sluice_expiry(st, v_sw) e;
    END IF;
    SELECT coalesce(max(x.expires), 0), coalesce(max(x.at) FILTER (WHERE NOT x.settled), 0) INTO v_until, v_hat
    FROM unnest(v_holds) x WHERE x.gen = st.gen;
    UPDATE sluice_buckets
    SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f, c = st.c,
        newest_us = v_newest, window_us = v_sw, expires_us = v_exp, holds = v_holds, holds_until = v_until,
        holds_at = v_hat
    WHERE policy = p_policy AND key = p_key;
END
$$;

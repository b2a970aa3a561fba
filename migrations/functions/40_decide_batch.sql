-- revision: 4

-- sluice_decide_batch is the one routine every decision goes through (a single check is a batch of one): one
-- statement, one round trip, and no subtransaction. For each check it takes the rule the caller sent, or, for a stored (API) policy,
-- the policy as the database holds it at this statement (status 1 when it no longer exists, 2 when the cost
-- exceeds its limit); an out-of-bounds rule is refused alone (status 3), so one bad check never fails another. So
-- is a check whose rule, or whose key's state, has an algorithm sluice_step does not know (status 3 too).
--
-- Each check of a pair is decided by sluice_step on the pair's state as the checks before it left it; only an
-- admission with a cost changes that state (and so the row): a peek or a denial converts nothing.
--
-- Generations only grow (a sequence), and a stored check whose key holds state of a newer generation than the
-- policy this statement read is refused as status 1, writing nothing: the policy was deleted and re-created while
-- the statement ran (each statement of this function reads the newest committed rows), and a deleted generation
-- never resets or drops a newer one's state (shared/design.md, "Policy changes"). The first admission of a
-- generation on a key (its state is empty, or another generation's) is never written from the lock-free read: it
-- is decided under the row lock, after reading the policy again, so a check that raced the policy's DELETE (whose
-- keys are then dropped) never counts the deleted generation afresh.
--
-- Locking: every (policy, key) is first decided from a lock-free read. A pair whose checks are all peeks or
-- denials is done then: no row lock, no transaction id, nothing written (a denial from committed state is exact:
-- concurrent transactions can only add units, or reset the key, ordering the denial before the reset). With
-- p_atomic, a non-shadow denial (or a refused check) there ends the batch after this read: every check is
-- decided, nothing is locked or written. In a non-atomic batch a pair that admits is written straight from that
-- read when its row is still the version read (the UPDATE takes the row lock; a pair without a row is inserted).
-- The first pair that cannot be (its row changed meanwhile, or a stored pair's state is not its generation's) and
-- every admitting pair after it, and in an atomic batch every admitting pair, are then locked in byte order of
-- (policy, key), the one order every caller uses (sluice_apply_batch too), so concurrent batches cannot deadlock:
-- the rows written from the read all come before them in that order. (Writing later pairs from the read after one
-- was deferred took their locks before its: a batch holding a later key then waited for an earlier one, and mixed
-- batches locking in byte order met it in a deadlock, TestApplyBatchOppositeOrdersDoNotDeadlock.) The locked pairs
-- are decided again on the locked row, with the clock read again, and written once each. A pair with no row gets a placeholder inserted in
-- that order (deleted again if nothing is recorded). With p_atomic, a non-shadow denial among them (or a refused
-- check) means nothing is written: the rows stay locked from the decision to the write, so there is nothing to
-- undo; the decisions returned are as evaluated. With p_lock_wait_ms, a row locked by
-- another session for longer fails the whole statement with SQLSTATE 55P03, recording nothing (the coalescer's
-- lanes then re-send per key).
CREATE OR REPLACE FUNCTION sluice_decide_batch(
    p_policies text[], p_keys bytea[], p_algs text[], p_limits bigint[], p_windows_us bigint[], p_res_us bigint[],
    p_floors_us bigint[], p_gens bigint[], p_costs bigint[], p_shadows boolean[], p_stored boolean[],
    p_atomic boolean, p_now_us bigint, p_lock_wait_ms integer,
    OUT status smallint[], OUT allowed boolean[], OUT lim bigint[], OUT remaining bigint[],
    OUT reset_after_us bigint[], OUT retry_after_us bigint[])
LANGUAGE plpgsql
-- Generic plans: the statements below take arrays whose contents never change their best plan, and re-planning
-- them on every call (what the default plan cache mode ends up doing here) costs more than the decision.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n        int := cardinality(p_policies);
    v_alg    text[] := p_algs;
    v_lim    bigint[] := p_limits;
    v_win    bigint[] := p_windows_us;
    v_res    bigint[] := p_res_us;
    v_floor  bigint[] := p_floors_us;
    v_gen    bigint[] := p_gens;
    v_order  int[];     -- check indices in (policy, key) byte order, then request order: pairs are runs
    v_lock   boolean[]; -- the check's pair admits: phase 2 locks and writes it
    i        int;
    j        int;
    v_start  int;
    v_end    int;
    pr       record;
    st       sluice_state;
    r        sluice_step;
    v_now    bigint;
    v_found  boolean;
    v_placeholder boolean;
    v_writes boolean;
    v_any    boolean := false;
    v_newest bigint;
    v_expires bigint;
    v_window bigint;
    v_commit boolean := true;
    k        int;
    v_states sluice_state[] := '{}';
    v_pair   int[] := '{}';
    v_wins   bigint[] := '{}';
    v_wrote  boolean[] := '{}';
    v_ph     boolean[] := '{}';
    v_ctid   tid;
    v_xmin   xid;
    v_log    sluice_state;
    v_nows   bigint[] := '{}';
    v_sw     bigint;    -- the window the pair's state was last written under (window_us)
    v_fresh  boolean;   -- a stored pair whose state is not its generation's: its policy is re-read under the lock
    v_later  boolean := false; -- a pair went to phase 2: the pairs after it do too (the lock order, see the header)
    v_pgen   bigint;
    v_holds  sluice_hold[]; -- the pair's hold records, read only where concurrency counts them (below)
    v_conc   boolean;       -- a check of the batch is decided under concurrency (the rules in force)
    v_lq     bigint;        -- the least lag an admission of the pair's token bucket found (sluice_least_lag)
    v_lr     bigint;
    v_lqs    bigint[] := '{}';
    v_lrs    bigint[] := '{}';
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

    -- The policies in force for stored (API) checks, read by this statement.
    IF true = ANY(p_stored) THEN
        FOR i IN 1..n LOOP
            IF p_stored[i] THEN
                status[i] := 1;
            END IF;
        END LOOP;
        FOR pr IN
            SELECT u.i, p.algorithm, p.quota, p.window_ms, p.resolution_ms, p.floor_us, p.generation
            FROM unnest(p_policies, p_stored) WITH ORDINALITY AS u(name, stored, i)
            JOIN sluice_policies p ON p.name = u.name
            WHERE u.stored
        LOOP
            i := pr.i;
            status[i] := 0;
            v_alg[i] := pr.algorithm;
            v_lim[i] := pr.quota;
            v_win[i] := pr.window_ms * 1000;
            v_res[i] := pr.resolution_ms * 1000;
            v_floor[i] := pr.floor_us;
            v_gen[i] := pr.generation;
        END LOOP;
    END IF;
    -- Bounds, per check: an out-of-bounds rule fails alone. The algorithm (and its parameters) are sluice_step's to
    -- judge: it refuses an unknown one, and the check gets status 3 where it is decided.
    FOR i IN 1..n LOOP
        IF status[i] = 0 THEN
            IF v_lim[i] IS NULL OR v_lim[i] < 1 OR v_lim[i] > 9007199254740991 OR v_win[i] IS NULL
                OR v_win[i] < 1000000 OR v_win[i] > 2678400000000 OR v_win[i] % 1000 <> 0 OR p_costs[i] IS NULL
                OR p_costs[i] < 0 OR v_floor[i] IS NULL OR v_gen[i] IS NULL OR p_keys[i] IS NULL
                OR p_policies[i] IS NULL THEN
                status[i] := 3;
            ELSIF p_costs[i] > v_lim[i] THEN
                status[i] := 2;
            END IF;
        END IF;
        lim[i] := coalesce(v_lim[i], 0);
        IF status[i] <> 0 AND p_atomic THEN
            v_commit := false;
        END IF;
    END LOOP;
    IF NOT v_commit THEN
        RETURN; -- an atomic batch with a refused check records nothing
    END IF;
    v_conc := coalesce('concurrency' = ANY(v_alg), false);
    IF n = 1 THEN
        v_order := ARRAY[1];
    ELSE
        SELECT array_agg(u.i ORDER BY u.p COLLATE "C", u.k, u.i) INTO v_order
        FROM unnest(p_policies, p_keys) WITH ORDINALITY AS u(p, k, i);
    END IF;

    -- Phase 1: every pair from a lock-free read.
    v_start := 1;
    WHILE v_start <= n LOOP
        i := v_order[v_start];
        v_end := v_start;
        WHILE v_end < n AND p_policies[v_order[v_end + 1]] = p_policies[i] AND p_keys[v_order[v_end + 1]] = p_keys[i] LOOP
            v_end := v_end + 1;
        END LOOP;
        SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.window_us,
               CASE WHEN v_conc OR b.alg = 'concurrency' THEN b.holds ELSE '{}' END, b.ctid, b.xmin
        INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_sw, v_holds, v_ctid, v_xmin
        FROM sluice_buckets b WHERE b.policy = p_policies[i] AND b.key = p_keys[i];
        v_found := FOUND;
        IF NOT v_found THEN
            st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
            v_sw := 0;
            v_holds := '{}';
        END IF;
        v_lq := NULL;
        v_lr := NULL;
        v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
        v_writes := false;
        v_fresh := p_stored[i] AND (st.alg = '' OR st.gen <> v_gen[i]);
        FOR j IN v_start..v_end LOOP
            i := v_order[j];
            CONTINUE WHEN status[i] <> 0;
            IF p_stored[i] AND st.alg <> '' AND st.gen > v_gen[i] THEN
                status[i] := 1; -- its generation was deleted while this statement ran (see the header)
                IF p_atomic THEN
                    v_commit := false;
                END IF;
                CONTINUE;
            END IF;
            r := sluice_step(st, v_sw, p_policies[i], p_keys[i], v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i], v_holds);
            IF r.allowed IS NULL THEN
                status[i] := 3; -- an unknown algorithm, in the rule or in the state: refused, never a default
                allowed[i] := false; remaining[i] := 0; reset_after_us[i] := 0; retry_after_us[i] := 0;
                IF p_atomic THEN
                    v_commit := false;
                END IF;
                CONTINUE;
            END IF;
            allowed[i] := r.allowed;
            remaining[i] := r.remaining;
            reset_after_us[i] := r.reset_us;
            retry_after_us[i] := r.retry_us;
            IF r.allowed AND p_costs[i] > 0 AND v_alg[i] = 'token_bucket' AND (st.alg = '' OR (st.gen = v_gen[i]
                AND st.alg = 'token_bucket' AND st.c = v_lim[i] AND v_sw = v_win[i])) THEN
                -- An admission on the current token bucket: the lag it found bounds the refunds of the key's
                -- open holds (domain.Bucket.noteLag); the write applies the least one (sluice_note_lag).
                SELECT l.q, l.r INTO v_lq, v_lr FROM sluice_least_lag(v_lq, v_lr, st.a - v_now, st.f) l;
            END IF;
            IF r.allowed AND p_costs[i] > 0 THEN
                st := r.st; -- only an admission records: a peek or a denial leaves the state (unconverted) as it was
                v_sw := v_win[i];
                v_writes := true;
                v_window := v_win[i];
            ELSIF NOT r.allowed AND p_atomic AND NOT p_shadows[i] THEN
                v_commit := false;
            END IF;
        END LOOP;
        IF v_writes AND NOT p_atomic AND NOT v_fresh AND NOT v_later THEN
            i := v_order[v_start];
            v_log := st;
            st := sluice_stored_state(v_log);
            SELECT * INTO v_newest, v_expires FROM sluice_expiry(st, v_window);
            IF v_found THEN
                UPDATE sluice_buckets
                SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f,
                    c = st.c, newest_us = v_newest, window_us = v_window, expires_us = v_expires,
                    holds = CASE WHEN v_lq IS NULL THEN holds ELSE sluice_note_lag(holds, v_lq, v_lr) END
                WHERE ctid = v_ctid AND xmin = v_xmin AND policy = p_policies[i] AND key = p_keys[i];
            ELSE
                INSERT INTO sluice_buckets (policy, key, alg, gen, ats, cums, base, a, f, c, newest_us, window_us, expires_us)
                VALUES (p_policies[i], p_keys[i], st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_newest,
                        v_window, v_expires)
                ON CONFLICT DO NOTHING;
            END IF;
            v_writes := NOT FOUND; -- written; or the row changed since it was read: decide it again under its lock
            IF NOT v_writes AND v_log.alg = 'sliding_log' THEN
                PERFORM sluice_write_log(p_policies[i], p_keys[i], v_log, sluice_cutoff(v_now, v_window, v_floor[i]));
            END IF;
        END IF;
        IF v_writes THEN
            v_any := true;
            v_later := true;
            FOR j IN v_start..v_end LOOP
                v_lock[v_order[j]] := true;
            END LOOP;
        END IF;
        v_start := v_end + 1;
    END LOOP;
    IF NOT v_commit OR NOT v_any THEN
        RETURN; -- peeks and denials only (or an atomic batch already denied): no lock taken, nothing written
    END IF;

    -- Phase 2: the pairs that admit are locked in byte order and decided again on the locked row; then, unless an
    -- atomic batch was denied meanwhile, each is written once. The rows stay locked from the decision to the write,
    -- so no subtransaction is needed to undo anything.
    k := 0;
    v_start := 1;
    WHILE v_start <= n LOOP
        i := v_order[v_start];
        v_end := v_start;
        WHILE v_end < n AND p_policies[v_order[v_end + 1]] = p_policies[i] AND p_keys[v_order[v_end + 1]] = p_keys[i] LOOP
            v_end := v_end + 1;
        END LOOP;
        IF v_lock[i] THEN
            v_placeholder := false;
            LOOP
                SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.window_us,
                       CASE WHEN v_conc OR b.alg = 'concurrency' THEN b.holds ELSE '{}' END
                INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_sw, v_holds
                FROM sluice_buckets b WHERE b.policy = p_policies[i] AND b.key = p_keys[i] FOR UPDATE;
                v_found := FOUND;
                EXIT WHEN v_found;
                INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
                VALUES (p_policies[i], p_keys[i], '{}', '{}', 0, 0, '')
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_placeholder := true;
                    st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
                    v_sw := 0;
                    v_holds := '{}';
                    EXIT;
                END IF;
            END LOOP;
            v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
            v_writes := false;
            v_lq := NULL;
            v_lr := NULL;
            IF p_stored[i] AND (st.alg = '' OR st.gen <> v_gen[i]) THEN
                -- The first admission of this generation on the key: its policy is read again now that the row is
                -- locked. A DELETE of the policy that committed meanwhile has had its keys dropped (or will wait
                -- for this lock), so admitting on the empty state would count a deleted generation afresh.
                SELECT p.generation INTO v_pgen FROM sluice_policies p WHERE p.name = p_policies[i];
                IF v_pgen IS DISTINCT FROM v_gen[i] THEN
                    FOR j IN v_start..v_end LOOP
                        IF p_stored[v_order[j]] AND status[v_order[j]] = 0 THEN
                            status[v_order[j]] := 1;
                            allowed[v_order[j]] := false;
                            IF p_atomic THEN
                                v_commit := false;
                            END IF;
                        END IF;
                    END LOOP;
                END IF;
            END IF;
            FOR j IN v_start..v_end LOOP
                i := v_order[j];
                CONTINUE WHEN status[i] <> 0;
                IF p_stored[i] AND st.alg <> '' AND st.gen > v_gen[i] THEN
                    status[i] := 1; -- its generation was deleted while this statement ran (see the header)
                    IF p_atomic THEN
                        v_commit := false;
                    END IF;
                    CONTINUE;
                END IF;
                r := sluice_step(st, v_sw, p_policies[i], p_keys[i], v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i], v_holds);
                IF r.allowed IS NULL THEN
                    status[i] := 3; -- an unknown algorithm, in the rule or in the state: refused, never a default
                    allowed[i] := false; remaining[i] := 0; reset_after_us[i] := 0; retry_after_us[i] := 0;
                    IF p_atomic THEN
                        v_commit := false;
                    END IF;
                    CONTINUE;
                END IF;
                allowed[i] := r.allowed;
                remaining[i] := r.remaining;
                reset_after_us[i] := r.reset_us;
                retry_after_us[i] := r.retry_us;
                IF r.allowed AND p_costs[i] > 0 AND v_alg[i] = 'token_bucket' AND (st.alg = '' OR (st.gen = v_gen[i]
                    AND st.alg = 'token_bucket' AND st.c = v_lim[i] AND v_sw = v_win[i])) THEN
                    -- An admission on the current token bucket: the lag it found bounds the refunds of the key's
                    -- open holds (domain.Bucket.noteLag); the write applies the least one (sluice_note_lag).
                    SELECT l.q, l.r INTO v_lq, v_lr FROM sluice_least_lag(v_lq, v_lr, st.a - v_now, st.f) l;
                END IF;
                IF r.allowed AND p_costs[i] > 0 THEN
                    st := r.st; -- only an admission records: a peek or a denial leaves the state (unconverted) as it was
                    v_sw := v_win[i];
                    v_writes := true;
                    v_window := v_win[i];
                ELSIF NOT r.allowed AND p_atomic AND NOT p_shadows[i] THEN
                    v_commit := false;
                END IF;
            END LOOP;
            k := k + 1;
            v_states[k] := st;
            v_pair[k] := v_order[v_start];
            v_wins[k] := v_window;
            v_nows[k] := v_now;
            v_wrote[k] := v_writes;
            v_ph[k] := v_placeholder;
            v_lqs[k] := v_lq;
            v_lrs[k] := v_lr;
        END IF;
        v_start := v_end + 1;
    END LOOP;
    FOR j IN 1..k LOOP
        i := v_pair[j];
        IF v_wrote[j] AND v_commit THEN
            v_log := v_states[j];
            st := sluice_stored_state(v_log);
            v_window := v_wins[j];
            SELECT * INTO v_newest, v_expires FROM sluice_expiry(st, v_window);
            UPDATE sluice_buckets
            SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f,
                c = st.c, newest_us = v_newest, window_us = v_window, expires_us = v_expires,
                holds = CASE WHEN v_lqs[j] IS NULL THEN holds ELSE sluice_note_lag(holds, v_lqs[j], v_lrs[j]) END
            WHERE policy = p_policies[i] AND key = p_keys[i];
            IF v_log.alg = 'sliding_log' THEN
                PERFORM sluice_write_log(p_policies[i], p_keys[i], v_log, sluice_cutoff(v_nows[j], v_window, v_floor[i]));
            END IF;
        ELSIF v_ph[j] THEN
            DELETE FROM sluice_buckets WHERE policy = p_policies[i] AND key = p_keys[i];
        END IF;
    END LOOP;
END
$$;

-- revision: 3

-- Holds (shared/design.md, "Holds"; domain/hold.go): sluice_apply_batch is domain.Bucket.ApplyHold (and, for a
-- check, Decide) over a batch of operations, one statement, each on its key's sluice_buckets row (its state and its
-- hold records, migration 00005) under the row lock every admitting check of the key takes (sluice_decide_batch),
-- so a hold and the checks of its key are decided one after the other, never interleaved; sluice_hold is one
-- operation. The helpers below are the record rules of domain/hold.go.

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
-- p_window µs, a floor of p_floor and generation p_gen, in their order (another generation's go; once its deadline
-- has passed, a settled one, and any whose units have left the window or were stopped by the floor). The rule
-- depends on p_now and the rule alone, so an operation that writes nothing (a denial answered from the lock-free
-- read) leaves no record another store would have dropped. One pass finds whether any goes: usually none, and then
-- the array is returned as it is, not rebuilt.
DROP FUNCTION IF EXISTS sluice_prune_holds(sluice_hold[], bigint, bigint, bigint);
CREATE OR REPLACE FUNCTION sluice_prune_holds(p_holds sluice_hold[], p_now bigint, p_window bigint, p_floor bigint,
    p_gen bigint)
RETURNS sluice_hold[] LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    h      sluice_hold;
    v_drop boolean := false;
    v_out  sluice_hold[] := '{}';
BEGIN
    IF coalesce(cardinality(p_holds), 0) = 0 THEN
        RETURN '{}';
    END IF;
    FOREACH h IN ARRAY p_holds LOOP
        IF h.gen <> p_gen OR (p_now >= h.expires AND (h.settled OR p_now >= h.at + p_window OR h.at <= p_floor)) THEN
            v_drop := true;
            EXIT;
        END IF;
    END LOOP;
    IF NOT v_drop THEN
        RETURN p_holds;
    END IF;
    FOREACH h IN ARRAY p_holds LOOP
        IF NOT (h.gen <> p_gen OR (p_now >= h.expires AND (h.settled OR p_now >= h.at + p_window OR h.at <= p_floor))) THEN
            v_out := v_out || h;
        END IF;
    END LOOP;
    RETURN v_out;
END
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
-- settled ones in the key's list (acquisition order) kept; the settled records before them are dropped. A settle
-- adds at most one settled record, so usually one goes: the array is cut around it, not rebuilt record by record.
CREATE OR REPLACE FUNCTION sluice_trim_settled(p_holds sluice_hold[]) RETURNS sluice_hold[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n      int := coalesce(cardinality(p_holds), 0);
    v_drop int := -16;
    v_cut  int;
    v_out  sluice_hold[] := '{}';
BEGIN
    FOR i IN 1..n LOOP
        IF (p_holds[i]).settled THEN
            v_drop := v_drop + 1;
        END IF;
    END LOOP;
    IF v_drop <= 0 THEN
        RETURN p_holds;
    END IF;
    v_cut := 1;
    FOR i IN 1..n LOOP
        IF (p_holds[i]).settled AND v_drop > 0 THEN
            v_out := v_out || p_holds[v_cut:i - 1];
            v_cut := i + 1;
            v_drop := v_drop - 1;
            EXIT WHEN v_drop = 0;
        END IF;
    END LOOP;
    RETURN v_out || p_holds[v_cut:n];
END
$$;

-- sluice_hold applies one hold operation (p_op: 1 acquire, 2 settle, 3 renew, 4 release anonymous holds; the
-- domain.HoldOp codes) to (p_policy, p_key) at p_now_us (NULL: the database clock), exactly as
-- domain.Bucket.ApplyHold: one statement, one round trip. p_amount is the amount to acquire, settle to, or release;
-- p_ttl_us the acquire's or renewal's TTL (0 or past the window: the window). The rule is the caller's, or with
-- p_stored the API policy as the database holds it once the row is locked (status 1 when it is gone, 2 when an
-- acquire's amount is over its limit), as sluice_decide_batch decides a stored check. The results are the
-- decision (status and the fields; for a settle, renewal or release, a peek after it), the hold as it is after the
-- operation (hold_id .. settled), hold_status (domain.HoldStatus) and the overdraft.
--
-- An acquire that the key's committed state denies is answered from a lock-free read (no lock, nothing written).
-- Anything else is a batch of one: sluice_apply_batch (below) locks the key's row and applies the operation.
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
    r        sluice_step;
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
            v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_floor, v_gen);
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
    END IF;

    SELECT b.status[1], b.allowed[1], b.lim[1], b.remaining[1], b.reset_after_us[1], b.retry_after_us[1],
           b.hold_status[1], b.hold_id[1], b.amount[1], b.at_us[1], b.expires_us[1], b.settled[1], b.overdraft[1]
    INTO status, allowed, lim, remaining, reset_after_us, retry_after_us, hold_status, hold_id, amount, at_us,
         expires_us, settled, overdraft
    FROM sluice_apply_batch(ARRAY[p_policy], ARRAY[p_key], ARRAY[p_op], ARRAY[p_id], ARRAY[p_amount], ARRAY[p_ttl_us],
                            ARRAY[p_alg], ARRAY[p_limit], ARRAY[p_window_us], ARRAY[p_res_us], ARRAY[p_floor_us],
                            ARRAY[p_gen], ARRAY[p_stored], p_now_us, NULL) b;
END
$$;

-- sluice_apply_batch applies checks and hold operations in one statement (one round trip, one transaction): op i
-- is p_ops[i] (0 a check of cost p_amounts[i], decided as sluice_decide_batch decides it; 1-4 a hold operation, as
-- domain.Bucket.ApplyHold: 1 acquire, 2 settle, 3 renew, 4 release anonymous holds) on (p_policies[i], p_keys[i])
-- with the rule of index i (or, with p_stored[i], the API policy as the database holds it once the key's row is
-- locked: status 1 when it is gone, 2 when a check's cost or an acquire's amount is over its limit). Each op is
-- applied atomically on its key and sees what the ops before it recorded; the batch as a whole is not atomic, and
-- one op's outcome (a denial, an unknown hold, a stale generation: status 1 for a stored check or any hold
-- operation, as Decide and Hold refuse it; an invalid rule or op: status 3) is its own result, never an error.
-- The results are arrays, one element per op: the decision (for a check, its own; for an acquire, its own; for a
-- settle, renewal or release, a peek after it), the hold as it is after the operation (hold_id .. settled; empty
-- for a check), hold_status (domain.HoldStatus; 0 for a check) and the overdraft (a settle's).
--
-- Locking: the ops' keys are taken in byte order of (policy, key), the one order sluice_decide_batch locks in, so
-- concurrent batches (and decide batches) never deadlock. Each key's row is locked (FOR UPDATE; a placeholder row is
-- inserted when an acquire or a check of cost > 0 finds none, and deleted again if nothing is kept), read once, its
-- ops applied to it in request order (the ops of different keys are independent, so applying them key by key
-- equals applying them in request order), and written once, only when anything changed: the state (an admission,
-- a settle's adjust or forced excess), the records (pruned and trimmed as the domain prunes and trims them, at the
-- same operations) and the janitor's holds_until and holds_at. The clock is read once per key, after its lock.
-- A sliding_log key's entries (sluice_log_entries) change in place: an admission's entry (a check's or an
-- acquire's) is written (sluice_write_log) at the key's end, as sluice_decide_batch writes them, or before a
-- settle that reads or moves it; a forced excess's at once; a settle moves the cums of its entry and every later one by the
-- difference, and an entry left with no unit is deleted (domain's adjustLog). A batch that
-- changes nothing (replays, conflicts, denials, peeks) sets synchronous_commit off for its transaction: it only
-- locked rows, and nothing it did must survive a crash.
--
-- With p_lock_wait_ms, a row locked by another session for longer fails the whole statement with SQLSTATE 55P03,
-- recording nothing (the coalescer's lanes then re-send per key).
CREATE OR REPLACE FUNCTION sluice_apply_batch(
    p_policies text[], p_keys bytea[], p_ops smallint[], p_ids bytea[], p_amounts bigint[], p_ttls_us bigint[],
    p_algs text[], p_limits bigint[], p_windows_us bigint[], p_res_us bigint[], p_floors_us bigint[], p_gens bigint[],
    p_stored boolean[], p_now_us bigint, p_lock_wait_ms integer,
    OUT status smallint[], OUT allowed boolean[], OUT lim bigint[], OUT remaining bigint[],
    OUT reset_after_us bigint[], OUT retry_after_us bigint[], OUT hold_status smallint[], OUT hold_id bytea[],
    OUT amount bigint[], OUT at_us bigint[], OUT expires_us bigint[], OUT settled boolean[], OUT overdraft bigint[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    nops     int := cardinality(p_policies);
    v_order  int[];
    g_start  int;
    g_end    int;
    j        int;
    v_i      int;
    v_op     smallint;
    v_id     bytea;
    v_amount bigint;
    v_ttlp   bigint;
    v_policy text;
    v_key    bytea;
    v_stored boolean;   -- an op of the key is stored: the policy is read under the key's lock
    v_pfound boolean;
    v_needph boolean;   -- an op of the key may record: a key without a row gets a placeholder
    v_dirty  boolean;   -- a check's sliding_log admission not written to sluice_log_entries yet
    v_cut    bigint;
    v_wrote  boolean := false;
    v_now    bigint;
    v_alg    text;
    v_lim    bigint;
    v_win    bigint;
    v_res    bigint;
    v_floor  bigint;
    v_gen    bigint;
    pr       record;
    st       sluice_state;
    v_sw     bigint;
    v_holds  sluice_hold[];
    v_found  boolean;
    v_ph     boolean;
    r        sluice_step;
    h        sluice_hold;
    k        int;
    n        int;
    v_peek   boolean;  -- the decision is a peek after the operation
    v_od     boolean;  -- the overdraft is reported
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
    v_trim   boolean;  -- a settle succeeded: the settled records are trimmed (domain.MaxSettledKept)
    v_pwin   bigint;   -- the key's records are pruned at v_now under window v_pwin, floor v_pfl and generation v_pgen
    v_pfl    bigint;
    v_pgen   bigint;
    v_prunable boolean; -- an operation since then left a record pruning drops
    hh       sluice_hold;
    v_lq     bigint;   -- the lag an admission found (domain.Bucket.noteLag)
    v_lr     bigint;
    v_nlq    bigint;   -- every open token_bucket record's refund bound is at most v_nlq + v_nlr/c, but for the
    v_nlr    bigint;   -- v_nltail records appended since (NULL: not known)
    v_nltail int;
    v_from   int;
    v_nset   int;      -- the key's settled records (NULL: not counted since the records were last rebuilt)
    v_wasset boolean;  -- the record the operation names was settled before it
    v_cutout sluice_hold[];
    v_ex     record;
    o_status smallint;
    o_allowed boolean;
    o_lim    bigint;
    o_remaining bigint;
    o_reset_after_us bigint;
    o_retry_after_us bigint;
    o_hold_status smallint;
    o_hold_id bytea;
    o_amount bigint;
    o_at_us  bigint;
    o_expires_us bigint;
    o_settled boolean;
    o_overdraft bigint;
BEGIN
    IF cardinality(p_keys) <> nops OR cardinality(p_ops) <> nops OR cardinality(p_ids) <> nops
        OR cardinality(p_amounts) <> nops OR cardinality(p_ttls_us) <> nops OR cardinality(p_algs) <> nops
        OR cardinality(p_limits) <> nops OR cardinality(p_windows_us) <> nops OR cardinality(p_res_us) <> nops
        OR cardinality(p_floors_us) <> nops OR cardinality(p_gens) <> nops OR cardinality(p_stored) <> nops THEN
        RAISE EXCEPTION 'sluice_apply_batch: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    IF p_lock_wait_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_lock_wait_ms, 1)::text, true);
    END IF;
    status := array_fill(0::smallint, ARRAY[nops]);
    allowed := array_fill(false, ARRAY[nops]);
    lim := array_fill(0::bigint, ARRAY[nops]);
    remaining := lim; reset_after_us := lim; retry_after_us := lim; amount := lim; at_us := lim; expires_us := lim;
    overdraft := lim;
    hold_status := status;
    settled := allowed;
    hold_id := array_fill('\x'::bytea, ARRAY[nops]);
    IF nops = 0 THEN
        RETURN;
    ELSIF nops = 1 THEN
        v_order := ARRAY[1];
    ELSE
        SELECT array_agg(u.i ORDER BY u.p COLLATE "C", u.k, u.i) INTO v_order
        FROM unnest(p_policies, p_keys) WITH ORDINALITY AS u(p, k, i);
    END IF;

    g_start := 1;
    WHILE g_start <= nops LOOP
        v_i := v_order[g_start];
        v_policy := p_policies[v_i];
        v_key := p_keys[v_i];
        v_stored := false;
        v_needph := false;
        g_end := g_start - 1;
        LOOP
            v_i := v_order[g_end + 1];
            v_stored := v_stored OR coalesce(p_stored[v_i], false);
            v_needph := v_needph OR p_ops[v_i] = 1 OR (p_ops[v_i] = 0 AND p_amounts[v_i] > 0);
            g_end := g_end + 1;
            EXIT WHEN g_end = nops OR p_policies[v_order[g_end + 1]] IS DISTINCT FROM v_policy
                OR p_keys[v_order[g_end + 1]] IS DISTINCT FROM v_key;
        END LOOP;

        -- The key's row, locked: a key without one gets a placeholder when an op may record (deleted below if
        -- nothing is kept).
        v_found := false;
        v_ph := false;
        IF v_policy IS NOT NULL AND v_key IS NOT NULL THEN
            LOOP
                SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.window_us, b.holds
                INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_sw, v_holds
                FROM sluice_buckets b WHERE b.policy = v_policy AND b.key = v_key FOR UPDATE;
                v_found := FOUND;
                EXIT WHEN v_found OR NOT v_needph;
                INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
                VALUES (v_policy, v_key, '{}', '{}', 0, 0, '')
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_ph := true;
                    v_wrote := true;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF NOT v_found THEN
            st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
            v_sw := 0;
            v_holds := '{}';
        END IF;
        v_st0 := st;
        v_sw0 := v_sw;
        v_h0 := v_holds;
        v_dirty := false;
        v_pwin := NULL; v_pfl := NULL; v_pgen := NULL; v_prunable := false;
        v_nlq := NULL; v_nlr := NULL; v_nltail := 0;
        v_nset := NULL;
        v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
        -- The stored policy, read once the row is locked (a DELETE that committed before has dropped its keys or
        -- waits for this lock).
        v_pfound := false;
        IF v_stored THEN
            SELECT p.algorithm, p.quota, p.window_ms, p.resolution_ms, p.floor_us, p.generation INTO pr
            FROM sluice_policies p WHERE p.name = v_policy;
            v_pfound := FOUND;
        END IF;

        FOR j IN g_start..g_end LOOP
            v_i := v_order[j];
            v_op := p_ops[v_i]; v_id := p_ids[v_i]; v_amount := p_amounts[v_i]; v_ttlp := p_ttls_us[v_i];
            v_alg := p_algs[v_i]; v_lim := p_limits[v_i]; v_win := p_windows_us[v_i]; v_res := p_res_us[v_i];
            v_floor := p_floors_us[v_i]; v_gen := p_gens[v_i];
            o_status := 0; o_allowed := false; o_lim := coalesce(v_lim, 0); o_remaining := 0; o_reset_after_us := 0;
            o_retry_after_us := 0; o_hold_status := 0; o_hold_id := '\x'::bytea; o_amount := 0; o_at_us := 0;
            o_expires_us := 0; o_settled := false; o_overdraft := 0;
            k := 0; v_peek := true; v_od := false; v_trim := false; v_wasset := false;
            <<op>>
            BEGIN
                IF v_op IS NULL OR v_op NOT IN (0, 1, 2, 3, 4) OR v_policy IS NULL OR v_key IS NULL
                    OR (v_op <> 0 AND (v_id IS NULL OR v_amount IS NULL OR v_amount < 0 OR (v_op = 1 AND v_amount < 1))) THEN
                    o_status := 3; o_hold_status := 2; -- domain.ApplyHold's answer to an operation it does not know
                    EXIT op;
                END IF;
                IF p_stored[v_i] THEN
                    IF NOT v_pfound THEN
                        o_status := 1;
                        EXIT op;
                    END IF;
                    v_alg := pr.algorithm; v_lim := pr.quota; v_win := pr.window_ms * 1000;
                    v_res := pr.resolution_ms * 1000; v_floor := pr.floor_us; v_gen := pr.generation;
                    o_lim := v_lim;
                END IF;

                IF v_op = 0 THEN
                    -- A check, as sluice_decide_batch decides it on the locked row.
                    IF v_lim IS NULL OR v_lim < 1 OR v_lim > 9007199254740991 OR v_win IS NULL OR v_win < 1000000
                        OR v_win > 2678400000000 OR v_win % 1000 <> 0 OR v_amount IS NULL OR v_amount < 0
                        OR v_floor IS NULL OR v_gen IS NULL THEN
                        o_status := 3;
                    ELSIF v_amount > v_lim THEN
                        o_status := 2;
                    ELSIF p_stored[v_i] AND st.alg <> '' AND st.gen > v_gen THEN
                        o_status := 1; -- its generation was deleted and re-created: refused, as Decide refuses it
                    END IF;
                    EXIT op WHEN o_status <> 0;
                    r := sluice_step(st, v_sw, v_policy, v_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen,
                                     v_amount, v_holds);
                    IF r.allowed IS NULL THEN
                        o_status := 3; -- an unknown algorithm, in the rule or in the state
                        EXIT op;
                    END IF;
                    o_allowed := r.allowed; o_remaining := r.remaining; o_reset_after_us := r.reset_us;
                    o_retry_after_us := r.retry_us;
                    IF r.allowed AND v_amount > 0 THEN
                        IF v_alg = 'token_bucket' AND cardinality(v_holds) > 0 AND (st.alg = '' OR (st.gen = v_gen
                            AND st.alg = 'token_bucket' AND st.c = v_lim AND v_sw = v_win)) THEN
                            -- domain.Bucket.noteLag: the lag this admission found (sluice_least_lag)
                            -- lowers the refund bound of the open token_bucket records (sluice_note_lag).
                            -- Every bound is at most the lag noted last (v_nlq, v_nlr) but those of the
                            -- records appended since (v_nltail): a lag no lower can lower only those.
                            v_lq := greatest(st.a - v_now, 0);
                            v_lr := CASE WHEN st.a < v_now THEN 0 ELSE st.f END;
                            IF v_nlq IS NULL OR v_lq < v_nlq OR (v_lq = v_nlq AND v_lr < v_nlr) THEN
                                v_from := 1;
                            ELSE
                                v_from := cardinality(v_holds) - v_nltail + 1;
                            END IF;
                            v_nlq := v_lq; v_nlr := v_lr; v_nltail := 0;
                            FOR i IN greatest(v_from, 1)..coalesce(cardinality(v_holds), 0) LOOP
                                hh := v_holds[i];
                                IF hh.alg = 'token_bucket' AND NOT hh.settled
                                    AND (v_lq < hh.mq OR (v_lq = hh.mq AND v_lr < hh.mr)) THEN
                                    hh.mq := v_lq; hh.mr := v_lr;
                                    v_holds[i] := hh;
                                END IF;
                            END LOOP;
                        END IF;
                        st := r.st; -- only an admission records: a peek or a denial leaves the state as it was
                        v_sw := v_win;
                        IF st.alg = 'sliding_log' THEN
                            v_dirty := true;
                            v_cut := sluice_cutoff(v_now, v_win, v_floor);
                        END IF;
                    END IF;
                    EXIT op;
                END IF;

                -- A hold operation (domain.Bucket.ApplyHold). The operations read the log as a check does
                -- (sluice_step: the newest entry may be the state's alone); a settle writes it first (below) unless
                -- it moves only entries before the newest.
                IF v_lim IS NULL OR v_lim < 1 OR v_lim > 9007199254740991 OR v_win IS NULL OR v_win < 1000000
                    OR v_win > 2678400000000 OR v_win % 1000 <> 0 OR v_floor IS NULL OR v_gen IS NULL
                    OR v_alg NOT IN ('sliding_log', 'sliding_window', 'token_bucket', 'fixed_window', 'concurrency') THEN
                    o_status := 3; o_hold_status := CASE WHEN v_op = 1 THEN 0 ELSE 2 END;
                ELSIF v_op = 1 AND v_amount > v_lim THEN
                    o_status := 2;
                ELSIF st.alg <> '' AND st.gen > v_gen THEN
                    o_status := 1; o_hold_status := 2; -- a stale generation: refused as Decide refuses it, nothing pruned
                END IF;
                EXIT op WHEN o_status <> 0;

                IF v_op <> 4 THEN
                    IF v_prunable OR v_pwin IS DISTINCT FROM v_win OR v_pfl IS DISTINCT FROM v_floor
                        OR v_pgen IS DISTINCT FROM v_gen THEN
                        v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_floor, v_gen);
                        v_nset := NULL;
                        v_pwin := v_win; v_pfl := v_floor; v_pgen := v_gen; v_prunable := false;
                    END IF;
                    n := cardinality(v_holds);
                    -- The pruned records are all of v_gen, so an id is held at most once: searched from the newest,
                    -- which a settle or renewal most often names.
                    FOR i IN REVERSE n..1 LOOP
                        IF (v_holds[i]).id = v_id AND (v_holds[i]).gen = v_gen THEN
                            k := i;
                            v_wasset := (v_holds[i]).settled;
                            EXIT;
                        END IF;
                    END LOOP;
                END IF;

                IF v_op = 1 THEN
                    -- Acquire (domain.Bucket.Acquire).
                    IF k > 0 THEN
                        h := v_holds[k];
                        o_hold_status := CASE WHEN h.reserved <> v_amount THEN 3 ELSE 1 END;
                    ELSE
                        IF cardinality(v_holds) >= 1024 THEN -- domain.MaxHolds
                            v_holds := sluice_drop_closed(v_holds, v_now);
                            v_nset := NULL;
                        END IF;
                        IF cardinality(v_holds) >= 1024 THEN
                            o_hold_status := 6;
                        ELSE
                            v_peek := false;
                            r := sluice_step(st, v_sw, v_policy, v_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, v_amount,
                                             v_holds, true);
                            IF r.allowed IS NULL THEN
                                o_status := 3;
                            ELSE
                                o_allowed := r.allowed; o_remaining := r.remaining; o_reset_after_us := r.reset_us;
                                o_retry_after_us := r.retry_us;
                            END IF;
                            IF r.allowed THEN
                                IF v_alg = 'token_bucket' AND (st.alg = '' OR (st.gen = v_gen AND st.alg = 'token_bucket'
                                                               AND st.c = v_lim AND v_sw = v_win)) THEN
                                    -- domain.Bucket.noteLag: the lag this admission found (sluice_least_lag)
                                    -- lowers the refund bound of the open token_bucket records (sluice_note_lag).
                                    -- Every bound is at most the lag noted last (v_nlq, v_nlr) but those of the
                                    -- records appended since (v_nltail): a lag no lower can lower only those.
                                    v_lq := greatest(st.a - v_now, 0);
                                    v_lr := CASE WHEN st.a < v_now THEN 0 ELSE st.f END;
                                    IF v_nlq IS NULL OR v_lq < v_nlq OR (v_lq = v_nlq AND v_lr < v_nlr) THEN
                                        v_from := 1;
                                    ELSE
                                        v_from := cardinality(v_holds) - v_nltail + 1;
                                    END IF;
                                    v_nlq := v_lq; v_nlr := v_lr; v_nltail := 0;
                                    FOR i IN greatest(v_from, 1)..coalesce(cardinality(v_holds), 0) LOOP
                                        hh := v_holds[i];
                                        IF hh.alg = 'token_bucket' AND NOT hh.settled
                                            AND (v_lq < hh.mq OR (v_lq = hh.mq AND v_lr < hh.mr)) THEN
                                            hh.mq := v_lq; hh.mr := v_lr;
                                            v_holds[i] := hh;
                                        END IF;
                                    END LOOP;
                                END IF;
                                st := r.st;
                                v_sw := v_win;
                                IF st.alg = 'sliding_log' THEN
                                    -- The entry is written before the key's next settle, or at its end.
                                    v_dirty := true;
                                    v_cut := sluice_cutoff(v_now, v_win, v_floor);
                                END IF;
                                v_ttl := CASE WHEN v_ttlp <= 0 OR v_ttlp > v_win THEN v_win ELSE v_ttlp END;
                                v_at := v_now;
                                IF v_alg = 'sliding_window' THEN
                                    v_at := v_now + (v_res - v_now % v_res) % v_res;
                                END IF;
                                h := ROW(v_id, v_amount, v_at, v_now + v_ttl, false, v_amount, v_gen, v_alg, 0, 0, 0, 0)::sluice_hold;
                                IF v_alg = 'token_bucket' THEN
                                    h.c := v_lim; h.w := v_win; h.mq := 8796093022208; -- past any window (domain.maxTatLead)
                                END IF;
                                v_holds := v_holds || h;
                                v_nltail := v_nltail + 1;
                                k := cardinality(v_holds);
                                IF v_alg = 'concurrency' THEN
                                    o_reset_after_us := greatest(o_reset_after_us, v_ttl); -- the new hold's units are back then
                                END IF;
                            END IF;
                        END IF;
                    END IF;
                ELSIF v_op = 2 AND k > 0 THEN
                    -- Settle (domain.Bucket.Settle).
                    h := v_holds[k];
                    v_cur := st.alg = h.alg AND st.gen = h.gen AND (h.alg <> 'token_bucket' OR (st.c = h.c AND v_sw = h.w));
                    IF v_dirty AND NOT (v_cur AND h.alg = 'sliding_log' AND st.c = 1 AND h.at < st.a) THEN
                        -- The settle reads or writes the newest entry, or converts: the log is written first. A
                        -- settle of an earlier entry moves it and the later ones in the table and the newest one
                        -- in the state (st.f), which is written with its new cum.
                        PERFORM sluice_write_log(v_policy, v_key, st, v_cut);
                        st := sluice_stored_state(st);
                        v_dirty := false;
                    END IF;
                    IF v_alg = 'concurrency' AND v_cur THEN
                        IF h.settled AND v_amount = 0 THEN
                            o_hold_status := 1; v_od := true;
                        ELSIF h.settled THEN
                            o_hold_status := 3;
                        ELSIF v_now >= h.expires THEN
                            o_hold_status := 4;
                        ELSE
                            h.amount := v_amount; h.settled := v_amount = 0;
                            v_holds[k] := h;
                            v_od := true;
                            v_trim := true;
                        END IF;
                    ELSIF h.settled THEN
                        IF h.amount = v_amount THEN
                            o_hold_status := 1; v_od := true;
                        ELSE
                            o_hold_status := 3;
                        END IF;
                    ELSE
                        v_delta := v_amount - h.amount;
                        IF v_delta < 0 AND NOT v_cur THEN
                            o_hold_status := 5;
                        ELSIF v_delta < 0 AND v_now >= h.expires THEN
                            o_hold_status := 4;
                        ELSE
                            IF v_delta <> 0 AND NOT v_cur THEN
                                -- The units were converted: the excess is recorded at now under the rule in force, on the state
                                -- converted first as an admission would (domain.Bucket.forceRecord).
                                IF st.alg <> '' AND NOT (st.gen = v_gen AND st.alg = v_alg
                                        AND (v_alg <> 'token_bucket' OR (st.c = v_lim AND v_sw = v_win))
                                        AND (v_alg <> 'fixed_window' OR v_sw = v_win)) THEN
                                    r := sluice_step(st, v_sw, v_policy, v_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, 0,
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
                                    PERFORM sluice_write_log(v_policy, v_key, st, sluice_cutoff(v_now, v_win, v_floor));
                                    st := sluice_stored_state(st);
                                END IF;
                            ELSIF v_delta <> 0 THEN
                                -- The algorithm's adjust, on the state that still holds the units where h recorded them.
                                CASE h.alg
                                    WHEN 'sliding_log', 'sliding_window' THEN
                                        IF h.alg = 'sliding_log' AND st.c = 1 THEN
                                            SELECT e.cum INTO v_c1 FROM sluice_log_entries e
                                            WHERE e.policy = v_policy AND e.key = v_key AND e.at = h.at;
                                            IF FOUND THEN
                                                v_prev := coalesce((SELECT e.cum FROM sluice_log_entries e
                                                                    WHERE e.policy = v_policy AND e.key = v_key AND e.at < h.at
                                                                    ORDER BY e.at DESC LIMIT 1), st.base);
                                                v_units := v_c1 - v_prev;
                                                v_delta := greatest(v_delta, -v_units);
                                                UPDATE sluice_log_entries SET cum = cum + v_delta
                                                WHERE policy = v_policy AND key = v_key AND at >= h.at;
                                                st.f := st.f + v_delta;
                                                IF v_units + v_delta <= 0 THEN
                                                    DELETE FROM sluice_log_entries WHERE policy = v_policy AND key = v_key AND at = h.at;
                                                    IF st.a = h.at THEN
                                                        st.a := coalesce((SELECT max(e.at) FROM sluice_log_entries e
                                                                          WHERE e.policy = v_policy AND e.key = v_key), st.a);
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
                            h.amount := v_amount; h.settled := true;
                            v_holds[k] := h;
                            v_od := true;
                            v_trim := true;
                        END IF;
                    END IF;
                ELSIF v_op = 3 AND k > 0 THEN
                    -- Renew (domain.Bucket.Renew).
                    h := v_holds[k];
                    IF h.settled THEN
                        o_hold_status := 3;
                    ELSIF v_now >= h.expires THEN
                        o_hold_status := 4;
                    ELSE
                        h.expires := v_now + CASE WHEN v_ttlp <= 0 OR v_ttlp > v_win THEN v_win ELSE v_ttlp END;
                        v_holds[k] := h;
                    END IF;
                ELSIF v_op = 4 THEN
                    -- Anonymous holds released by count, the earliest first (domain.Bucket.releaseAnonymous), under
                    -- concurrency on its current state only.
                    IF v_alg <> 'concurrency' OR (st.alg <> '' AND NOT (st.alg = 'concurrency' AND st.gen = v_gen)) THEN
                        o_hold_status := 2;
                    ELSE
                        IF v_prunable OR v_pwin IS DISTINCT FROM v_win OR v_pfl IS DISTINCT FROM v_floor
                        OR v_pgen IS DISTINCT FROM v_gen THEN
                            v_holds := sluice_prune_holds(v_holds, v_now, v_win, v_floor, v_gen);
                            v_nset := NULL;
                            v_pwin := v_win; v_pfl := v_floor; v_pgen := v_gen; v_prunable := false;
                        END IF;
                        v_back := 0;
                        FOR i IN 1..coalesce(cardinality(v_holds), 0) LOOP
                            EXIT WHEN v_back >= v_amount;
                            h := v_holds[i];
                            CONTINUE WHEN h.gen <> v_gen OR length(h.id) = 0 OR get_byte(h.id, 0) <> 0 OR h.settled
                                OR v_now >= h.expires;
                            v_give := least(h.amount, v_amount - v_back);
                            h.amount := h.amount - v_give;
                            h.settled := h.amount = 0;
                            v_holds[i] := h;
                            v_back := v_back + v_give;
                        END LOOP;
                        v_holds := sluice_trim_settled(v_holds);
                        v_nset := NULL;
                        o_amount := v_back;
                        IF v_back = 0 THEN
                            o_hold_status := 2;
                        END IF;
                    END IF;
                    k := 0;
                ELSE
                    o_hold_status := 2; -- a settle or renewal of an id the key does not hold
                END IF;

                IF k > 0 AND (v_holds[k]).settled AND v_now >= (v_holds[k]).expires THEN
                    v_prunable := true; -- settled past its deadline: the key's next operation prunes it
                END IF;
                IF k > 0 AND o_hold_status <> 6 AND NOT (v_op = 1 AND NOT o_allowed AND o_hold_status = 0) THEN
                    h := v_holds[k];
                    o_hold_id := h.id; o_amount := h.amount; o_at_us := h.at; o_expires_us := h.expires; o_settled := h.settled;
                END IF;
                IF v_trim THEN
                    -- The settled records trimmed to the last 16 (sluice_trim_settled), after the hold is reported:
                    -- it may be the record dropped. The key's count of settled records is kept (v_nset) while only
                    -- settles change it, so a settle costs no count of them.
                    n := cardinality(v_holds);
                    IF v_nset IS NULL THEN
                        v_nset := 0;
                        FOR i IN 1..n LOOP
                            IF (v_holds[i]).settled THEN
                                v_nset := v_nset + 1;
                            END IF;
                        END LOOP;
                    ELSIF (v_holds[k]).settled AND NOT v_wasset THEN
                        v_nset := v_nset + 1;
                    END IF;
                    IF v_nset > 16 THEN -- domain.MaxSettledKept
                        v_back := v_nset - 16;
                        v_nset := 16;
                        v_q := 1;
                        v_cutout := '{}';
                        FOR i IN 1..n LOOP
                            IF (v_holds[i]).settled THEN
                                v_cutout := v_cutout || v_holds[v_q:i - 1];
                                v_q := i + 1;
                                v_back := v_back - 1;
                                EXIT WHEN v_back = 0;
                            END IF;
                        END LOOP;
                        v_holds := v_cutout || v_holds[v_q:n];
                    END IF;
                END IF;
                IF v_od AND st.alg <> '' AND st.gen = v_gen AND st.alg = v_alg
                    AND (v_alg <> 'token_bucket' OR (st.c = v_lim AND v_sw = v_win)) AND (v_alg <> 'fixed_window' OR v_sw = v_win) THEN
                    v_units := (sluice_units(st, v_sw, v_policy, v_key, v_now, v_win, v_floor, v_holds)).units;
                    o_overdraft := greatest(coalesce(v_units, 0) - v_lim, 0);
                END IF;
                IF v_peek THEN
                    r := sluice_step(st, v_sw, v_policy, v_key, v_now, v_alg, v_lim, v_win, v_res, v_floor, v_gen, 0, v_holds);
                    IF r.allowed IS NULL THEN
                        o_status := 3; o_allowed := false;
                    ELSE
                        o_allowed := r.allowed; o_remaining := r.remaining; o_reset_after_us := r.reset_us; o_retry_after_us := r.retry_us;
                    END IF;
                END IF;

            END;
            status[v_i] := o_status; allowed[v_i] := o_allowed; lim[v_i] := o_lim; remaining[v_i] := o_remaining;
            reset_after_us[v_i] := o_reset_after_us; retry_after_us[v_i] := o_retry_after_us;
            hold_status[v_i] := o_hold_status; hold_id[v_i] := o_hold_id; amount[v_i] := o_amount;
            at_us[v_i] := o_at_us; expires_us[v_i] := o_expires_us; settled[v_i] := o_settled;
            overdraft[v_i] := o_overdraft;
        END LOOP;

        -- The key's row, written once when anything changed: or the placeholder deleted when nothing is kept.
        IF v_dirty THEN
            PERFORM sluice_write_log(v_policy, v_key, st, v_cut);
            st := sluice_stored_state(st);
        END IF;
        IF v_found AND st IS NOT DISTINCT FROM v_st0 AND v_sw IS NOT DISTINCT FROM v_sw0
            AND v_holds IS NOT DISTINCT FROM v_h0 THEN
            NULL; -- replays, conflicts, peeks, denials that pruned nothing: the row stays as it is
        ELSIF st.alg = '' AND cardinality(v_holds) = 0 THEN
            IF v_ph THEN
                DELETE FROM sluice_buckets WHERE policy = v_policy AND key = v_key;
            ELSIF v_found THEN
                UPDATE sluice_buckets SET holds = '{}', holds_until = 0, holds_at = 0
                WHERE policy = v_policy AND key = v_key;
                v_wrote := true;
            END IF;
        ELSIF v_found OR v_ph THEN
            v_newest := 0;
            v_exp := 0;
            IF st.alg <> '' THEN
                v_ex := sluice_expiry(st, v_sw); -- an expression, not a query
                v_newest := v_ex.newest_us;
                v_exp := v_ex.expires_us;
            END IF;
            v_until := NULL;
            v_hat := NULL;
            FOREACH hh IN ARRAY v_holds LOOP
                IF hh.gen = st.gen THEN
                    v_until := greatest(v_until, hh.expires);
                    IF NOT hh.settled THEN
                        v_hat := greatest(v_hat, hh.at);
                    END IF;
                END IF;
            END LOOP;
            v_until := coalesce(v_until, 0);
            v_hat := coalesce(v_hat, 0);
            UPDATE sluice_buckets
            SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f, c = st.c,
                newest_us = v_newest, window_us = v_sw, expires_us = v_exp, holds = v_holds, holds_until = v_until,
                holds_at = v_hat
            WHERE policy = v_policy AND key = v_key;
            v_wrote := true;
        END IF;
        g_start := g_end + 1;
    END LOOP;
    IF NOT v_wrote THEN
        -- Nothing was written: the transaction only locked rows, so its commit need not wait for the WAL flush.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

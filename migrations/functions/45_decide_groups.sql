-- revision: 1

-- sluice_decide_groups decides several callers' batches ("groups") in one statement, so one transaction and one
-- commit: the coalescer's lanes send it when a lane's batch holds an atomic batch (every Envoy RLS request, an
-- atomic /v1/checks). The checks are the arrays of sluice_decide_batch, all groups one after another; p_ends[g]
-- is the (1-based, inclusive) index of group g's last check and p_atomic[g] says whether group g is atomic.
-- Each group is decided exactly as sluice_decide_batch decides it alone (it is called for it), in group order,
-- each seeing what the groups before it recorded: an atomic group records its checks only if every non-shadow
-- check is admitted, its decisions as evaluated in order, whatever the other groups' outcomes; a non-atomic group
-- records each admitted check. The results are the groups' results, concatenated in the same order.
--
-- First, optimistically, every check is decided as ONE non-atomic sluice_decide_batch (its lock-free reads, its
-- writes straight from the read, its byte-order locking), inside a subtransaction: when every atomic group's checks
-- all come back admitted (status 0, allowed, or denied in shadow), that is exactly what deciding the groups one
-- after another gives (each check sees the same units, in the same order; every atomic group records all its
-- checks), and the statement is done. Otherwise that attempt is rolled back (its writes and its row locks) and the
-- groups are decided one by one as below. Busy workloads whose atomic batches admit pay one subtransaction for
-- the whole statement; an atomic batch denied costs the statement the attempt and the slow path.
--
-- A single group skips all this: it is sent straight to sluice_decide_batch (atomic or not, as it says).
--
-- Locking (the slow path): sluice_decide_batch locks in byte order of (policy, key) within its batch, but a second
-- group locking a key that sorts before one the first group locked would break that order across the statement
-- (and meet a concurrent batch in a deadlock). So every (policy, key) that any check with a cost could write is
-- locked first, in byte order across the whole statement (a pair without a row gets a placeholder inserted in that
-- order, deleted again at the end if nothing was recorded on it); the groups' own calls then only meet locks this
-- statement already holds. A pair the groups only peek is never locked. The price is that such a pair is locked
-- even when every group is denied on it (a lone sluice_decide_batch decides that from a lock-free read).
--
-- With p_lock_wait_ms, a row locked by another session for longer fails the whole statement with SQLSTATE 55P03;
-- any failure (that, the statement timeout, a killed backend) rolls the one transaction back, recording nothing
-- for any group.
CREATE OR REPLACE FUNCTION sluice_decide_groups(
    p_policies text[], p_keys bytea[], p_algs text[], p_limits bigint[], p_windows_us bigint[], p_res_us bigint[],
    p_floors_us bigint[], p_gens bigint[], p_costs bigint[], p_shadows boolean[], p_stored boolean[],
    p_ends integer[], p_atomic boolean[], p_now_us bigint, p_lock_wait_ms integer,
    OUT status smallint[], OUT allowed boolean[], OUT lim bigint[], OUT remaining bigint[],
    OUT reset_after_us bigint[], OUT retry_after_us bigint[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n      int := cardinality(p_policies);
    m      int := cardinality(p_ends);
    g      int;
    v_from int := 1;
    v_to   int;
    pr     record;
    d      record;
    i      int;
    v_php  text[] := '{}';  -- the placeholders this statement inserted
    v_phk  bytea[] := '{}';
BEGIN
    IF cardinality(p_keys) <> n OR cardinality(p_algs) <> n OR cardinality(p_limits) <> n
        OR cardinality(p_windows_us) <> n OR cardinality(p_res_us) <> n OR cardinality(p_floors_us) <> n
        OR cardinality(p_gens) <> n OR cardinality(p_costs) <> n OR cardinality(p_shadows) <> n
        OR cardinality(p_stored) <> n OR cardinality(p_atomic) <> m OR m < 1 THEN
        RAISE EXCEPTION 'sluice_decide_groups: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    FOR g IN 1..m LOOP
        IF p_ends[g] IS NULL OR p_ends[g] < v_from OR p_atomic[g] IS NULL OR (g = m AND p_ends[g] <> n) THEN
            RAISE EXCEPTION 'sluice_decide_groups: group ends must rise to the number of checks' USING ERRCODE = '22023';
        END IF;
        v_from := p_ends[g] + 1;
    END LOOP;
    IF m = 1 THEN
        SELECT * INTO status, allowed, lim, remaining, reset_after_us, retry_after_us
        FROM sluice_decide_batch(p_policies, p_keys, p_algs, p_limits, p_windows_us, p_res_us, p_floors_us, p_gens,
                                 p_costs, p_shadows, p_stored, p_atomic[1], p_now_us, p_lock_wait_ms);
        RETURN;
    END IF;
    -- The optimistic attempt (see the header). Only its own SQLSTATE is caught: a lock wait that runs out, or any
    -- other error, fails the statement.
    BEGIN
        SELECT * INTO status, allowed, lim, remaining, reset_after_us, retry_after_us
        FROM sluice_decide_batch(p_policies, p_keys, p_algs, p_limits, p_windows_us, p_res_us, p_floors_us, p_gens,
                                 p_costs, p_shadows, p_stored, false, p_now_us, p_lock_wait_ms);
        v_from := 1;
        FOR g IN 1..m LOOP
            IF p_atomic[g] THEN
                FOR i IN v_from..p_ends[g] LOOP
                    IF status[i] <> 0 OR NOT (allowed[i] OR coalesce(p_shadows[i], false)) THEN
                        RAISE EXCEPTION 'an atomic group does not commit whole' USING ERRCODE = 'SLG01';
                    END IF;
                END LOOP;
            END IF;
            v_from := p_ends[g] + 1;
        END LOOP;
        RETURN;
    EXCEPTION WHEN SQLSTATE 'SLG01' THEN
        NULL; -- rolled back: decided group by group below
    END;
    IF p_lock_wait_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_lock_wait_ms, 1)::text, true);
    END IF;

    -- Every pair a check with a cost could write, locked in byte order across the statement.
    FOR pr IN
        SELECT v.p, v.k
        FROM (SELECT DISTINCT u.p, u.k
              FROM unnest(p_policies, p_keys, p_costs) AS u(p, k, c)
              WHERE u.c > 0 AND u.p IS NOT NULL AND u.k IS NOT NULL) AS v
        ORDER BY v.p COLLATE "C", v.k
    LOOP
        LOOP
            PERFORM 1 FROM sluice_buckets b WHERE b.policy = pr.p AND b.key = pr.k FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
            VALUES (pr.p, pr.k, '{}', '{}', 0, 0, '')
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                v_php := v_php || pr.p;
                v_phk := v_phk || pr.k;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;

    -- Each group as sluice_decide_batch decides it alone: its locks are all held already, so it waits for none.
    status := '{}';
    allowed := '{}';
    lim := '{}';
    remaining := '{}';
    reset_after_us := '{}';
    retry_after_us := '{}';
    v_from := 1;
    FOR g IN 1..m LOOP
        v_to := p_ends[g];
        SELECT * INTO d
        FROM sluice_decide_batch(p_policies[v_from:v_to], p_keys[v_from:v_to], p_algs[v_from:v_to],
                                 p_limits[v_from:v_to], p_windows_us[v_from:v_to], p_res_us[v_from:v_to],
                                 p_floors_us[v_from:v_to], p_gens[v_from:v_to], p_costs[v_from:v_to],
                                 p_shadows[v_from:v_to], p_stored[v_from:v_to], p_atomic[g], p_now_us, NULL);
        status := status || d.status;
        allowed := allowed || d.allowed;
        lim := lim || d.lim;
        remaining := remaining || d.remaining;
        reset_after_us := reset_after_us || d.reset_after_us;
        retry_after_us := retry_after_us || d.retry_after_us;
        v_from := v_to + 1;
    END LOOP;

    -- The placeholders nothing was recorded on (an admission always writes an algorithm).
    DELETE FROM sluice_buckets b
    USING unnest(v_php, v_phk) AS u(p, k)
    WHERE b.policy = u.p AND b.key = u.k AND b.alg = '';
END
$$;

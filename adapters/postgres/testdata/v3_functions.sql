-- The functions a database migrated to version 3 by a build before migrations/functions/ holds: the function
-- definitions of migrations/00003_decision_core.sql as released (commit b99ab34), for TestUpgradeFromVersion3.
-- Frozen: never edit.

-- sluice_next_floor is domain.NextFloor: the newest instant whose units had stopped counting under the old
-- window and algorithm at p_now.
CREATE FUNCTION sluice_next_floor(p_old_floor bigint, p_old_alg text, p_old_window_us bigint, p_now bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_old_floor, CASE WHEN p_old_alg = 'fixed_window'
                                      THEN p_now - p_now % p_old_window_us - 1
                                      ELSE p_now - p_old_window_us END)
$$;

-- sluice_step_log is the step of sliding_log and sliding_window (domain/slidinglog.go): units count while their
-- instant is after greatest(now - window, floor); an admitted cost is recorded at p_rec. A peek (cost 0) reports
-- what a cost-1 check would get. O(log n) to decide; an admission rewrites the arrays (n entries: at most the
-- limit under sliding_log, at most window/resolution + 1 under sliding_window).
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
    IF n > 0 AND s.base > 1152921504606846976 THEN -- 2^60: rebase, as windowLog.expire does (domain/slidinglog.go), so cum never overflows
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

-- sluice_step_sliding_log is sliding_log's step (domain/slidinglog.go, with the check's own instant as the
-- recorded one) over sluice_log_entries: s.a and s.f are the newest entry (an admission not yet written included),
-- s.base the cum of the newest entry pruned. It reads the entries table and writes nothing: an admission moves
-- s.a/s.f, and sluice_decide_batch writes that one entry.
CREATE FUNCTION sluice_step_sliding_log(s sluice_state, p_policy text, p_key bytea, p_now bigint, p_cost bigint,
                                        p_limit bigint, p_window bigint, p_floor bigint)
RETURNS sluice_step LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      sluice_step;
    need   bigint := greatest(p_cost, 1);
    cutoff bigint := greatest(p_now - p_window, p_floor);
    used   bigint := 0;
    held   boolean := s.f > s.base AND s.a > cutoff;
    target bigint;
    v_at   bigint;
BEGIN
    IF held THEN
        used := s.f - coalesce((SELECT e.cum FROM sluice_log_entries e
                                WHERE e.policy = p_policy AND e.key = p_key AND e.at <= cutoff
                                ORDER BY e.at DESC LIMIT 1), s.base);
    END IF;
    r.allowed := used <= p_limit - need;
    IF r.allowed THEN
        r.remaining := p_limit - used - need;
        r.reset_us := CASE WHEN held AND s.a > p_now THEN s.a ELSE p_now END + p_window - p_now;
        r.retry_us := 0;
        IF p_cost > 0 THEN
            IF NOT held THEN
                s.base := s.f; -- every unit so far has left the window
            END IF;
            IF NOT (held AND s.a >= p_now) THEN
                s.a := p_now; -- a new entry; otherwise the units merge into the newest (a clock that stepped back)
            END IF;
            s.f := s.f + p_cost;
        END IF;
    ELSE
        r.remaining := greatest(p_limit - used, 0);
        r.reset_us := s.a + p_window - p_now;
        target := s.f - (p_limit - need);
        SELECT e.at INTO v_at FROM sluice_log_entries e
        WHERE e.policy = p_policy AND e.key = p_key AND e.cum >= target
        ORDER BY e.cum LIMIT 1;
        r.retry_us := least(coalesce(v_at, s.a), s.a) + p_window - p_now;
    END IF;
    r.st := s;
    RETURN r;
END
$$;

-- sluice_step_token_bucket is token_bucket's step (domain/tokenbucket.go, GCRA): the emission interval is
-- window/limit µs, kept exact as tat = a + f/c; products such as cost × window are taken in numeric, so nothing
-- overflows at 2^53-1 over 31 days. Every rounding errs toward denial.
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

-- sluice_step_fixed_window is fixed_window's step (domain/fixedwindow.go): epoch-aligned windows, as
-- envoyproxy/ratelimit counts.
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

-- sluice_step is domain.Bucket.Decide: state of another generation is dropped, state of another algorithm is
-- converted conservatively (its units still counting, taken as recorded at its newest instant), then the
-- algorithm's step runs. The only place that knows which algorithms exist.
CREATE FUNCTION sluice_step(s sluice_state, p_policy text, p_key bytea, p_now bigint, p_alg text, p_limit bigint,
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
CREATE FUNCTION sluice_expiry(st sluice_state, p_window bigint, OUT newest_us bigint, OUT expires_us bigint)
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
CREATE FUNCTION sluice_stored_state(st sluice_state) RETURNS sluice_state LANGUAGE plpgsql IMMUTABLE AS $$
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
CREATE FUNCTION sluice_write_log(p_policy text, p_key bytea, st sluice_state, p_cutoff bigint)
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

-- sluice_decide_batch is the one routine every decision goes through (a single check is a batch of one): one
-- statement, one round trip, and no subtransaction. For each check it takes the rule the caller sent, or, for a stored (API) policy,
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
CREATE FUNCTION sluice_decide_batch(
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
    -- Bounds, per check: an out-of-bounds rule fails alone.
    FOR i IN 1..n LOOP
        IF status[i] = 0 THEN
            IF v_lim[i] IS NULL OR v_lim[i] < 1 OR v_lim[i] > 9007199254740991 OR v_win[i] IS NULL
                OR v_win[i] < 1000000 OR v_win[i] > 2678400000000 OR v_win[i] % 1000 <> 0 OR p_costs[i] IS NULL
                OR p_costs[i] < 0 OR v_floor[i] IS NULL OR v_gen[i] IS NULL OR p_keys[i] IS NULL
                OR p_policies[i] IS NULL
                OR v_alg[i] NOT IN ('sliding_log', 'sliding_window', 'token_bucket', 'fixed_window')
                OR (v_alg[i] = 'sliding_window' AND (v_res[i] IS NULL OR v_res[i] < 1000 OR v_res[i] > v_win[i])) THEN
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
        SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c, b.ctid, b.xmin
        INTO st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_ctid, v_xmin
        FROM sluice_buckets b WHERE b.policy = p_policies[i] AND b.key = p_keys[i];
        v_found := FOUND;
        IF NOT v_found THEN
            st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
        END IF;
        v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
        v_writes := false;
        FOR j IN v_start..v_end LOOP
            i := v_order[j];
            CONTINUE WHEN status[i] <> 0;
            r := sluice_step(st, p_policies[i], p_keys[i], v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i]);
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
        IF v_writes AND NOT p_atomic THEN
            i := v_order[v_start];
            v_log := st;
            st := sluice_stored_state(v_log);
            SELECT * INTO v_newest, v_expires FROM sluice_expiry(st, v_window);
            IF v_found THEN
                UPDATE sluice_buckets
                SET alg = st.alg, gen = st.gen, ats = st.ats, cums = st.cums, base = st.base, a = st.a, f = st.f,
                    c = st.c, newest_us = v_newest, window_us = v_window, expires_us = v_expires
                WHERE ctid = v_ctid AND xmin = v_xmin AND policy = p_policies[i] AND key = p_keys[i];
            ELSE
                INSERT INTO sluice_buckets (policy, key, alg, gen, ats, cums, base, a, f, c, newest_us, window_us, expires_us)
                VALUES (p_policies[i], p_keys[i], st.alg, st.gen, st.ats, st.cums, st.base, st.a, st.f, st.c, v_newest,
                        v_window, v_expires)
                ON CONFLICT DO NOTHING;
            END IF;
            v_writes := NOT FOUND; -- written; or the row changed since it was read: decide it again under its lock
            IF NOT v_writes AND v_log.alg = 'sliding_log' THEN
                PERFORM sluice_write_log(p_policies[i], p_keys[i], v_log, greatest(v_now - v_window, v_floor[i]));
            END IF;
        END IF;
        IF v_writes THEN
            v_any := true;
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
                SELECT b.alg, b.gen, b.ats, b.cums, b.base, b.a, b.f, b.c INTO st
                FROM sluice_buckets b WHERE b.policy = p_policies[i] AND b.key = p_keys[i] FOR UPDATE;
                v_found := FOUND;
                EXIT WHEN v_found;
                INSERT INTO sluice_buckets (policy, key, ats, cums, base, expires_us, alg)
                VALUES (p_policies[i], p_keys[i], '{}', '{}', 0, 0, '')
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_placeholder := true;
                    st := ROW('', 0, '{}'::bigint[], '{}'::bigint[], 0, 0, 0, 0)::sluice_state;
                    EXIT;
                END IF;
            END LOOP;
            v_now := coalesce(p_now_us, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
            v_writes := false;
            FOR j IN v_start..v_end LOOP
                i := v_order[j];
                CONTINUE WHEN status[i] <> 0;
                r := sluice_step(st, p_policies[i], p_keys[i], v_now, v_alg[i], v_lim[i], v_win[i], v_res[i], v_floor[i], v_gen[i], p_costs[i]);
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
            k := k + 1;
            v_states[k] := st;
            v_pair[k] := v_order[v_start];
            v_wins[k] := v_window;
            v_nows[k] := v_now;
            v_wrote[k] := v_writes;
            v_ph[k] := v_placeholder;
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
                c = st.c, newest_us = v_newest, window_us = v_window, expires_us = v_expires
            WHERE policy = p_policies[i] AND key = p_keys[i];
            IF v_log.alg = 'sliding_log' THEN
                PERFORM sluice_write_log(p_policies[i], p_keys[i], v_log, greatest(v_nows[j] - v_window, v_floor[i]));
            END IF;
        ELSIF v_ph[j] THEN
            DELETE FROM sluice_buckets WHERE policy = p_policies[i] AND key = p_keys[i];
        END IF;
    END LOOP;
END
$$;

-- sluice_put_policy creates or replaces an API policy: a new policy takes a new generation; a changed window or
-- algorithm raises the floor to the newest instant whose units had stopped counting (sluice_next_floor), by the
-- database clock unless p_now_us is given (tests).
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

-- sluice_register_config_policy records a replica's config-file policy as the database last saw it, raising its
-- floor when its window or algorithm differs from the last replica's, and returns the floor and what it replaced
-- (NULLs when nothing or the same policy) so the replica can report a difference between replicas' files.
CREATE FUNCTION sluice_register_config_policy(p_name text, p_quota bigint, p_window_ms bigint, p_algorithm text,
                                              p_resolution_ms bigint, p_replica text, p_now_us bigint,
                                              OUT floor_us bigint, OUT prev_quota bigint, OUT prev_window_ms bigint,
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
        floor_us := 0;
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
    WHERE name = p_name
    RETURNING sluice_config_policies.floor_us INTO floor_us;
END
$$;

-- revision: 1

-- sluice_step_log is the step of sliding_log and sliding_window (domain/slidinglog.go): units count while their
-- instant is after sluice_cutoff(now, window, floor); an admitted cost is recorded at p_rec. A peek (cost 0) reports
-- what a cost-1 check would get. O(log n) to decide; an admission rewrites the arrays (n entries: at most the
-- limit under sliding_log, at most window/resolution + 1 under sliding_window).
CREATE OR REPLACE FUNCTION sluice_step_log(s sluice_state, p_now bigint, p_rec bigint, p_cost bigint, p_limit bigint,
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
    cutoff bigint := sluice_cutoff(p_now, p_window, p_floor);
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
CREATE OR REPLACE FUNCTION sluice_step_sliding_log(s sluice_state, p_policy text, p_key bytea, p_now bigint, p_cost bigint,
                                        p_limit bigint, p_window bigint, p_floor bigint)
RETURNS sluice_step LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      sluice_step;
    need   bigint := greatest(p_cost, 1);
    cutoff bigint := sluice_cutoff(p_now, p_window, p_floor);
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

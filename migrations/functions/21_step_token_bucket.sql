-- revision: 1

-- sluice_step_token_bucket is token_bucket's step (domain/tokenbucket.go, GCRA): the emission interval is
-- window/limit µs, kept exact as tat = a + f/c; products such as cost × window are taken in numeric, so nothing
-- overflows at 2^53-1 over 31 days. Every rounding errs toward denial. s is empty or was written under this
-- limit and window: sluice_step converts a state written under another limit or window first. An admission
-- records the limit in c (sluice_decide_batch records the window in the row's window_us).
CREATE OR REPLACE FUNCTION sluice_step_token_bucket(s sluice_state, p_now bigint, p_cost bigint, p_limit bigint, p_window bigint)
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

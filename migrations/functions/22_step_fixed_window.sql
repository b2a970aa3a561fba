-- revision: 1

-- sluice_step_fixed_window is fixed_window's step (domain/fixedwindow.go): epoch-aligned windows, as
-- envoyproxy/ratelimit counts.
CREATE OR REPLACE FUNCTION sluice_step_fixed_window(s sluice_state, p_now bigint, p_cost bigint, p_limit bigint, p_window bigint,
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

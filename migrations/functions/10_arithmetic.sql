-- revision: 1

-- sluice_next_floor is domain.NextFloor: the newest instant whose units had stopped counting under the old
-- window and algorithm at p_now.
CREATE OR REPLACE FUNCTION sluice_next_floor(p_old_floor bigint, p_old_alg text, p_old_window_us bigint, p_now bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_old_floor, CASE WHEN p_old_alg = 'fixed_window'
                                      THEN p_now - p_now % p_old_window_us - 1
                                      ELSE p_now - p_old_window_us END)
$$;

-- revision: 2

-- The expiry rule's arithmetic (shared/design.md, "Algorithm and limit changes"), in one place for every function:
-- sluice_cutoff is the instant at or before which units no longer count, and sluice_next_floor the floor a policy
-- takes when its window or algorithm changes.

-- sluice_cutoff is the newest instant whose units no longer count at p_now under a window of p_window µs and the
-- policy's floor: units count while their instant is after it. Every step and conversion takes it from here.
CREATE OR REPLACE FUNCTION sluice_cutoff(p_now bigint, p_window bigint, p_floor bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_now - p_window, p_floor)
$$;

-- sluice_next_floor is domain.NextFloor: the newest instant whose units had stopped counting under the old
-- window at p_now (older than one old window), whatever the old algorithm: a key's state may be of any algorithm,
-- and a fixed window's units stop at the end of the window that admitted them by themselves (sluice_step).
-- p_old_alg is kept for the callers' signature.
CREATE OR REPLACE FUNCTION sluice_next_floor(p_old_floor bigint, p_old_alg text, p_old_window_us bigint, p_now bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT sluice_cutoff(p_now, p_old_window_us, p_old_floor)
$$;

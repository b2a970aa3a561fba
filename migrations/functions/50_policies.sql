-- revision: 1

-- sluice_put_policy creates or replaces an API policy: a new policy takes a new generation; a changed window or
-- algorithm raises the floor to the newest instant whose units had stopped counting (sluice_next_floor), by the
-- database clock unless p_now_us is given (tests).
CREATE OR REPLACE FUNCTION sluice_put_policy(p_name text, p_quota bigint, p_window_ms bigint, p_algorithm text,
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
CREATE OR REPLACE FUNCTION sluice_register_config_policy(p_name text, p_quota bigint, p_window_ms bigint, p_algorithm text,
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

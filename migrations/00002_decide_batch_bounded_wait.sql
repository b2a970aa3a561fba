-- +goose Up

-- sluice_decide_batch_bounded is the non-atomic sluice_decide_batch with a bound on how long it waits for a row
-- lock held by another session: after p_lock_wait_ms it fails with SQLSTATE 55P03 (lock_not_available), and since
-- the statement is its own transaction, nothing it did is kept. The coalescer's lanes use it (adapters/coalesce):
-- a lane's batch holds checks of unrelated keys, and one key whose row stays locked (a long transaction elsewhere,
-- or heavy contention from other replicas) must not hold every other key of that batch until the statement
-- timeout. When it gives up, the caller re-sends the checks per key, each key waiting as long as it must.
--
-- lock_timeout is set for this statement's transaction only (set_config with is_local), so the pooled
-- connection's setting is untouched afterwards.
-- +goose StatementBegin
CREATE FUNCTION sluice_decide_batch_bounded(
    p_policies text[], p_keys bytea[], p_limits bigint[], p_windows_us bigint[], p_costs bigint[],
    p_shadows boolean[], p_now_us bigint, p_lock_wait_ms integer,
    OUT allowed boolean[], OUT remaining bigint[], OUT reset_after_us bigint[], OUT retry_after_us bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    IF p_lock_wait_ms IS NULL OR p_lock_wait_ms < 1 THEN
        RAISE EXCEPTION 'sluice_decide_batch_bounded: p_lock_wait_ms must be at least 1' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('lock_timeout', p_lock_wait_ms::text, true);
    SELECT d.allowed, d.remaining, d.reset_after_us, d.retry_after_us
    INTO allowed, remaining, reset_after_us, retry_after_us
    FROM sluice_decide_batch(p_policies, p_keys, p_limits, p_windows_us, p_costs, p_shadows, false, p_now_us) AS d;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION IF EXISTS sluice_decide_batch_bounded(text[], bytea[], bigint[], bigint[], bigint[], boolean[], bigint, integer);

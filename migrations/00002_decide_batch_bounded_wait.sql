-- +goose Up

-- This migration first created sluice_decide_batch_bounded, the non-atomic batch with a bound on waiting for
-- row locks; 00003 dropped it (sluice_decide_batch took its p_lock_wait_ms). Functions are no longer created by
-- migrations: they are in migrations/functions/. Nothing is left to do here.
SELECT 1;

-- +goose Down
DROP FUNCTION IF EXISTS sluice_decide_batch_bounded(text[], bytea[], bigint[], bigint[], bigint[], boolean[], bigint, integer);

-- +goose Up

-- A hot key's hold records (migration 00005) are an array of up to a few kB that every hold operation writes back:
-- pglz, the default, compressed it in ~100 µs per write on the test machine, lz4 in ~20 µs (issue 23: a hold op
-- should cost about what a check does). Rows written before keep their pglz value until their next write. A server
-- built without lz4 keeps pglz: nothing else changes.
-- +goose StatementBegin
DO $$
BEGIN
    ALTER TABLE sluice_buckets ALTER COLUMN holds SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'sluice: this server has no lz4; hold records stay pglz-compressed';
END
$$;
-- +goose StatementEnd

-- +goose Down
ALTER TABLE sluice_buckets ALTER COLUMN holds SET COMPRESSION default;

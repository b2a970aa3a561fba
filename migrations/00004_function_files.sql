-- +goose Up

-- The functions (plpgsql and SQL) are no longer created by migrations: each group is a file of migrations/functions/,
-- made only of CREATE OR REPLACE (and DROP ... IF EXISTS where a signature changed), so it can be applied again at any
-- time. postgres.Migrate (adapters/postgres/functions.go) applies them after the migrations, under the same advisory
-- lock, and records each one here: a file is applied again only when this build's copy has a newer revision (its first
-- line, "-- revision: N"), or the same revision with other contents (sha256). A build never applies an older revision
-- over a newer one, so during a rolling upgrade an older replica that migrates at start-up leaves the newer functions
-- in place.
CREATE TABLE sluice_function_files (
    name       text COLLATE "C" PRIMARY KEY,
    revision   integer NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
-- Every function the files created (and any an older build left) goes with the record of them; migrating up again
-- re-applies the files. A database migrated down below version 4 has no functions: go on down, or up again.
-- +goose StatementBegin
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.proname LIKE 'sluice\_%' AND p.pronamespace = current_schema()::regnamespace LOOP
        EXECUTE 'DROP FUNCTION ' || f::text;
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP TABLE sluice_function_files;

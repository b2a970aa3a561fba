-- +goose Up

-- Holds (shared/design.md, "Holds"; domain/hold.go): a key's hold records live in its sluice_buckets row, so a
-- hold operation and every check of the key take the same row lock and are decided in the same atomic step.
--
-- holds is an array of sluice_hold, one element per record, in acquisition order (OpReleaseAnonymous releases the
-- earliest first): the array is the parallel arrays of domain.holdRecord's fields as one value, read and written
-- with the row (a key has at most domain.MaxHolds = 1024 records). id is bytea: ids are stored and compared
-- exactly, the NUL byte that starts an anonymous hold's id included. amount, at, expires, settled and reserved
-- are the record's Hold and reserved amount; gen and alg the generation and algorithm that recorded it; c and w
-- (µs) a token bucket's rate at the acquire, and mq + mr/c µs its refund bound (the least lag an admission found
-- since, domain.Bucket.noteLag). A key without holds pays an empty array.
--
-- holds_until and holds_at are the janitor's inputs (domain.Bucket.Empty's holdsKept rule): a record of the
-- row's generation is kept while now < its deadline, and an unsettled one also while now < at + window. So the row
-- is kept while now < holds_until (the latest deadline) or now < holds_at (the newest unsettled record's instant)
-- + the window in force. Both are written with holds by sluice_hold (and cleared with them by the janitor when no
-- record matters any more); a check that moves the row to another generation leaves them as they were (the
-- janitor then keeps the row a little longer, never shorter). sluice_decide_batch reads holds only where
-- concurrency counts them, and writes them only to lower open token_bucket holds' refund bound.
CREATE TYPE sluice_hold AS (id bytea, amount bigint, at bigint, expires bigint, settled boolean, reserved bigint,
                            gen bigint, alg text, c bigint, w bigint, mq bigint, mr bigint);
ALTER TABLE sluice_buckets
    ADD COLUMN holds sluice_hold[] NOT NULL DEFAULT '{}',
    ADD COLUMN holds_until bigint NOT NULL DEFAULT 0,
    ADD COLUMN holds_at bigint NOT NULL DEFAULT 0;

-- +goose Down
DROP FUNCTION IF EXISTS sluice_hold(text, bytea, smallint, bytea, bigint, bigint, text, bigint, bigint, bigint, bigint, bigint, boolean, bigint);
ALTER TABLE sluice_buckets DROP COLUMN holds_at, DROP COLUMN holds_until, DROP COLUMN holds;
DROP TYPE sluice_hold CASCADE;

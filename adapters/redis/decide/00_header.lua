-- sluice decision script, built from the files of adapters/redis/decide/ concatenated in name order (store.go):
-- this header, the integer arithmetic, the key's state, one step file per algorithm (each fills ALG[code], the
-- algorithm table's Lua column), and the main part. It applies one or more checks atomically (a Lua script runs
-- alone on its Redis node). It
-- is domain.Bucket.Decide (domain/algorithm.go, slidinglog.go, tokenbucket.go, fixedwindow.go) step for step, in
-- unix microseconds with the same integer rounding, so every store gives identical decisions; the conformance
-- suite's model test compares them on random sequences. Loaded once per node and run with EVALSHA (the client
-- falls back to EVAL on NOSCRIPT).
--
-- KEYS[i]  the Redis key of check i (every key of one call is in one hash slot).
-- ARGV[1]  mode: "d" decide, "n" decide but record nothing, "u" undo a reservation (see the end).
-- ARGV[2]  "" for the server clock (TIME), or (tests) the instant in microseconds since the Unix epoch, with
--          "+<ms>" to set every expiry that much later (Options.ExpirySlack in store.go).
-- ARGV[3]  "1" for an atomic call: record nothing unless every non-shadow check is admitted.
-- ARGV[4]  the checks, one record per key, packed (struct format CHECK, little-endian; appendCheck in store.go):
--   algo (byte: 1 sliding_log, 2 sliding_window, 3 token_bucket, 4 fixed_window), then as doubles limit,
--   window (µs), resolution (µs), floor (µs: units recorded at or before it never count), cost (0 peeks), then
--   shadow (byte, 1/0), token_bucket's emission time of max(cost, 1) units, q + r/limit µs, as two doubles
--   (q = floor(max(cost,1) × window / limit), r its remainder: computed in Go, the product needs 106 bits),
--   stored (byte, 1/0), the revision of the replica's copy of the policy (double; -1: not held), the generation
--   and the policy's name (decimal string and name, each NUL-terminated). Every number is an integer below 2^53, which a
--   double holds exactly. One argument for all checks, rather than ten per check, spares Redis an argument
--   object and Lua a string and a tonumber per field.
-- ARGV[5]  modes "d" and "n": "1" when the last key is the policy records' hash (then every check marked stored is
--          checked against it first, see below), else "". Undo mode: per check, the instant its units were
--          recorded at (double; 0: none), packed.
--
-- Stored checks (API policies, BucketRequest.Stored): the check carries the name of its policy and the revision
-- of the replica's copy of it; the last key is a hash of policy records (policy.lua's format: the last field is
-- the revision; "-|<revision>", a deleted policy, is never stored today but read as one): on a single Redis the
-- policies hash itself, on a cluster this slot's copy of it (copy.lua). Before deciding anything, every stored check's revision is compared with its
-- record's; if any differs, or a record is missing or deleted, the script writes nothing and returns
-- {"stale", name, record or "", ...} for those policies, and the Go side installs them and sends the checks
-- again (store.go, runGroup). So a decision is made only with the policy in force in Redis at that instant.
--
-- Every quantity stays an integer below 2^53, which Lua's doubles hold exactly: instants are microseconds
-- (~2^51), windows at most 31 days (~2^42 µs), counts and fractions at most 2^53-1. Sums that could pass 2^53
-- (two counts, two fractions) are compared by subtraction instead; products go through muldivrem (bit by bit);
-- divisions through math.fmod, which is exact.
--
-- The value of a key: generation, "\0", struct "<Bddddd" (algo, seen, ttlwindow, x, y, z), then for the logs
-- entries "<dd" (instant µs, cumulative count). seen: the newest instant a write used (time never runs backwards
-- for a key, even when a failover hands it to a node whose clock is behind); ttlwindow: the window its expiry was
-- computed with, which is the window of the check that last wrote the key (a token bucket's units are
-- re-expressed with the limit and window that wrote them, conversion spec v2). x, y, z: logs (base, 0, 0): base is the cumulative count of the units before the first entry;
-- token_bucket (a, f, c): tat = a + f/c µs, c the limit that wrote it; fixed_window (a, f, 0): the newest
-- admission's instant and the units admitted in its window.
--
-- Returns 9 integers per check: allowed (1 admitted, 0 denied, 3 invalid rule: the check's or the stored state's
-- algorithm code is outside the table; nothing is decided or written for it, and the Go side answers
-- domain.StatusInvalidRule), remaining, reset_after (µs), retry_after (µs), recorded (the
-- instant the units were recorded at, for an undo; 0 if none), and for token_bucket A, NF, B, F: the new tat
-- (or the one a check would reach) is now + A + NF/limit, the current one now + B + F/limit; Go turns them into
-- remaining, reset_after and retry_after with 106-bit products (decision in store.go).
local MAX = 9007199254740991
local fmod, floor = math.fmod, math.floor
local pack, unpack = struct.pack, struct.unpack
local ES = 16  -- bytes per log entry
local HS = 41  -- header bytes after the generation's NUL
local HF = '<Bddddd'
local CHECK = '<BdddddBddBdss'
local INVALID = { 3, 0, 0, 0, 0, 0, 0, 0, 0 }
local CAP = 8796093022208 -- 2^43 µs: a converted token bucket's tat is never further than this past now
local mode = ARGV[1]
local now, slack = 0, 0
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  local at, sl = string.match(ARGV[2], '^(%d+)%+?(%d*)$')
  now = tonumber(at)
  if sl ~= '' then slack = tonumber(sl) end
end

-- ALG[code] is one algorithm (one file each): 
--   step(st, t, c, need, admit)  decides check c (its fields: c.limit, c.window, c.res, c.floor, c.cost, c.q, c.r)
--                                on the view st, calls admit() when it records, returns the nine integers
--   units(st, t, cutoff)         the units of a state of this algorithm that still count at t (entries after
--                                cutoff for the windows), and the instant they count from (0, 0: none)
--   into(st, t, at, n, c)        makes st a state of this algorithm holding n units recorded at at
--   retune(st, c)                true when a state of this algorithm written under other parameters must be
--                                converted before c's step (token_bucket: another limit or window)
--   expiry(st)                   the instant (µs) from which nothing in st counts
--   undo(st, c, rec)             removes the units c recorded at rec; true when it did
local ALG = {}


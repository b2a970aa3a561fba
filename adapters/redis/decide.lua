-- sluice decision script. This file is its core; store.go builds the script at init by splicing in, at each
-- "--@" marker, the sections of the algorithm files in algo/ (one file per algorithm, named <code>_<name>.lua:
-- its step, its units, the conversion into it, its expiry, its undo, its helpers), dispatched on the algorithm
-- code, so the script is one body with no per-call dispatch tables. The script applies one or more checks
-- atomically (a Lua script runs alone on its Redis node). It is domain.Bucket.Decide (domain/algorithm.go,
-- slidinglog.go, tokenbucket.go, fixedwindow.go) step for step, in unix microseconds with the same integer
-- rounding, and converts state between limits, windows and algorithms as issue 22's conversion spec (v2) says,
-- so every store gives identical decisions; the conformance suite's model test compares them on random sequences
-- (TestConversionSpecModel holds the conversions to a model written from the spec). Loaded once per node and run with EVALSHA (the client
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
--   and the policy's name (decimal string and name, each NUL-terminated). Every number is an integer below 2^53,
--   which a double holds exactly. One argument for all checks, rather than ten per check, spares Redis an argument
--   object and Lua a string and a tonumber per field.
-- ARGV[5]  modes "d" and "n": "1" when the last key is the policy records' hash (then every check marked stored is
--          checked against it first, see below), else "". Undo mode: per check, the instant its units were
--          recorded at (double; 0: none), packed.
--
-- Stored checks (API policies, BucketRequest.Stored): the check carries the name of its policy and the revision
-- of the replica's copy of it; the last key is a hash of policy records (policy.lua's format: the last field is
-- the revision; "-|<revision>", a deleted policy, is never stored today but read as one): on a single Redis the
-- policies hash itself, on a cluster this slot's copy of it (copy.lua). Before deciding anything, every stored
-- check's revision is compared with its record's; if any differs, or a record is missing or deleted, the script writes nothing and returns
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
-- for a key, even when a failover hands it to a node whose clock is behind); ttlwindow: the window of the check
-- that last wrote the key, which its expiry is computed from (a check that only reads it under a longer window
-- extends the expiry, not this) and a token bucket's units are re-expressed with (with its limit c, conversion
-- spec v2). x, y, z: logs (base, 0, 0): base is the cumulative count of the units before the first entry;
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

-- muldivrem returns floor(x × y / z) and the remainder, for integers 0 ≤ x, y < 2^53, 1 ≤ z < 2^53, whose
-- quotient is below 2^53 (the callers' bounds). The 106-bit product is held as limbs of 18 bits (every partial
-- product below 2^38) and divided one bit at a time, with every intermediate below 2^53.
local B18 = 262144
local function limbs(x)
  local a = fmod(x, B18)
  x = (x - a) / B18
  local b = fmod(x, B18)
  return a, b, (x - b) / B18
end
local function muldivrem(x, y, z)
  if x == 0 or y == 0 then return 0, 0 end
  local xs, ys = { limbs(x) }, { limbs(y) }
  local l = { 0, 0, 0, 0, 0, 0, 0 }
  for i = 1, 3 do
    for j = 1, 3 do l[i + j - 1] = l[i + j - 1] + xs[i] * ys[j] end
  end
  for i = 1, 6 do
    local c = fmod(l[i], B18)
    l[i + 1] = l[i + 1] + (l[i] - c) / B18
    l[i] = c
  end
  local q, r = 0, 0
  for i = 7, 1, -1 do
    local limb = l[i]
    for b = 17, 0, -1 do
      local p = 2 ^ b
      local bit = 0
      if limb >= p then bit, limb = 1, limb - p end
      -- r = 2r + bit reduced mod z, without forming 2r + bit when it would pass 2^53 (r < z, so one
      -- subtraction suffices)
      local need = z - r - bit
      q = q + q
      if r >= need then
        r = r - need
        q = q + 1
      else
        r = r + r + bit
      end
    end
  end
  return q, r
end

local function muldivceil(x, y, z)
  local q, r = muldivrem(x, y, z)
  if r > 0 then q = q + 1 end
  return q
end

local states = {}

-- A log's entries are held as st.s, the packed entries 1 .. n-1, and st.la, st.lc, the newest entry's instant and
-- cumulative count (when n > 0): an admission in the newest entry's instant (the common case under load) changes
-- two numbers and copies no string, and the newest entry, which every decision reads, is not unpacked again.
local function empty(st)
  st.alg, st.gen, st.x, st.y, st.z, st.s, st.n, st.la, st.lc = 0, '', 0, 0, 0, '', 0, 0, 0
end

-- load returns the state of key, from this call's cache or the store.
local function load(key)
  local st = states[key]
  if st == nil then
    -- every field in the constructor: the table is sized once, never rehashed as fields are added
    st = { exists = false, seen = 0, w = 0, alg = 0, gen = '', x = 0, y = 0, z = 0, s = '', n = 0, la = 0, lc = 0,
      dirty = false, grown = 0 }
    local v = redis.call('GET', key)
    if v then
      local z = string.find(v, '\0', 1, true)
      st.gen = string.sub(v, 1, z - 1)
      st.alg, st.seen, st.w, st.x, st.y, st.z = unpack(HF, v, z + 1)
      local n = (#v - z - HS) / ES
      if n > 0 then
        local last = z + HS + (n - 1) * ES
        st.s = string.sub(v, z + 1 + HS, last)
        st.la, st.lc = unpack('<dd', v, last + 1)
        st.n = n
      end
      st.exists = true
    end
    states[key] = st
  end
  return st
end

local function at(st, i)
  if i == st.n then return st.la end
  return (unpack('<d', st.s, (i - 1) * ES + 1))
end
local function cum(st, i)
  if i == st.n then return st.lc end
  return (unpack('<d', st.s, (i - 1) * ES + 9))
end

-- entries returns every entry of st packed; setentries makes st hold the packed entries s.
local function entries(st)
  if st.n == 0 then return '' end
  return st.s .. pack('<dd', st.la, st.lc)
end
local function setentries(st, s)
  st.n = #s / ES
  if st.n == 0 then
    st.s = ''
    return
  end
  st.s = string.sub(s, 1, (st.n - 1) * ES)
  st.la, st.lc = unpack('<dd', s, (st.n - 1) * ES + 1)
end

-- expire drops the log entries recorded at or before cutoff.
local function expire(st, cutoff)
  if st.n == 0 or at(st, 1) > cutoff then return end
  if st.la <= cutoff then
    st.s, st.n, st.x = '', 0, 0
    return
  end
  local lo, hi = 2, st.n -- the first entry with at > cutoff: entry 1 is not, entry n is
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if at(st, mid) > cutoff then hi = mid else lo = mid + 1 end
  end
  st.x = cum(st, lo - 1)
  st.s = string.sub(st.s, (lo - 1) * ES + 1)
  st.n = st.n - (lo - 1)
end

local function used(st)
  if st.n == 0 then return 0 end
  return st.lc - st.x
end

-- record adds cost units at instant rec, merged into the newest entry when it is at rec or later.
local function record(st, rec, cost)
  local last = st.x
  if st.n > 0 then last = st.lc end
  if last > MAX - cost then -- rebase the cumulative counts so they stay below 2^53
    local b, out = st.x, {}
    for i = 1, st.n do out[i] = pack('<dd', at(st, i), cum(st, i) - b) end
    setentries(st, table.concat(out))
    st.x, last = 0, last - b
  end
  if st.n > 0 and st.la >= rec then
    st.lc = last + cost
    return st.la
  end
  if st.n > 0 then st.s = st.s .. pack('<dd', st.la, st.lc) end
  st.la, st.lc, st.n = rec, last + cost, st.n + 1
  return rec
end

local function ceilto(t, res)
  local r = fmod(t, res)
  if r ~= 0 then return t + (res - r) end
  return t
end

-- logstep is the step of the log algorithms (sliding_log, sliding_window: algo/), recording at rec.
local function logstep(st, t, limit, window, floorus, cost, need, admit, rec)
  local cutoff = t - window
  if floorus > cutoff then cutoff = floorus end
  expire(st, cutoff)
  local u = used(st)
  if u <= limit - need then
    local newest = rec
    if st.n > 0 and st.la > newest then newest = st.la end
    local recorded = 0
    if cost > 0 then
      recorded = record(st, rec, cost)
      admit()
    end
    return { 1, limit - u - need, newest + window - t, 0, recorded, 0, 0, 0, 0 }
  end
  local rem = limit - u
  if rem < 0 then rem = 0 end
  local target = st.lc - (limit - need)
  local lo, hi = 1, st.n
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if cum(st, mid) >= target then hi = mid else lo = mid + 1 end
  end
  return { 0, rem, st.la + window - t, at(st, lo) + window - t, 0, 0, 0, 0, 0 }
end

-- logundo removes cost units recorded at rec from a log, wherever later checks left them; true when it did.
local function logundo(st, cost, rec)
  local lo, hi = 1, st.n + 1
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if at(st, mid) >= rec then hi = mid else lo = mid + 1 end
  end
  if lo > st.n or at(st, lo) ~= rec then return false end
  local out = { string.sub(entries(st), 1, (lo - 1) * ES) }
  local prev = st.x
  if lo > 1 then prev = cum(st, lo - 1) end
  for j = lo, st.n do
    local c = cum(st, j) - cost
    if c > prev then
      out[#out + 1] = pack('<dd', at(st, j), c)
      prev = c
    end
  end
  setentries(st, table.concat(out))
  return true
end

--@helpers

-- convert turns the state into the view of a check of algorithm algo and generation gen (conversion spec v2):
-- state of another generation is empty; otherwise the units that still count (the state's algorithm's "units":
-- a token bucket's under the limit and window that wrote them, not capped) are kept, as recorded at their
-- instant, in algo's state (its "into"). It changes only the call's copy: the key is written only when a check
-- admits.
local function convert(st, t, algo, limit, window, res, floorus, gen)
  local units, t_at = 0, 0
  if st.gen == gen then
    local cutoff = t - window
    if floorus > cutoff then cutoff = floorus end
    --@units
  end
  empty(st)
  if units <= 0 then return end
  if units > MAX then units = MAX end
  st.alg, st.gen = algo, gen
  --@into
end

-- decide applies a check (ARGV[4]'s fields) to the state of key: an algorithm code outside the table, in the
-- check or in the stored state, is answered INVALID without deciding.
local function decide(key, algo, limit, window, res, floorus, cost, q, r, gen)
  if not known(algo) then return INVALID end
  local st = load(key)
  if st.alg ~= 0 and not known(st.alg) then return INVALID end
  local t = now
  if st.seen > t then t = st.seen end
  if st.alg ~= 0 and (st.gen ~= gen or st.alg ~= algo or --@retune) then
    convert(st, t, algo, limit, window, res, floorus, gen)
  end
  local need = cost
  if need == 0 then need = 1 end -- a peek reports what a cost-1 check would get
  local admit = function()
    if cost > 0 then
      if st.alg == 0 then st.alg, st.gen = algo, gen end
      st.dirty, st.seen, st.w = true, t, window
    end
  end
  --@step
end

-- ttl is how long, in ms, until nothing in st can count any more (0: nothing counts now).
local function ttl(st)
  local until_us
  --@expiry
  local ms = (until_us - now) / 1000
  ms = ms - fmod(ms, 1) + 1
  if ms < 1 then return 0 end
  return ms
end

local function save(key, st)
  local ms = ttl(st)
  if ms == 0 then
    if st.exists then redis.call('DEL', key) end
    return
  end
  local tail = ''
  if st.n > 0 then tail = pack('<dd', st.la, st.lc) end
  redis.call('SET', key, st.gen .. '\0' .. pack(HF, st.alg, st.seen, st.w, st.x, st.y, st.z) .. st.s .. tail, 'PX', ms + slack)
end

local n = #KEYS
if mode == 'u' then
  -- Undo (the slots already reserved of a cross-slot atomic batch that another slot refused): the arguments of
  -- each check as above plus the instant its units were recorded at (0: none). Removes exactly those units
  -- wherever later checks left them; units already gone (expired, reset) are not undone twice.
  local undone, pos = 0, 1
  for i = 1, n do
    local algo, limit, window, _, _, cost, _, q, r, _, _, gen
    algo, limit, window, _, _, cost, _, q, r, _, _, gen, _, pos = unpack(CHECK, ARGV[4], pos)
    local rec = unpack('<d', ARGV[5], (i - 1) * 8 + 1)
    local st = load(KEYS[i])
    if st.exists and rec > 0 and cost > 0 and st.alg == algo and st.gen == gen then
      local done = false
      --@undo
      if done then
        st.dirty = true
        undone = undone + 1
      end
      st.w = window
    end
  end
  for key, st in pairs(states) do
    if st.dirty then save(key, st) end
  end
  return { undone } -- an array, as every answer of this script (store.go's reply reads arrays)
end

-- A stored record's revision: the last of policy.lua's nine fields (a record of eight fields, written before
-- records carried one, is revision 0); nil for a deleted policy's "-|<revision>".
local function revision(rec)
  if string.sub(rec, 1, 2) == '-|' then return nil end
  local v = string.match(rec, '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|(%d+)$')
  if v then return tonumber(v) end
  return 0
end

local atomic = ARGV[3] == '1'
local out = {}
local commit = mode ~= 'n' -- "n": evaluate only (the later slots of a refused cross-slot batch)

-- check decides check i and appends its nine integers to out.
local function check(i, algo, limit, window, res, floorus, cost, shadow, q, r, gen)
  local d = decide(KEYS[i], algo, limit, window, res, floorus, cost, q, r, gen)
  local st = states[KEYS[i]]
  -- A key not written whose window grew since its expiry was set: its units must outlive the old expiry.
  if st and st.exists and not st.dirty and window > st.grown and window > st.w then st.grown = window end
  if d[1] ~= 1 and shadow ~= 1 and atomic then commit = false end
  for j = 1, 9 do out[#out + 1] = d[j] end
end

local pos = 1
if ARGV[5] ~= '1' then
  for i = 1, n do
    local algo, limit, window, res, floorus, cost, shadow, q, r, gen, _
    algo, limit, window, res, floorus, cost, shadow, q, r, _, _, gen, _, pos = unpack(CHECK, ARGV[4], pos)
    check(i, algo, limit, window, res, floorus, cost, shadow, q, r, gen)
  end
else
  n = n - 1
  local checks, pk, held, stale = {}, KEYS[n + 1], {}, nil
  for i = 1, n do
    local c = { unpack(CHECK, ARGV[4], pos) }
    pos = c[14]
    checks[i] = c
    if c[10] == 1 and held[c[13]] == nil then
      local rec = redis.call('HGET', pk, c[13])
      held[c[13]] = true
      if not rec or revision(rec) ~= c[11] then
        stale = stale or { 'stale' }
        stale[#stale + 1] = c[13]
        stale[#stale + 1] = rec or ''
      end
    end
  end
  if stale then return stale end
  for i = 1, n do
    local c = checks[i]
    check(i, c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[12])
  end
end
if commit then
  for key, st in pairs(states) do
    if st.dirty then
      save(key, st)
    elseif st.grown > 0 then
      -- Only the expiry moves (the value, and the window it was written under, stay): to at least now plus the
      -- grown window, which outlasts every unit a log or fixed window holds; a token bucket's own expiry (its
      -- tat) is kept when later.
      local ms = floor(st.grown / 1000) + 1 + slack
      if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
    end
  end
end
return out

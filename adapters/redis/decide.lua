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
-- ARGV[1]  mode: "d" decide, "n" decide but record nothing, "u" undo a reservation (see the end), "b" a batch
--          of checks and hold ops (domain.Bucket.ApplyHold: its own arguments, see "A batch" below).
-- ARGV[2]  "" for the server clock (TIME), or (tests) the instant in microseconds since the Unix epoch, with
--          "+<ms>" to set every expiry that much later (Options.ExpirySlack in store.go).
-- ARGV[3]  "1" for an atomic call: record nothing unless every non-shadow check is admitted.
-- ARGV[4]  the checks, one record per key, packed (struct format CHECK, little-endian; appendCheck in store.go):
--   algo (byte: 1 sliding_log, 2 sliding_window, 3 token_bucket, 4 fixed_window, 5 concurrency), then as doubles limit,
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
-- admission's instant and the units admitted in its window; concurrency (0, 0, 0): its units are the hold records.
-- A key with hold records ends with their section (see "Hold records" below), which every write keeps: a check
-- on a key with holds preserves them, counts concurrency's, and lowers open token_bucket holds' refund bounds
-- (Bucket.noteLag) when it admits; the key's expiry covers every record Bucket.Empty would keep.
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

-- Hold records (domain/hold.go). A key's records live in its value, after the log entries, as one section: the
-- records, then the records' length in bytes (double), 0 to 15 NUL pad bytes and the pad count (byte), so that
-- the section's length is 1 mod 16: a value without holds is a whole number of entries after the header, one with
-- holds is not, and a value written before holds existed reads as one without. A record is RH: the id's length,
-- settled (byte), amount, at, expires (µs); the id's bytes (any bytes: an anonymous id starts with NUL); RT:
-- reserved, alg (byte), token_bucket's c, w, mq, mr (the refund bound mq + mr/c µs), ut, um, ur (the bound as it
-- was before the admissions at instant ut lowered it: a cross-slot reservation's undo gives it back, as
-- domain.Bucket.Rollback does, unless a later admission lowered it again); and the generation, NUL-terminated.
--
-- The section is kept as it was read (st.hb) and read only when a decision needs the records (a concurrency
-- check, a token bucket admission on a key with holds, a hold op, a write's expiry), once per call however
-- many of the call's ops use it, without a Lua table per record: recs(st) walks it once into arrays of what the
-- scans read (offsets, id length, settled, amount, at, expires, generation), and holdrec()
-- unpacks one record whole, as a table, only for the records an op finds or changes (a settle's, a renewal's, an
-- open token_bucket hold's bound). A record dropped is marked dead. save writes the section back only when a
-- record was added, changed or dropped, copying the unchanged records' bytes a run at a time.
local RH, RT = '<I4Bddd', '<dBddddddd'
local RHL, RTL = 29, 65 -- bytes of RH and RT
local acquiring = false -- a hold op's acquire is deciding: the one decision that takes concurrency's units
local sub, find = string.sub, string.find
local function recs(st)
  local R = st.hr
  if R then return R end
  R = { n = 0, live = 0, nset = 0, g1 = nil, mexp = MAX, s = st.hb, dirty = false, p0 = {}, p1 = {}, il = {},
    set = {}, amt = {}, at = {}, exp = {}, gen = {}, dead = {}, obj = {}, ixs = nil, ix = nil, q0 = {}, rt = {} }
  local s, pos, n, len, nset, g1, mexp = st.hb, 1, 0, #st.hb, 0, nil, MAX
  local p0, p1, il, set, amt, ats, exp, gens, dead, q0 = R.p0, R.p1, R.il, R.set, R.amt, R.at, R.exp, R.gen, R.dead, R.q0
  while pos <= len do
    local idlen, settled, amount, at, e = unpack(RH, s, pos)
    local q = pos + RHL + idlen + RTL
    local z = find(s, '\0', q, true)
    local g = sub(s, q, z - 1) -- interned: records of one generation share one string
    n = n + 1
    p0[n], p1[n], il[n], set[n], amt[n], ats[n], exp[n], gens[n], dead[n], q0[n] = pos, z, idlen, settled == 1, amount, at, e, g, false, pos
    if settled == 1 then nset = nset + 1 end
    if e < mexp then mexp = e end
    if n == 1 then g1 = g elseif g1 ~= g then g1 = false end
    pos = z + 1
  end
  R.n, R.live, R.nset, R.g1, R.mexp = n, n, nset, g1, mexp
  st.hr = R
  return R
end
-- R.nset counts the live settled records; R.g1 is the generation of every record (false: they differ; nil: none);
-- R.mexp is at most the earliest deadline of a live record (a drop leaves it lower than need be).
-- holdrec is record i as a table (unpacked once), with its index.
local function holdrec(R, i)
  local o = R.obj[i]
  if o then return o end
  local s, pos, idlen = R.s, R.p0[i], R.il[i]
  local p = pos + RHL
  local reserved, alg, c, w, mq, mr, ut, um, ur = unpack(RT, s, p + idlen)
  o = { i = i, id = sub(s, p, p + idlen - 1), amount = R.amt[i], at = R.at[i], exp = R.exp[i], settled = R.set[i],
    reserved = reserved, alg = alg, c = c, w = w, mq = mq, mr = mr, ut = ut, um = um, ur = ur, gen = R.gen[i] }
  R.obj[i] = o
  return o
end
-- recid is record i's id.
local function recid(R, i)
  local o = R.obj[i]
  if o then return o.id end
  local p = R.p0[i] + RHL
  return sub(R.s, p, p + R.il[i] - 1)
end
-- changed: the record o (from holdrec) changed (tail: in RT's fields too): the scans' arrays follow it and save
-- packs it anew (only its RH when RT's fields did not change).
local function changed(R, o, tail)
  local i = o.i
  if tail then R.rt[i] = true end
  if o.settled and not R.set[i] then R.nset = R.nset + 1 elseif R.set[i] and not o.settled then R.nset = R.nset - 1 end
  if o.exp < R.mexp then R.mexp = o.exp end
  R.set[i], R.amt[i], R.at[i], R.exp[i], R.p0[i] = o.settled, o.amount, o.at, o.exp, false
  R.dirty = true
end
-- addrec appends the new record o.
local function addrec(R, o)
  local i = R.n + 1
  o.i = i
  R.n, R.live, R.obj[i], R.dead[i], R.il[i], R.gen[i], R.set[i] = i, R.live + 1, o, false, #o.id, o.gen, false
  if R.ixs == 2 then R.ix[o.id] = i end
  if R.g1 == nil then R.g1 = o.gen elseif R.g1 ~= o.gen then R.g1 = false end
  changed(R, o)
end
local function droprec(R, i)
  if R.ixs == 2 then
    local k = recid(R, i)
    if R.ix[k] == i then R.ix[k] = nil end
  end
  R.dead[i] = true
  R.live = R.live - 1
  if R.set[i] then R.nset = R.nset - 1 end
  R.dirty = true
end
-- findrec is the index of the live record with id and generation gen, or nil. The first lookup of a call walks
-- the records; a second one (several ops of one key in a call) builds an index of the live records' ids, kept as
-- records come and go, unless two live records share an id (of two generations: then every lookup walks).
local idat
local function findrec(R, id, gen)
  local s = R.ixs -- nil: no lookup yet; 1: one; 2: R.ix is the index; 3: no index (an id twice)
  if s == nil then
    R.ixs = 1
  elseif s == 1 then
    local x = {}
    s = 2
    for i = 1, R.n do
      if not R.dead[i] then
        local k = recid(R, i)
        if x[k] then
          s = 3
          break
        end
        x[k] = i
      end
    end
    R.ixs, R.ix = s, x
  end
  if s == 2 then
    local i = R.ix[id]
    if i and R.gen[i] == gen then return i end
    return nil
  end
  for i = 1, R.n do
    if not R.dead[i] and idat(R, i, id) and R.gen[i] == gen then return i end
  end
  return nil
end
-- idat: record i's id is id.
function idat(R, i, id)
  local o = R.obj[i]
  if o then return o.id == id end
  local n = #id
  if R.il[i] ~= n then return false end
  if n == 0 then return true end
  local p = R.p0[i] + RHL
  -- the last byte first: ids of one key often differ only at their end (a counter)
  return string.byte(R.s, p + n - 1) == string.byte(id, n) and sub(R.s, p, p + n - 1) == id
end
local function packholds(st)
  local R = st.hr
  local out, k, s = {}, 0, R.s
  local r0, r1 = 0, -1 -- the run of unchanged records' bytes being copied
  for i = 1, R.n do
    if not R.dead[i] then
      local p = R.p0[i]
      if p and p == r1 + 1 then
        r1 = R.p1[i]
      else
        if r1 >= r0 then
          k = k + 1
          out[k] = sub(s, r0, r1)
        end
        r0, r1 = 0, -1
        if p then
          r0, r1 = p, R.p1[i]
        else
          local h = R.obj[i]
          local settled = 0
          if h.settled then settled = 1 end
          k = k + 1
          local q = R.q0[i]
          if q and not R.rt[i] then -- the id, RT and the generation as they were read
            out[k] = pack(RH, #h.id, settled, h.amount, h.at, h.exp) .. sub(s, q + RHL, R.p1[i])
          else
            out[k] = pack(RH, #h.id, settled, h.amount, h.at, h.exp) .. h.id ..
              pack(RT .. 's', h.reserved, h.alg, h.c, h.w, h.mq, h.mr, h.ut, h.um, h.ur, h.gen)
          end
        end
      end
    end
  end
  if r1 >= r0 then
    k = k + 1
    out[k] = sub(s, r0, r1)
  end
  return table.concat(out)
end
-- heldunits is concurrencyHeld: the units the records of generation gen hold at t.
local function heldunits(st, gen, t)
  local R = recs(st)
  local n = 0
  for i = 1, R.n do
    if not R.dead[i] and not R.set[i] and t < R.exp[i] and R.gen[i] == gen then n = n + R.amt[i] end
  end
  return n
end
-- notelag is Bucket.noteLag: an admission on a current token bucket found the lag (a - t) + f/c (at least 0);
-- every open token_bucket hold's refund bound falls to it.
local function notelag(st, t, a, f)
  local lq, lr = a - t, f
  if lq < 0 or (lq == 0 and lr == 0) then lq, lr = 0, 0 end
  local R = recs(st)
  if R.live == R.nset then return end -- no open hold
  for i = 1, R.n do
    if not R.dead[i] and not R.set[i] then
      local h = holdrec(R, i)
      if h.alg == 3 and (lq < h.mq or (lq == h.mq and lr < h.mr)) then
        if h.ut ~= t then h.ut, h.um, h.ur = t, h.mq, h.mr end -- the bound before the admissions at t, for an undo
        h.mq, h.mr = lq, lr
        changed(R, h, true)
      end
    end
  end
end

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
      dirty = false, grown = 0, hb = '', hr = false }
    local v = redis.call('GET', key)
    if v then
      local z = string.find(v, '\0', 1, true)
      st.gen = string.sub(v, 1, z - 1)
      st.alg, st.seen, st.w, st.x, st.y, st.z = unpack(HF, v, z + 1)
      local body = #v
      if fmod(#v - z - HS, ES) ~= 0 then
        -- a holds section (see "Hold records" below): its blob, the blob's length (double), pad bytes, pad count
        local pad = string.byte(v, #v)
        local len = unpack('<d', v, #v - pad - 8)
        body = #v - pad - 9 - len
        st.hb = string.sub(v, body + 1, body + len)
      end
      local n = (body - z - HS) / ES
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
  local conv = false -- the state was converted: Bucket.decide's view, which holds no records while it steps
  if st.alg ~= 0 and (st.gen ~= gen or st.alg ~= algo or --@retune) then
    convert(st, t, algo, limit, window, res, floorus, gen)
    conv = true
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

-- stateuntil is the instant from which nothing in st's state counts any more, its units counted under a window of w
-- µs (a log's or a hold record's; a fixed window's units stop at the end of the window that admitted them).
local function stateuntil(st, w)
  local until_us
  --@expiry
  return until_us
end
-- ttl is how long, in ms, until nothing in st can count any more (0: nothing counts now).
local function ttl(st)
  -- The window the state was last written under, or the hold op's when longer (st.hw): a hold op that writes (a
  -- settle, a renewal, a prune) under a grown window records no units under it, yet the state's units and its
  -- records count under the grown window, so its expiry must not shorten what PutPolicy's extension of the keys'
  -- expiries kept (a denied acquire that pruned a record once deleted a key whose log still counted).
  local w = st.w
  if st.hw and st.hw > w then w = st.hw end
  local until_us = stateuntil(st, w)
  if st.alg ~= 0 then
    -- Bucket.Empty's holdsKept: a record of the state's generation is kept until its deadline (settled) or until
    -- both its deadline and its units' window w have passed.
    if st.hb ~= '' or st.hr then
      local R = recs(st)
      for i = 1, R.n do
        if not R.dead[i] and R.gen[i] == st.gen then
          local u = R.exp[i]
          if not R.set[i] and R.at[i] + w > u then u = R.at[i] + w end
          if u > until_us then until_us = u end
        end
      end
    end
  end
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
  local hb = st.hb
  if st.hr and st.hr.dirty then hb = packholds(st) end
  if hb ~= '' then
    local pad = fmod(16 - fmod(#hb + 8, 16), 16)
    tail = tail .. hb .. pack('<d', #hb) .. string.rep('\0', pad) .. string.char(pad)
  end
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

-- snapshot and restore: the call's copy of a state's fields a decision may change (a conversion, a log's expiry,
-- an admission), so a decision that must record nothing leaves the copy as it found it for the ops after it.
local function snapshot(st) return { st.alg, st.gen, st.seen, st.w, st.x, st.y, st.z, st.s, st.n, st.la, st.lc } end
local function restore(st, v)
  st.alg, st.gen, st.seen, st.w, st.x, st.y, st.z, st.s, st.n, st.la, st.lc =
    v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
end

-- stalegen: the state is of a newer generation than gen (the op's policy was deleted and re-created since).
local function stalegen(st, gen) return st.alg ~= 0 and tonumber(st.gen) > tonumber(gen) end

-- batchcheck is a check of a batch (mode "b"): domain.Bucket.Decide, so a decision that records nothing changes
-- nothing the later ops of the call see, and a stale generation is refused (4: StatusPolicyNotFound) unless the
-- rule is invalid (3).
local function batchcheck(key, algo, limit, window, res, floorus, cost, q, r, gen)
  local st = load(key)
  local v = snapshot(st)
  local was = st.dirty
  st.dirty = false
  local stale = stalegen(st, gen)
  local d = decide(key, algo, limit, window, res, floorus, cost, q, r, gen)
  if stale or not st.dirty then
    restore(st, v)
    if stale and d[1] ~= 3 then d = { 4, 0, 0, 0, 0, 0, 0, 0, 0 } end
    -- A key not written whose window grew since its expiry was set: its units must outlive the old expiry.
    if st.exists and not was and window > st.grown and window > st.w then st.grown = window end
    st.dirty = was
  else
    st.hw = nil -- this write's expiry is the state's window's, as a check's own call would set it
  end
  return d
end

-- The hold op being applied (holdop sets them; the helpers below read them, so that no closure is made per op):
-- its key's state and records, rule, instant, id, peek's emission time, and whether it dropped or changed a record.
local hst, hR, hkey, halgo, hlimit, hwindow, hres, hfloor, hgen, ht, hpq, hpr, hwas
local hdirty = false
-- hprune is pruneHolds: another generation's records go, and once its deadline has passed a settled one and one whose
-- units left the window or were stopped by the floor (none when every record is of gen and no deadline has passed).
-- The rule depends on the instant and the rule alone, as the domain's does.
local function hprune()
  local R, gen, t, window, fl = hR, hgen, ht, hwindow, hfloor
  if R.g1 == gen and t < R.mexp then return end
  local dead, set, exp, ats, gens = R.dead, R.set, R.exp, R.at, R.gen
  local mexp = MAX
  for i = 1, R.n do
    if not dead[i] then
      if gens[i] ~= gen or (t >= exp[i] and (set[i] or t >= ats[i] + window or ats[i] <= fl)) then
        droprec(R, i)
        hdirty = true
      elseif exp[i] < mexp then
        mexp = exp[i]
      end
    end
  end
  R.mexp = mexp
  if R.live > 0 then R.g1 = gen else R.g1 = nil end
end
-- htrim is trimSettled: only the MaxSettledKept (16) settled records that come last in the list are kept.
local function htrim()
  local R = hR
  local drop = R.nset - 16
  for i = 1, R.n do
    if drop <= 0 then return end
    if not R.dead[i] and R.set[i] then
      droprec(R, i)
      hdirty = true
      drop = drop - 1
    end
  end
end
-- hcurrent is Bucket.current for the op's rule; hholdcurrent Bucket.holdCurrent.
local function hcurrent()
  local st = hst
  if st.gen ~= hgen or st.alg ~= halgo then return false end
  if halgo == 3 then return st.z == hlimit and st.w == hwindow end
  if halgo == 4 then return st.w == hwindow end
  return true
end
local function hholdcurrent(h)
  local st = hst
  if st.alg ~= h.alg or st.gen ~= h.gen then return false end
  return h.alg ~= 3 or (st.z == h.c and st.w == h.w)
end
-- hoverdraft: the units the key holds over the limit at t (the state's units under the op's rule), changing
-- nothing (a log's expiry is undone).
local function hoverdraft()
  local st, t = hst, ht
  if st.alg == 0 or not hcurrent() then return 0 end
  local s, n, x, la, lc = st.s, st.n, st.x, st.la, st.lc
  local units = 0
  local cutoff = t - hwindow
  if hfloor > cutoff then cutoff = hfloor end
  if st.alg == 1 or st.alg == 2 then
    expire(st, cutoff)
    units = used(st)
  elseif st.alg == 3 then
    if st.x > t or (st.x == t and st.y > 0) then
      local d = st.x - t
      if st.y > 0 then d = d + 1 end
      units = muldivceil(d, st.z, st.w)
    end
  elseif st.alg == 4 then
    if st.x > cutoff and st.x >= t - fmod(t, st.w) then units = st.y end
  elseif st.alg == 5 then
    units = heldunits(st, st.gen, t)
  end
  st.s, st.n, st.x, st.la, st.lc = s, n, x, la, lc
  if units > hlimit then return units - hlimit end
  return 0
end
-- hfind is the op's generation's record with id, or nil.
local function hfind(id)
  local i = findrec(hR, id, hgen)
  if i then return holdrec(hR, i) end
  return nil
end
-- hfinish ends the op: its writes marked for the end of the call, and its 16 integers (d nil: a peek's decision).
local function hfinish(d, status, h, od)
  local st = hst
  local mine = st.dirty or hdirty
  if mine then st.seen, st.hw = ht, hwindow end
  st.dirty = hwas or mine
  if d == nil then
    if stalegen(st, hgen) then
      d = { 4, 0, 0, 0, 0, 0, 0, 0, 0 }
    else
      -- the peek a settle, renewal or release answers with, on the state as the op left it (unchanged by it)
      local v = snapshot(st)
      d = decide(hkey, halgo, hlimit, hwindow, hres, hfloor, 0, hpq, hpr, hgen)
      restore(st, v)
    end
  end
  local out = { d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], status, 0, 0, 0, 0, 0, od or 0 }
  if h then
    out[11], out[12], out[13], out[14] = 1, h.amount, h.at, h.exp
    if h.settled then out[15] = 1 end
  end
  return out
end

-- holdop is a hold op (domain.Bucket.ApplyHold; Store.ApplyBatch and Store.Hold in store.go) on key: op (1
-- acquire, 2 settle, 3 renew, 4 release anonymous), c the op's check as unpacked from CHECK (cost: the amount to
-- acquire, settle to or release), pq, pr token_bucket's emission time of 1 unit (for the peek a settle, renewal or
-- release answers with), id the hold's id (any bytes), ttlus its TTL in µs (0: the window). The op runs in this
-- script, not a second one, because it decides (an acquire is a check) and converts exactly as a check does: one
-- body keeps them one step. It changes the call's copy of the state (written at the end of the call). Returns the
-- 9 integers of the decision, then the hold's status (domain.HoldStatus), whether a hold is answered (1/0), its
-- amount, at, expires, settled (1/0) and the overdraft; a stale generation answers the decision 4
-- (StatusPolicyNotFound), a stored acquire over the limit in force 5 (StatusCostOverLimit, nothing done).
local function holdop(key, op, c, pq, pr, id, ttlus)
  local algo, limit, window, res, floorus, amount, gen = c[1], c[2], c[3], c[4], c[5], c[6], c[12]
  local st = load(key)
  local t = now
  if st.seen > t then t = st.seen end
  local R = recs(st)
  hst, hR, hkey, halgo, hlimit, hwindow, hres, hfloor, hgen, ht, hpq, hpr, hwas =
    st, R, key, algo, limit, window, res, floorus, gen, t, pq, pr, st.dirty
  st.dirty = false -- this op's own writes, from here to hfinish
  hdirty = false
  local dead, set, exp, gens = R.dead, R.set, R.exp, R.gen
  local finish, prune, trim, current, holdcurrent, overdraft = hfinish, hprune, htrim, hcurrent, hholdcurrent, hoverdraft
  if not known(algo) then
    if op == 1 then return finish(INVALID, 0) end
    return finish(INVALID, 2)
  end
  if c[10] == 1 and op == 1 and amount > limit then
    return finish({ 5, 0, 0, 0, 0, 0, 0, 0, 0 }, 0) -- a stored acquire over the limit in force: StatusCostOverLimit
  end
  local stale = stalegen(st, gen)
  if op == 1 then
    if stale then return finish({ 4, 0, 0, 0, 0, 0, 0, 0, 0 }, 2) end
    prune()
    local h = hfind(id)
    if h then
      if h.reserved ~= amount then return finish(nil, 3, h) end
      return finish(nil, 1, h)
    end
    if R.live >= 1024 then -- domain.MaxHolds: dropClosed, then refuse if still full
      for i = 1, R.n do
        if not dead[i] and (set[i] or (t >= exp[i] and holdrec(R, i).alg == 5)) then
          droprec(R, i)
          hdirty = true
        end
      end
      if R.live >= 1024 then return finish(nil, 6) end
    end
    -- The acquire decides as a check of cost amount; a denial keeps the state as it was (a conversion made on the
    -- way is undone), and records nothing but what the pruning above dropped.
    local saved = snapshot(st)
    acquiring = true
    local d = decide(key, algo, limit, window, res, floorus, amount, c[8], c[9], gen)
    acquiring = false
    if d[1] ~= 1 then
      restore(st, saved)
      st.dirty = false
      return finish(d, 0)
    end
    if ttlus <= 0 or ttlus > window then ttlus = window end
    local at = t
    if algo == 2 then at = ceilto(t, res) end
    h = { i = 0, id = id, amount = amount, at = at, exp = t + ttlus, settled = false, reserved = amount, alg = algo,
      c = 0, w = 0, mq = 0, mr = 0, ut = 0, um = 0, ur = 0, gen = gen }
    if algo == 3 then h.c, h.w, h.mq = limit, window, CAP end
    addrec(R, h)
    hdirty = true
    -- concurrency's step decided before the hold existed: every unit is back at the latest deadline, now maybe
    -- this one's (domain.Bucket.Acquire)
    if algo == 5 and h.exp - t > d[3] then d[3] = h.exp - t end
    return finish(d, 0, h)
  end
  if op == 4 then
    -- Release anonymous: only concurrency's units are held until released; Hold.Amount reports those given back.
    if stale or algo ~= 5 or (st.alg ~= 0 and not current()) then return finish(nil, 2) end
    prune()
    local back = 0
    for i = 1, R.n do
      if back >= amount then break end
      if not dead[i] and not set[i] and t < exp[i] and gens[i] == gen then
        local h = holdrec(R, i)
        if string.byte(h.id, 1) == 0 then
          local give = h.amount
          if amount - back < give then give = amount - back end
          h.amount = h.amount - give
          h.settled = h.amount == 0
          changed(R, h)
          back = back + give
          hdirty = true
        end
      end
    end
    trim()
    if back == 0 then return finish(nil, 2) end
    return finish(nil, 0, { amount = back, at = 0, exp = 0, settled = false }, 0)
  end
  if stale then return finish(nil, 2) end
  prune()
  local h = hfind(id)
  if not h then return finish(nil, 2) end
  if op == 3 then
    if h.settled then return finish(nil, 3, h) end
    if t >= h.exp then return finish(nil, 4, h) end
    if ttlus <= 0 or ttlus > window then ttlus = window end
    h.exp = t + ttlus
    changed(R, h)
    hdirty = true
    return finish(nil, 0, h)
  end
  -- settle
  local actual = amount
  if algo == 5 and holdcurrent(h) then
    if h.settled and actual == 0 then return finish(nil, 1, h, overdraft()) end
    if h.settled then return finish(nil, 3, h) end
    if t >= h.exp then return finish(nil, 4, h) end
    h.amount, h.settled = actual, actual == 0
    changed(R, h)
    hdirty = true
    local out = { amount = h.amount, at = h.at, exp = h.exp, settled = h.settled }
    trim()
    return finish(nil, 0, out, overdraft())
  end
  if h.settled then
    if h.amount == actual then return finish(nil, 1, h, overdraft()) end
    return finish(nil, 3, h)
  end
  local delta = actual - h.amount
  local converted = not holdcurrent(h)
  if delta < 0 and converted then return finish(nil, 5, h) end
  if delta < 0 and t >= h.exp then return finish(nil, 4, h) end
  if delta ~= 0 and converted then
    -- forceRecord: the excess at t under the rule in force, the state converted to it first
    if st.alg ~= 0 and not current() then convert(st, t, algo, limit, window, res, floorus, gen) end
    if algo == 1 then
      record(st, t, delta)
    elseif algo == 2 then
      record(st, ceilto(t, res), delta)
    elseif algo == 3 then
      if st.alg ~= 3 or st.x < t or (st.x == t and st.y == 0) then st.x, st.y = t, 0 end
      local q, r = muldivrem(delta, window, limit)
      st.x, st.y, st.z = st.x + q, st.y + r, limit
      if st.y >= limit then st.x, st.y = st.x + 1, st.y - limit end
    elseif algo == 4 then
      if st.alg ~= 4 or st.x < t - fmod(t, window) then st.x, st.y = t, 0 end
      if t > st.x then st.x = t end
      st.y = st.y + delta
    end
    st.alg, st.gen, st.w = algo, gen, window
    st.dirty = true
  elseif delta ~= 0 then
    -- the algorithm's adjust, on the state that recorded the hold (current)
    if h.alg == 1 or h.alg == 2 then
      local lo, hi = 1, st.n + 1
      while lo < hi do
        local mid = floor((lo + hi) / 2)
        if at(st, mid) >= h.at then hi = mid else lo = mid + 1 end
      end
      if lo <= st.n and at(st, lo) == h.at then
        local prev = st.x
        if lo > 1 then prev = cum(st, lo - 1) end
        local units = cum(st, lo) - prev
        if delta < -units then delta = -units end
        local out = { string.sub(entries(st), 1, (lo - 1) * ES) }
        for j = lo, st.n do
          if j ~= lo or units + delta > 0 then out[#out + 1] = pack('<dd', at(st, j), cum(st, j) + delta) end
        end
        setentries(st, table.concat(out))
        st.dirty = true
      end
    elseif h.alg == 3 then
      if delta > 0 then
        local q, r = muldivrem(delta, st.w, st.z)
        st.x, st.y = st.x + q, st.y + r
        if st.y >= st.z then st.x, st.y = st.x + 1, st.y - st.z end
      else
        local q, r = muldivrem(-delta, st.w, st.z)
        if h.mq < q or (h.mq == q and h.mr < r) then q, r = h.mq, h.mr end
        st.x, st.y = st.x - q, st.y - r
        if st.y < 0 then st.x, st.y = st.x - 1, st.y + st.z end
      end
      st.dirty = true
    elseif h.alg == 4 then
      local start = t - fmod(t, st.w)
      if not (h.at < start or st.x < start) then
        st.y = st.y + delta
        if st.y < 0 then st.y = 0 end
        st.dirty = true
      end
    end
  end
  h.amount, h.settled = actual, true
  changed(R, h)
  hdirty = true
  trim()
  return finish(nil, 0, h, overdraft())
end

if mode == 'b' then
  -- A batch (domain.BucketHold; Store.ApplyBatch and Store.Hold in store.go): KEYS[i] the key of op i (every key
  -- in one slot; the last key the policy records' hash when ARGV[5] is "1"), ARGV[4] the ops' checks packed as
  -- above (a check's cost; a hold op's amount), ARGV[6] per op "<BdddI4" and the id's bytes: the op (0 a check, 1
  -- acquire, 2 settle, 3 renew, 4 release anonymous), the TTL in µs (0: the window), token_bucket's emission
  -- time of 1 unit (q, r: a hold op's peek), the id's length. The ops run in order, each on the state the ops
  -- before it left (a check is Decide, a hold op holdop), and the states are written once, at the end: not one
  -- step for the domain's contract (storetest.OpBatcher), but atomic anyway, as every script. Every stored op's
  -- revision is fenced first, as in mode "d" ("stale" answers: nothing decided or written). Returns per op its
  -- integers: a check's 9 (decide's, 4 for a stale generation), a hold op's 16 (holdop's).
  local nops, pk = n, nil
  if ARGV[5] == '1' then
    nops, pk = n - 1, KEYS[n]
  end
  local checks, held, stale, pos = {}, {}, nil, 1
  for i = 1, nops do
    local c = { unpack(CHECK, ARGV[4], pos) }
    pos = c[14]
    checks[i] = c
    if pk and c[10] == 1 and held[c[13]] == nil then
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
  local out, k, opos, ops = {}, 0, 1, ARGV[6]
  for i = 1, nops do
    local c = checks[i]
    local op, ttlus, pq, pr, idlen
    op, ttlus, pq, pr, idlen, opos = unpack('<BdddI4', ops, opos)
    if op == 0 then
      local d = batchcheck(KEYS[i], c[1], c[2], c[3], c[4], c[5], c[6], c[8], c[9], c[12])
      for j = 1, 9 do out[k + j] = d[j] end
      k = k + 9
    else
      local id = string.sub(ops, opos, opos + idlen - 1)
      opos = opos + idlen
      local v = holdop(KEYS[i], op, c, pq, pr, id, ttlus)
      for j = 1, 16 do out[k + j] = v[j] end
      k = k + 16
    end
  end
  for key, st in pairs(states) do
    if st.dirty then save(key, st) end
    if st.grown > 0 then
      -- Only the expiry moves: to at least now plus the grown window (see the end of the script).
      local ms = floor(st.grown / 1000) + 1 + slack
      if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
    end
  end
  return out
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

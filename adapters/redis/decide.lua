-- sluice decision script: applies one or more checks atomically (a Lua script runs alone on its Redis node).
-- Loaded once per node and run with EVALSHA (the client falls back to EVAL on NOSCRIPT).
--
-- KEYS[i]  the Redis key of check i (every key of one call is in one hash slot).
-- ARGV[1]  mode: "d" decide, "n" decide but record nothing, "u" undo a reservation (see below).
-- ARGV[2]  the instant in microseconds since the Unix epoch, or "" for the server clock (TIME).
-- ARGV[3]  "1" for an atomic call: record nothing unless every non-shadow check is admitted.
-- Then 9 arguments per check, in order:
--   algo (1 sliding_log, 2 sliding_window, 3 token_bucket, 4 fixed_window), limit, window (µs), resolution (µs),
--   floor (µs: units recorded at or before it never count), generation (a string), cost (0 peeks),
--   shadow ("1" or "0"), increment (token_bucket: ceil(max(cost,1) × window / limit) in ns; else 0).
--
-- Every quantity is an integer below 2^53, so Lua's doubles hold it exactly: instants are microseconds (~2^51),
-- durations at most 31 days (~2^51 in ns), counts at most 2^53-1 (cumulative counts are rebased before they
-- would pass it). Divisions go through math.fmod, which is exact.
--
-- The value of a key is: generation, "\0", then struct "<Bdddd" (algo, seen, ttlwindow, x, y), then for the
-- logs, entries "<dd" (instant µs, cumulative count). seen is the newest instant a write used (time never runs
-- backwards for a key, even when a failover hands it to a node whose clock is behind); ttlwindow the window its
-- expiry was computed with. x, y: logs (base, 0): base is the cumulative count of the units before the first
-- entry; token_bucket (tat µs, tat ns remainder); fixed_window (window start µs, count).
--
-- Returns 6 integers per check: allowed (1/0), remaining, reset_after (ns), retry_after (ns), recorded (the
-- instant µs the units were recorded at, 0 if none), and for token_bucket the ns from now to the new tat
-- (others 0). In undo mode returns the number of checks undone.
local MAX = 9007199254740991
local fmod, floor = math.fmod, math.floor
local pack, unpack = struct.pack, struct.unpack
local ES = 16 -- bytes per log entry
local mode = ARGV[1]
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end

local states = {}

-- load returns the state of key for (algo, gen), from this call's cache or the store. State under another
-- generation or algorithm counts for nothing.
local function load(key, algo, gen)
  local st = states[key]
  if st == nil then
    st = { exists = false }
    local v = redis.call('GET', key)
    if v then
      local z = string.find(v, '\0', 1, true)
      st.gen = string.sub(v, 1, z - 1)
      st.algo, st.seen, st.w, st.x, st.y = unpack('<Bdddd', v, z + 1)
      st.s = string.sub(v, z + 34)
      st.n = #st.s / ES
      st.exists = true
    end
    states[key] = st
  end
  if st.gen ~= gen or st.algo ~= algo then
    st.gen, st.algo, st.seen, st.w, st.x, st.y, st.s, st.n = gen, algo, 0, 0, 0, 0, '', 0
    if algo == 4 then st.x = -1 end
  end
  return st
end

local function at(st, i) return (unpack('<d', st.s, (i - 1) * ES + 1)) end
local function cum(st, i) return (unpack('<d', st.s, (i - 1) * ES + 9)) end

-- expire drops the entries recorded at or before cutoff.
local function expire(st, cutoff)
  if st.n == 0 then return end
  local lo, hi = 1, st.n + 1 -- first entry with at > cutoff
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if at(st, mid) > cutoff then hi = mid else lo = mid + 1 end
  end
  if lo > st.n then
    st.s, st.n, st.x = '', 0, 0
  elseif lo > 1 then
    st.x = cum(st, lo - 1)
    st.s = string.sub(st.s, (lo - 1) * ES + 1)
    st.n = st.n - (lo - 1)
  end
end

local function used(st)
  if st.n == 0 then return 0 end
  return cum(st, st.n) - st.x
end

-- record adds cost units at instant rec (merged into the newest entry when it is at rec or later).
local function record(st, rec, cost)
  local last = st.x
  if st.n > 0 then last = cum(st, st.n) end
  if last + cost > MAX then -- rebase the cumulative counts to the first entry
    local b, out = st.x, {}
    for i = 1, st.n do out[i] = pack('<dd', at(st, i), cum(st, i) - b) end
    st.s, st.x, last = table.concat(out), 0, last - b
  end
  if st.n > 0 and at(st, st.n) >= rec then
    st.s = string.sub(st.s, 1, (st.n - 1) * ES) .. pack('<dd', at(st, st.n), last + cost)
    return at(st, st.n)
  end
  st.s = st.s .. pack('<dd', rec, last + cost)
  st.n = st.n + 1
  return rec
end

-- decide applies check c (its arguments from ARGV[base+1]) to the state of key; it records only when admitted
-- and not a peek (and the caller may still discard the state).
local function decide(key, base)
  local algo = tonumber(ARGV[base + 1])
  local limit = tonumber(ARGV[base + 2])
  local window = tonumber(ARGV[base + 3])
  local res = tonumber(ARGV[base + 4])
  local floorus = tonumber(ARGV[base + 5])
  local gen = ARGV[base + 6]
  local cost = tonumber(ARGV[base + 7])
  local inc = tonumber(ARGV[base + 9])
  local st = load(key, algo, gen)
  local t = now
  if st.seen > t then t = st.seen end
  local peek = cost == 0
  if peek then cost = 1 end
  if algo == 1 or algo == 2 then
    local cutoff = t - window
    if floorus > cutoff then cutoff = floorus end
    expire(st, cutoff)
    local u = used(st)
    local rec = t
    if algo == 2 then
      local r = fmod(t, res)
      if r ~= 0 then rec = t - r + res end
    end
    if u + cost <= limit then
      local recorded = 0
      local newest = rec
      if st.n > 0 and at(st, st.n) > newest then newest = at(st, st.n) end
      if not peek then
        recorded = record(st, rec, cost)
        st.dirty, st.seen = true, t
      end
      return { 1, limit - u - cost, (newest + window - t) * 1000, 0, recorded, 0 }
    end
    local rem = limit - u
    if rem < 0 then rem = 0 end
    local target = cum(st, st.n) - (limit - cost)
    local lo, hi = 1, st.n
    while lo < hi do
      local mid = floor((lo + hi) / 2)
      if cum(st, mid) >= target then hi = mid else lo = mid + 1 end
    end
    return { 0, rem, (at(st, st.n) + window - t) * 1000, (at(st, lo) + window - t) * 1000, 0, 0 }
  elseif algo == 3 then
    -- tat - t in ns, or 0 when tat is not after t (the bucket is full).
    local d0 = 0
    if st.x >= t then d0 = (st.x - t) * 1000 + st.y end
    local wns = window * 1000
    local nxt = d0 + inc
    if nxt <= wns then
      if not peek then
        local r = fmod(nxt, 1000)
        st.x, st.y = t + (nxt - r) / 1000, r
        st.dirty, st.seen = true, t
        return { 1, 0, 0, 0, t, nxt }
      end
      return { 1, 0, 0, 0, 0, nxt }
    end
    return { 0, 0, d0, nxt - wns, 0, d0 }
  else
    local start = t - fmod(t, window)
    local u = 0
    if st.x == start and start > floorus then u = st.y end
    if u + cost <= limit then
      if not peek then
        st.x, st.y = start, u + cost
        st.dirty, st.seen = true, t
      end
      return { 1, limit - u - cost, (start + window - t) * 1000, 0, peek and 0 or start, 0 }
    end
    local rem = limit - u
    if rem < 0 then rem = 0 end
    return { 0, rem, (start + window - t) * 1000, (start + window - t) * 1000, 0, 0 }
  end
end

-- ttl is how long, in ms, until nothing in st can count any more (at least 1).
local function ttl(st)
  local until_us
  if st.algo == 1 or st.algo == 2 then
    if st.n == 0 then return 0 end
    until_us = at(st, st.n) + st.w
  elseif st.algo == 3 then
    until_us = st.x + 1
  else
    until_us = st.x + st.w
  end
  local ms = (until_us - now) / 1000
  ms = ms - fmod(ms, 1) + 1
  if ms < 1 then ms = 1 end
  return ms
end

local function save(key, st)
  local ms = ttl(st)
  if ms == 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('SET', key, st.gen .. '\0' .. pack('<Bdddd', st.algo, st.seen, st.w, st.x, st.y) .. st.s, 'PX', ms)
end

local n = #KEYS
if mode == 'u' then
  -- Undo: ARGV per check as in decide, plus ARGV[base+10] the instant the reservation recorded at and
  -- ARGV[base+11] (token_bucket) the increment's ns. Removes exactly the reserved units where they still are.
  local undone = 0
  for i = 1, n do
    local base = 3 + (i - 1) * 11
    local algo, window, gen = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 3]), ARGV[base + 6]
    local cost, rec, inc = tonumber(ARGV[base + 7]), tonumber(ARGV[base + 10]), tonumber(ARGV[base + 11])
    local st = load(KEYS[i], algo, gen)
    if st.exists and rec > 0 then
      st.w = window
      if algo == 1 or algo == 2 then
        local lo, hi = 1, st.n + 1
        while lo < hi do
          local mid = floor((lo + hi) / 2)
          if at(st, mid) >= rec then hi = mid else lo = mid + 1 end
        end
        if lo <= st.n and at(st, lo) == rec then
          local out = { string.sub(st.s, 1, (lo - 1) * ES) }
          local prev = st.x
          if lo > 1 then prev = cum(st, lo - 1) end
          for j = lo, st.n do
            local c = cum(st, j) - cost
            if c > prev then
              out[#out + 1] = pack('<dd', at(st, j), c)
              prev = c
            end
          end
          st.s = table.concat(out)
          st.n = #st.s / ES
          st.dirty = true
          undone = undone + 1
        end
      elseif algo == 3 then
        -- tat - inc, relative to now so every intermediate stays below 2^53.
        local rel = (st.x - now) * 1000 + st.y - inc
        local q = fmod(rel, 1000)
        if q < 0 then q = q + 1000 end
        st.x, st.y = now + (rel - q) / 1000, q
        st.dirty = true
        undone = undone + 1
      elseif st.x == rec then
        st.y = st.y - cost
        if st.y < 0 then st.y = 0 end
        st.dirty = true
        undone = undone + 1
      end
    end
  end
  for key, st in pairs(states) do
    if st.dirty then save(key, st) end
  end
  return undone
end

local atomic = ARGV[3] == '1'
local out = {}
local commit = mode ~= 'n' -- "n": evaluate only (the later slots of a refused cross-slot batch)
for i = 1, n do
  local base = 3 + (i - 1) * 9
  local d = decide(KEYS[i], base)
  local st = states[KEYS[i]]
  local window = tonumber(ARGV[base + 3])
  if st.dirty or st.exists then
    if window > st.w then
      st.grown = true
    end
    st.w = window
  end
  if d[1] == 0 and ARGV[base + 8] ~= '1' and atomic then commit = false end
  for j = 1, 6 do out[#out + 1] = d[j] end
end
if commit then
  for key, st in pairs(states) do
    -- A key written, or one whose window grew since its expiry was set (its units must outlive the old one).
    if st.dirty or (st.grown and st.exists) then save(key, st) end
  end
end
return out

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


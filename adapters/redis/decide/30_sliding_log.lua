-- sliding_log (code 1): a log of (instant, cumulative count) entries; a check counts the units recorded after
-- max(t - window, floor). sliding_window (code 2, the next file) is the same log with instants rounded up to its
-- resolution, so the log's functions here serve both.
local function logstep(st, t, c, need, admit, rec)
  local limit, window = c.limit, c.window
  local cutoff = t - window
  if c.floor > cutoff then cutoff = c.floor end
  expire(st, cutoff)
  local u = used(st)
  if u <= limit - need then
    local newest = rec
    if st.n > 0 and st.la > newest then newest = st.la end
    local recorded = 0
    if c.cost > 0 then
      recorded = record(st, rec, c.cost)
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

local function logunits(st, t, cutoff)
  expire(st, cutoff)
  if st.n > 0 then return used(st), st.la end
  return 0, 0
end

local function logexpiry(st)
  if st.n == 0 then return 0 end
  return st.la + st.w
end

-- logundo removes cost units recorded at rec, wherever later checks left them.
local function logundo(st, c, rec)
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
    local cj = cum(st, j) - c.cost
    if cj > prev then
      out[#out + 1] = pack('<dd', at(st, j), cj)
      prev = cj
    end
  end
  setentries(st, table.concat(out))
  return true
end

local function never() return false end

ALG[1] = {
  step = function(st, t, c, need, admit) return logstep(st, t, c, need, admit, t) end,
  units = logunits,
  into = function(st, t, at_, n) record(st, at_, n) end,
  retune = never,
  expiry = logexpiry,
  undo = logundo,
}

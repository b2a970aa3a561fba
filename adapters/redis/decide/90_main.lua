-- parse reads one CHECK record of s at pos into the table c (a new one when nil), and returns it and the next
-- position.
local function parse(s, pos, c)
  c = c or {}
  c.algo, c.limit, c.window, c.res, c.floor, c.cost, c.shadow, c.q, c.r, c.stored, c.rev, c.gen, c.name, pos =
    unpack(CHECK, s, pos)
  return c, pos
end

-- convert turns the state into the view of check c of generation gen (conversion spec v2): state of another
-- generation is empty; otherwise the units that still count (the state's algorithm's units: a token bucket's
-- under the limit and window that wrote them, not capped) are kept, as recorded at their instant, in c's
-- algorithm (its into). It changes only the call's copy: the key is written only when a check admits.
local function convert(st, t, c)
  local units, t_at = 0, 0
  if st.gen == c.gen then
    local cutoff = t - c.window
    if c.floor > cutoff then cutoff = c.floor end
    units, t_at = ALG[st.alg].units(st, t, cutoff, c)
  end
  empty(st)
  if units <= 0 then return end
  if units > MAX then units = MAX end
  st.alg, st.gen = c.algo, c.gen
  ALG[c.algo].into(st, t, t_at, units, c)
end

-- decide applies check c to the state of key: an algorithm code outside ALG, in the check or in the stored
-- state, is answered INVALID without deciding.
local function decide(key, c)
  local alg = ALG[c.algo]
  if alg == nil then return INVALID end
  local st = load(key)
  if st.alg ~= 0 and ALG[st.alg] == nil then return INVALID end
  local t = now
  if st.seen > t then t = st.seen end
  if st.alg ~= 0 and (st.gen ~= c.gen or st.alg ~= c.algo or alg.retune(st, c)) then convert(st, t, c) end
  local need = c.cost
  if need == 0 then need = 1 end -- a peek reports what a cost-1 check would get
  local admit = function()
    if c.cost > 0 then
      if st.alg == 0 then st.alg, st.gen = c.algo, c.gen end
      st.dirty, st.seen, st.w = true, t, c.window
    end
  end
  return alg.step(st, t, c, need, admit)
end

-- ttl is how long, in ms, until nothing in st can count any more (0: nothing counts now).
local function ttl(st)
  local alg = ALG[st.alg]
  if alg == nil then return 0 end
  local ms = (alg.expiry(st) - now) / 1000
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
    local c
    c, pos = parse(ARGV[4], pos)
    local rec = unpack('<d', ARGV[5], (i - 1) * 8 + 1)
    local st = load(KEYS[i])
    if st.exists and rec > 0 and c.cost > 0 and st.alg == c.algo and st.gen == c.gen and ALG[c.algo] then
      if ALG[c.algo].undo(st, c, rec) then
        st.dirty = true
        undone = undone + 1
      end
      st.w = c.window
    end
  end
  for key, st in pairs(states) do
    if st.dirty then save(key, st) end
  end
  return undone
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

-- check decides check c of key i and appends its nine integers to out.
local function check(i, c)
  local d = decide(KEYS[i], c)
  local st = states[KEYS[i]]
  -- A key not written whose window grew since its expiry was set: its units must outlive the old expiry.
  if st and st.exists and not st.dirty and c.window > st.grown and c.window > st.w then st.grown = c.window end
  if d[1] ~= 1 and c.shadow ~= 1 and atomic then commit = false end
  for j = 1, 9 do out[#out + 1] = d[j] end
end

local pos = 1
if ARGV[5] ~= '1' then
  local c = {} -- one table for every check: nothing keeps a check's fields after check() returns
  for i = 1, n do
    c, pos = parse(ARGV[4], pos, c)
    check(i, c)
  end
else
  n = n - 1
  local checks, pk, held, stale = {}, KEYS[n + 1], {}, nil
  for i = 1, n do
    local c
    c, pos = parse(ARGV[4], pos)
    checks[i] = c
    if c.stored == 1 and held[c.name] == nil then
      local rec = redis.call('HGET', pk, c.name)
      held[c.name] = true
      if not rec or revision(rec) ~= c.rev then
        stale = stale or { 'stale' }
        stale[#stale + 1] = c.name
        stale[#stale + 1] = rec or ''
      end
    end
  end
  if stale then return stale end
  for i = 1, n do check(i, checks[i]) end
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


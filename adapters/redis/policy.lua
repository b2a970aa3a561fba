-- sluice API policies: KEYS[1] the hash (name -> record), KEYS[2] the version counter, KEYS[3] the generation
-- counter, KEYS[4] the invalidation channel name (not a key of the slot, only published to).
-- record: limit|window_ms|algorithm|resolution_ms|failure_mode|shadow|floor_us|generation
-- ARGV: "put", name, limit, window_ms, algorithm, resolution_ms, failure_mode, shadow   or   "del", name
-- Returns {created or deleted (1/0), floor_us, generation, version}.
local function fmt(x) return string.format('%.0f', x) end
local name = ARGV[2]
local old = redis.call('HGET', KEYS[1], name)
if ARGV[1] == 'del' then
  if not old then return { 0, 0, 0, 0 } end
  redis.call('HDEL', KEYS[1], name)
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', KEYS[4], name)
  return { 1, 0, 0, v }
end
local floor, gen = 0, 0
if old then
  local f = {}
  for part in string.gmatch(old, '[^|]+') do f[#f + 1] = part end
  floor, gen = tonumber(f[7]), tonumber(f[8])
  if f[2] ~= ARGV[4] or f[3] ~= ARGV[5] then
    -- The window or the algorithm changes now (domain.NextFloor): the units that had stopped counting under the
    -- old policy (older than one old window; fixed_window: before the current window) never count again.
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local w = tonumber(f[2]) * 1000
    local cut = now - w
    if f[3] == 'fixed_window' then cut = now - math.fmod(now, w) - 1 end
    if cut > floor then floor = cut end
  end
else
  gen = redis.call('INCR', KEYS[3])
end
redis.call('HSET', KEYS[1], name, table.concat({ ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], fmt(floor), fmt(gen) }, '|'))
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[4], name)
local created = 0
if not old then created = 1 end
return { created, floor, gen, v }

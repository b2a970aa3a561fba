-- sluice API policies: KEYS[1] the hash (name -> record), KEYS[2] the version counter, KEYS[3] the generation
-- counter, KEYS[4] the invalidation channel name (not a key of the slot, only published to), KEYS[5] the epoch.
-- record: limit|window_ms|algorithm|resolution_ms|failure_mode|shadow|floor_us|generation|revision
-- (revision: the version counter's value at the record's last change; decide.lua compares it with the check's).
-- ARGV: op, a fresh random epoch id (used only when the epoch is missing), then
--   "put", id, name, limit, window_ms, algorithm, resolution_ms, failure_mode, shadow
--   "del", id, name
--   "restore", id, name, limit, window_ms, algorithm, resolution_ms, failure_mode, shadow, floor_us, generation
--     (written only if no record of the name exists: a replica puts back what it held after Redis lost it)
--   "epoch", id
-- Every op first makes sure the epoch exists: when it is missing (a new Redis, or one that lost its data), it is
-- set to ARGV[2] and the version and generation counters are raised to at least the Redis clock in µs, so a
-- revision or generation given after a loss never repeats one given before it.
-- Returns {done (created, deleted or restored: 1/0), floor_us, generation, revision, epoch, epoch made (1/0),
-- the record written or ''}.
local function fmt(x) return string.format('%.0f', x) end
local op = ARGV[1]
local epoch, made = redis.call('GET', KEYS[5]), 0
if not epoch then
  epoch, made = ARGV[2], 1
  redis.call('SET', KEYS[5], epoch)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for _, k in ipairs({ KEYS[2], KEYS[3] }) do
    local v = tonumber(redis.call('GET', k) or '0')
    if v < now then redis.call('SET', k, fmt(now)) end
  end
end
if op == 'epoch' then return { 0, 0, 0, 0, epoch, made, '' } end
local name = ARGV[3]
local old = redis.call('HGET', KEYS[1], name)
if op == 'del' then
  if not old then return { 0, 0, 0, 0, epoch, made, '' } end
  redis.call('HDEL', KEYS[1], name)
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', KEYS[4], name)
  return { 1, 0, 0, v, epoch, made, '' }
end
local floor, gen = 0, 0
if op == 'restore' then
  if old then return { 0, 0, 0, 0, epoch, made, '' } end
  floor, gen = tonumber(ARGV[10]), tonumber(ARGV[11])
  if gen > tonumber(redis.call('GET', KEYS[3]) or '0') then redis.call('SET', KEYS[3], fmt(gen)) end
elseif old then
  local f = {}
  for part in string.gmatch(old, '[^|]+') do f[#f + 1] = part end
  floor, gen = tonumber(f[7]), tonumber(f[8])
  if f[2] ~= ARGV[5] or f[3] ~= ARGV[6] then
    -- The window or the algorithm changes now (domain.NextFloor): the units that had stopped counting under the
    -- old policy (older than one old window, whatever the algorithm) never count again.
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local w = tonumber(f[2]) * 1000
    local cut = now - w
    if cut > floor then floor = cut end
  end
else
  gen = redis.call('INCR', KEYS[3])
end
local v = redis.call('INCR', KEYS[2])
local rec = table.concat({ ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], fmt(floor), fmt(gen), fmt(v) }, '|')
redis.call('HSET', KEYS[1], name, rec)
redis.call('PUBLISH', KEYS[4], name)
local done = 0
if not old then done = 1 end
return { done, floor, gen, v, epoch, made, rec }

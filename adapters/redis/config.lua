-- sluice config-file policies as the store last saw them: KEYS[1] the hash (name -> record
-- "window_ms|algorithm|floor_us"). ARGV: name, window_ms, algorithm, the instant in µs or "" for the server clock,
-- the floor the registering replica holds for the name (µs; 0: none), which the record's never goes below (it
-- survives Redis losing this hash). When the window or the algorithm differs from
-- the record (a redeploy changed the file), the floor is raised as domain.NextFloor does, at this instant on the
-- Redis clock, so units that had stopped counting under the old policy never count again. Returns {floor_us,
-- changed (1/0), the old window in ms (0: none)}.
local old = redis.call('HGET', KEYS[1], ARGV[1])
local floor, changed, oldw = tonumber(ARGV[5] or '0'), 0, 0
if old then
  local f = {}
  for part in string.gmatch(old, '[^|]+') do f[#f + 1] = part end
  oldw = tonumber(f[1])
  if tonumber(f[3]) > floor then floor = tonumber(f[3]) end
  if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
    local now = tonumber(ARGV[4])
    if ARGV[4] == '' then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local w = tonumber(f[1]) * 1000
    local cut = now - w
    if cut > floor then floor = cut end
    changed = 1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], table.concat({ ARGV[2], ARGV[3], string.format('%.0f', floor) }, '|'))
return { floor, changed, oldw }

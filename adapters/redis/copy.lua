-- sluice per-slot policy copies (Redis Cluster only): KEYS[1] the copies hash of one slot (name -> record, as
-- policy.lua writes it). ARGV: triples name, revision, record; a record "-|<revision>" is a deletion. Each is
-- applied only if the slot holds a record of the name with a lower revision (a record: or none), so copies of
-- concurrent changes written in any order converge on the newest; a deletion removes the field (no tombstone is
-- kept, so deleted names take no memory; a missing record makes decide.lua answer stale, and the Go side then
-- reads the policies hash). Returns how many were applied.
local n = 0
for i = 1, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local rev = tonumber(ARGV[i + 1])
  local newer = not old or tonumber(string.match(old, '|(%d+)$') or '-1') < rev
  if string.sub(ARGV[i + 2], 1, 2) == '-|' then
    if old and newer then
      redis.call('HDEL', KEYS[1], ARGV[i])
      n = n + 1
    end
  elseif newer then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n

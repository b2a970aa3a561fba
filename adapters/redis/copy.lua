-- sluice per-slot policy copies (Redis Cluster only): KEYS[1] the copies hash of one slot (name -> record, as
-- policy.lua writes it, or "-|<revision>" for a deleted policy). ARGV: triples name, revision, record. Each record
-- is written only if the slot holds no record of the name or one with a lower revision, so concurrent changes
-- written in any order converge on the newest. Returns how many were written.
local n = 0
for i = 1, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local rev = tonumber(ARGV[i + 1])
  if not old or tonumber(string.match(old, '|(%d+)$') or '-1') < rev then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n

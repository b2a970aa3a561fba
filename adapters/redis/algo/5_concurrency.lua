-- concurrency (code 5): limit is the units held at once, window the longest a hold lives unrenewed
-- (domain/concurrency.go). The state is nothing but the key's hold records (decide.lua's holds section): a record of
-- the check's generation counts its amount from acquisition until released or until its deadline passes. A check
-- of cost > 0 has nothing to release and is INVALID; only an acquire (holdop, acquiring) takes units, and the
-- hold op records the hold itself. A peek reports the units held.
--@helpers
-- concstep is stepConcurrency: remaining after the decision, reset_after to the latest deadline, retry_after (when
-- denied) to the first deadline at which the units still held leave room for need.
local function concstep(st, t, limit, gen, need, conv)
  local held, last, dues = 0, 0, {}
  local R = { n = 0 }
  if not conv then R = recs(st) end -- a converted view steps without the records, as Bucket.decide's
  for i = 1, R.n do
    if not R.dead[i] and not R.set[i] and t < R.exp[i] and R.gen[i] == gen then
      held = held + R.amt[i]
      if R.exp[i] > last then last = R.exp[i] end
      dues[#dues + 1] = i
    end
  end
  local reset = 0
  if last > t then reset = last - t end
  if held <= limit - need then return { 1, limit - held - need, reset, 0, 0, 0, 0, 0, 0 } end
  local rem = limit - held
  if rem < 0 then rem = 0 end
  local exp, amt = R.exp, R.amt
  table.sort(dues, function(x, y) return exp[x] < exp[y] end)
  local left, retry = held, 0
  for _, i in ipairs(dues) do
    left = left - amt[i]
    if left <= limit - need then
      retry = exp[i] - t
      break
    end
  end
  return { 0, rem, reset, retry, 0, 0, 0, 0, 0 }
end
--@step
if cost > 0 and not acquiring then return INVALID end
local d = concstep(st, t, limit, gen, need, conv)
if d[1] == 1 and cost > 0 then admit() end
return d
--@units
units, t_at = heldunits(st, st.gen, t), t
--@into
-- nothing: the records are the units, and a conversion keeps them
--@expiry
until_us = 0

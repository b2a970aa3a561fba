-- token_bucket (code 3): the state is the theoretical arrival time tat = x + y/z µs (z the limit that wrote it, the
-- header's w its window). A check of cost k moves tat to max(tat, t) + k × window / limit (q + r/limit, computed in
-- Go) and is admitted if that is at most one window past t.
--@helpers
-- tbset makes st a token bucket holding n units under (limit, window) at t: tat = t + n × window / limit, exact
-- (106-bit product), clamped at t + 2^43 µs (a view that far past any window denies; the clamp keeps every number
-- below 2^53).
local function tbset(st, t, n, limit, window)
  local q, r = CAP, 0
  if n / limit * window <= CAP + 16 then
    q, r = muldivrem(n, window, limit)
    if q > CAP then q, r = CAP, 0 end
  end
  st.x, st.y, st.z, st.w = t + q, r, limit, window
end
--@retune
st.z ~= limit or st.w ~= window
--@step
local a, f = st.x, st.y
local ra, rf = a, f -- the lag an admission finds is before the clamp (Bucket.noteLag)
if st.alg ~= 3 or a < t or (a == t and f == 0) then a, f = t, 0 end
-- na + nf/limit = a + f/limit + q + r/limit, with the carry taken without forming f + r
local na, nf = a + q, 0
if f >= limit - r then na, nf = na + 1, f - (limit - r) else nf = f + r end
local allowed = na - t < window or (na - t == window and nf == 0)
if allowed then
  local recorded = 0
  if cost > 0 then
    if not conv and (st.hr or st.hb ~= '') then notelag(st, t, ra, rf) end
    st.x, st.y, st.z = na, nf, limit
    recorded = t
    admit()
  end
  return { 1, 0, 0, 0, recorded, na - t, nf, a - t, f }
end
return { 0, 0, 0, 0, 0, na - t, nf, a - t, f }
--@units
-- The time still owed, d = ceil(tat) - t µs, in units of the limit and window that wrote it: ceil(d × z / w),
-- not capped by any limit.
if st.x > t or (st.x == t and st.y > 0) then
  local d = st.x - t
  if st.y > 0 then d = d + 1 end
  local w = st.w
  if w <= 0 then w = window end
  if d / w * st.z > MAX - 16 then units = MAX else units = muldivceil(d, st.z, w) end
  t_at = t
end
--@into
tbset(st, t, units, limit, window)
--@expiry
until_us = st.x + 1
--@undo
if st.z == limit then
  local a, f = st.x - q, st.y
  if f >= r then f = f - r else a, f = a - 1, f + (limit - r) end
  st.x, st.y = a, f
  done = true
  -- the open holds' refund bounds the reserved admission lowered (its instant rec) are given back
  if st.hr or st.hb ~= '' then
    local R = recs(st)
    for i = 1, R.n do
      if not R.dead[i] then
        local h = holdrec(R, i)
        if h.alg == 3 and h.ut == rec then
          h.mq, h.mr, h.ut = h.um, h.ur, 0
          changed(R, h, true)
        end
      end
    end
  end
end

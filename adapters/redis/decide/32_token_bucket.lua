-- token_bucket (code 3): the state is its theoretical arrival time tat = x + y/z µs (z the limit that wrote it;
-- st.w the window). A check of cost k moves tat to max(tat, t) + k × window / limit (q + r/limit, computed in Go)
-- and is admitted if that is at most one window past t.

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

ALG[3] = {
  step = function(st, t, c, need, admit)
    local limit, window, q, r = c.limit, c.window, c.q, c.r
    local a, f = st.x, st.y
    if st.alg ~= 3 or a < t or (a == t and f == 0) then a, f = t, 0 end
    -- na + nf/limit = a + f/limit + q + r/limit, with the carry taken without forming f + r
    local na, nf = a + q, 0
    if f >= limit - r then na, nf = na + 1, f - (limit - r) else nf = f + r end
    local allowed = na - t < window or (na - t == window and nf == 0)
    if allowed then
      local recorded = 0
      if c.cost > 0 then
        st.x, st.y, st.z = na, nf, limit
        recorded = t
        admit()
      end
      return { 1, 0, 0, 0, recorded, na - t, nf, a - t, f }
    end
    return { 0, 0, 0, 0, 0, na - t, nf, a - t, f }
  end,
  -- The units of the time still owed, d = ceil(tat) - t µs, under the limit and window that wrote them:
  -- ceil(d × z / w), not capped by any limit.
  units = function(st, t, _, c)
    if st.x > t or (st.x == t and st.y > 0) then
      local d = st.x - t
      if st.y > 0 then d = d + 1 end
      local w = st.w
      if w <= 0 then w = c.window end
      if d / w * st.z > MAX - 16 then return MAX, t end
      return muldivceil(d, st.z, w), t
    end
    return 0, 0
  end,
  into = function(st, t, _, n, c) tbset(st, t, n, c.limit, c.window) end,
  retune = function(st, c) return st.z ~= c.limit or st.w ~= c.window end,
  expiry = function(st) return st.x + 1 end,
  undo = function(st, c)
    if st.z ~= c.limit then return false end
    local a, f = st.x - c.q, st.y
    if f >= c.r then f = f - c.r else a, f = a - 1, f + (c.limit - c.r) end
    st.x, st.y = a, f
    return true
  end,
}

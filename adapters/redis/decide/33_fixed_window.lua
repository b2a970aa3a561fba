-- fixed_window (code 4): windows aligned to the epoch; the state is the newest admission's instant (x) and the
-- units admitted in its window (y), which count while x is in the current window and after the floor.
ALG[4] = {
  step = function(st, t, c, need, admit)
    local limit, window = c.limit, c.window
    local start = t - fmod(t, window)
    local u = 0
    if st.alg == 4 and st.x >= start and st.x > c.floor then u = st.y end
    local reset = start + window - t
    if u <= limit - need then
      local recorded = 0
      if c.cost > 0 then
        if t > st.x or st.alg ~= 4 then st.x = t end
        st.y = u + c.cost
        recorded = st.x
        admit()
      end
      return { 1, limit - u - need, reset, 0, recorded, 0, 0, 0, 0 }
    end
    local rem = limit - u
    if rem < 0 then rem = 0 end
    return { 0, rem, reset, reset, 0, 0, 0, 0, 0 }
  end,
  units = function(st, _, cutoff)
    if st.x > cutoff then return st.y, st.x end
    return 0, 0
  end,
  -- The units count from now (conversion spec v2), so units recorded before the current window are not lost.
  into = function(st, t, _, n) st.x, st.y = t, n end,
  retune = never,
  expiry = function(st) return st.x - fmod(st.x, st.w) + st.w end,
  undo = function(st, c, rec)
    if st.x - fmod(st.x, c.window) ~= rec - fmod(rec, c.window) then return false end
    st.y = st.y - c.cost
    if st.y < 0 then st.y = 0 end
    return true
  end,
}

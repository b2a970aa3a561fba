-- fixed_window (code 4): windows aligned to the epoch; the state is the newest admission's instant (x) and the
-- units admitted in its window (y), which count while x is in the current window and after the floor; w is the
-- window that admitted them: they stop when it ends, under any later rule (domain/fixedwindow.go).
--@step
local start = t - fmod(t, window)
local u = 0
if st.alg == 4 and st.x >= start and st.x > floorus then u = st.y end
local reset = start + window - t
if u <= limit - need then
  local recorded = 0
  if cost > 0 then
    if t > st.x or st.alg ~= 4 then st.x = t end
    st.y = u + cost
    recorded = st.x
    admit()
  end
  return { 1, limit - u - need, reset, 0, recorded, 0, 0, 0, 0 }
end
local rem = limit - u
if rem < 0 then rem = 0 end
return { 0, rem, reset, reset, 0, 0, 0, 0, 0 }
--@retune
st.w ~= window
--@units
if st.x > cutoff and t < st.x - fmod(st.x, st.w) + st.w then units, t_at = st.y, st.x end
--@into
-- The units count from now (conversion spec v2): units recorded before the current window are not lost.
st.x, st.y = t, units
--@expiry
until_us = st.x - fmod(st.x, st.w) + st.w
--@undo
if st.x - fmod(st.x, window) == rec - fmod(rec, window) then
  st.y = st.y - cost
  if st.y < 0 then st.y = 0 end
  done = true
end

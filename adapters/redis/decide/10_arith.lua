-- muldivrem returns floor(x × y / z) and the remainder, for integers 0 ≤ x, y < 2^53, 1 ≤ z < 2^53, whose
-- quotient is below 2^53 (the callers' bounds). The 106-bit product is held as limbs of 18 bits (every partial
-- product below 2^38) and divided one bit at a time, with every intermediate below 2^53.
local B18 = 262144
local function limbs(x)
  local a = fmod(x, B18)
  x = (x - a) / B18
  local b = fmod(x, B18)
  return a, b, (x - b) / B18
end
local function muldivrem(x, y, z)
  if x == 0 or y == 0 then return 0, 0 end
  local xs, ys = { limbs(x) }, { limbs(y) }
  local l = { 0, 0, 0, 0, 0, 0, 0 }
  for i = 1, 3 do
    for j = 1, 3 do l[i + j - 1] = l[i + j - 1] + xs[i] * ys[j] end
  end
  for i = 1, 6 do
    local c = fmod(l[i], B18)
    l[i + 1] = l[i + 1] + (l[i] - c) / B18
    l[i] = c
  end
  local q, r = 0, 0
  for i = 7, 1, -1 do
    local limb = l[i]
    for b = 17, 0, -1 do
      local p = 2 ^ b
      local bit = 0
      if limb >= p then bit, limb = 1, limb - p end
      -- r = 2r + bit reduced mod z, without forming 2r + bit when it would pass 2^53 (r < z, so one
      -- subtraction suffices)
      local need = z - r - bit
      q = q + q
      if r >= need then
        r = r - need
        q = q + 1
      else
        r = r + r + bit
      end
    end
  end
  return q, r
end

local function muldivceil(x, y, z)
  local q, r = muldivrem(x, y, z)
  if r > 0 then q = q + 1 end
  return q
end

local function ceilto(t, res)
  local r = fmod(t, res)
  if r ~= 0 then return t + (res - r) end
  return t
end


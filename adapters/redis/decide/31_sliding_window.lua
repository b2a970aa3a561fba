-- sliding_window (code 2): sliding_log's log with every instant rounded up to the resolution (c.res), so a key
-- holds at most ceil(window/res) + 1 entries.
ALG[2] = {
  step = function(st, t, c, need, admit) return logstep(st, t, c, need, admit, ceilto(t, c.res)) end,
  units = logunits,
  into = function(st, t, at_, n, c) record(st, ceilto(at_, c.res), n) end,
  retune = never,
  expiry = logexpiry,
  undo = logundo,
}

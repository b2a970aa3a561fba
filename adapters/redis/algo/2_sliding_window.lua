-- sliding_window (code 2): sliding_log's log with every instant rounded up to the resolution (res), so a key holds
-- at most ceil(window/res) + 1 entries.
--@step
return logstep(st, t, limit, window, floorus, cost, need, admit, ceilto(t, res))
--@units
expire(st, cutoff)
if st.n > 0 then units, t_at = used(st), st.la end
--@into
record(st, ceilto(t_at, res), units)
--@expiry
if st.n == 0 then return 0 end
until_us = st.la + w
--@undo
done = logundo(st, cost, rec)

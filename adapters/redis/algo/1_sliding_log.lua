-- sliding_log (code 1): a log of (instant, cumulative count) entries (20_state in decide.lua's core: load,
-- expire, record); a check counts the units recorded after max(t - window, floor).
--@step
return logstep(st, t, limit, window, floorus, cost, need, admit, t)
--@units
expire(st, cutoff)
if st.n > 0 then units, t_at = used(st), st.la end
--@into
record(st, t_at, units)
--@expiry
if st.n == 0 then return 0 end
until_us = st.la + w
--@undo
done = logundo(st, cost, rec)

-- Locks and friends against multiprocessing's (sync.py does the same).
local bench = require "bench"
local mp = require "mproc"

local lock = mp.Lock()
bench.report("Lock acquire+release", bench.per_op(function(n)
  for _ = 1, n do lock:acquire(); lock:release() end
end), "s", "<=0.7")

local guards = bench.compile54([[
  local lock = ...
  return function(n) for _ = 1, n do local _ <close> = lock:guard() end end]], lock)
if guards then
  bench.report("Lock guard (<close>) vs with", bench.per_op(guards), "s", "<=0.5")
end

local rlock = mp.RLock()
bench.report("RLock acquire+release", bench.per_op(function(n)
  for _ = 1, n do rlock:acquire(); rlock:release() end
end), "s")

local sem = mp.Semaphore(1)
bench.report("Semaphore acquire+release", bench.per_op(function(n)
  for _ = 1, n do sem:acquire(); sem:release() end
end), "s")

local ev = mp.Event()
ev:set()
bench.report("Event is_set", bench.per_op(function(n)
  for _ = 1, n do ev:is_set() end
end), "s")

bench.report("create 10000 Locks", bench.per_op(function(n)
  for _ = 1, n do
    local t = {}
    for i = 1, 10000 do t[i] = mp.Lock() end
    for i = 1, 10000 do t[i]:close() end
  end
end, 0.3, 3), "s", "<=0.1")

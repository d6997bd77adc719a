-- Value, Array against multiprocessing's Value, RawArray (shared.py does
-- the same).
local bench = require "bench"
local mp = require "mproc"
local core = require "mproc.core"

-- Two processes increment a Value under its lock, N times each.
local N = 200000
local v = mp.Value("int64", 0)
local go = mp.Event()
-- under a `<close>` guard on 5.4 (as Python's `with`), acquire/release
-- elsewhere
local add = bench.compile54([[
  local v, lock, N = ...
  return function()
    for _ = 1, N do
      local _ <close> = lock:guard()
      v.value = v.value + 1
    end
  end]], v, v:get_lock(), N) or function()
  local lock = v:get_lock()
  for _ = 1, N do
    lock:acquire()
    v.value = v.value + 1
    lock:release()
  end
end
local function worker()
  go:wait()
  add()
end
local ps = { mp.Process(worker), mp.Process(worker) }
for _, p in ipairs(ps) do p:start() end
local t0 = core.now()
go:set()
for _, p in ipairs(ps) do p:join() end
local dt = core.now() - t0
assert(v.value == 2 * N, "lost increments")
bench.report("2 processes Value += 1 under its lock", 2 * N / dt, "ops/s", ">=3")

local a = mp.Array("int32", 10, { lock = false })
local x = 0
bench.report("raw Array read a[i]", bench.per_op(function(n)
  for _ = 1, n do x = a[3] end
end), "s", "<=0.5")
bench.report("raw Array write a[i] = x", bench.per_op(function(n)
  for _ = 1, n do a[3] = 1 end
end), "s", "<=0.5")
bench.report("raw Array a[i] = a[i] + 1", bench.per_op(function(n)
  for _ = 1, n do a[3] = a[3] + 1 end
end), "s", "<=0.5")

local raw = mp.Value("int64", 0, { lock = false })
bench.report("v:add(1) (atomic, no lock)", 1 / bench.per_op(function(n)
  for _ = 1, n do raw:add(1) end
end), "ops/s")
assert(x == 0 or x == 1)

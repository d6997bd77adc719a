-- Process start latency: a trivial target started and joined, and the
-- same with mp.fork + mp.waitpid (no codec, no Process object).
local mp = require "mproc"
local bench = require "bench"

local function noop() end

bench.report("start+join", bench.per_op(function(n)
  for _ = 1, n do
    local p = mp.Process(noop)
    p:start()
    p:join()
    p:close()
  end
end), "s", "<=0.2")

bench.report("fork+waitpid", bench.per_op(function(n)
  for _ = 1, n do
    local pid = mp.fork()
    if pid == 0 then require("mproc.core").exit(0) end
    mp.waitpid(pid)
  end
end), "s")

-- The floor: fork + _exit + waitpid from a small C program.
local floor = require("floor")("fork")
if floor then bench.report("C fork+waitpid floor", floor, "s") end

-- Start+join of a trivial process under each start method (issue 16), then
-- fork and forkserver again from a parent with a 1 GiB heap: a fork copies
-- the parent's page tables, the forkserver forks its own small process.
local mp = require "mproc"
local bench = require "bench"

local function noop() end

local function start_join(method)
  local ctx = mp.get_context(method)
  return bench.per_op(function(n)
    for _ = 1, n do
      local p = ctx.Process(noop)
      p:start()
      p:join()
      p:close()
    end
  end)
end

bench.report("start+join fork", start_join("fork"), "s")
bench.report("start+join spawn", start_join("spawn"), "s", "<=0.5")
bench.report("start+join forkserver", start_join("forkserver"), "s", "<=0.5")

-- 1 GiB of distinct strings on the Lua heap (pages touched)
local heap, chunk = {}, string.rep("x", 1048576 - 16)
for i = 1, 1024 do heap[i] = chunk .. ("%016d"):format(i) end
bench.report("start+join fork, 1 GiB heap", start_join("fork"), "s")
bench.report("start+join forkserver, 1 GiB heap", start_join("forkserver"), "s")
assert(#heap == 1024)

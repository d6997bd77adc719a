-- The client side of the cluster pool: the same calls as a local mp.Pool.
--   MPROC_AUTHKEY=secret lua5.4 examples/cluster_client.lua [URL]
-- Needs a running Redis and at least one worker on the queue "demo"
-- (examples/cluster_worker.lua, or `mproc worker --url URL --queue demo`).
io.stdout:setvbuf("line")
local mp = require "mproc"

local url = arg[1] or "redis://127.0.0.1:6379/0"
local pool <close> = mp.cluster.Pool { url = url, queue = "demo", lease = 10 }

-- one call, answered by whichever worker takes it
print("2 + 3 =", pool:apply(function(a, b) return a + b end, 2, 3))

-- a map in chunks, spread over every worker of the queue
local squares = pool:map(function(x) return x * x end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 2)
print("squares:", table.concat(squares, " "))

-- results are ordinary AsyncResults: mp.wait, as_completed, callbacks
local rs = {}
for i = 1, 4 do
  rs[i] = pool:submit(function(n)
    return ("task %d ran in process %d"):format(n, require("mproc").getpid())
  end, i)
end
for r in mp.as_completed(rs, 30) do print(r:get()) end

-- errors keep their kind and the worker's traceback
local ok, err = pcall(pool.apply, pool, function() error("no luck") end)
print(ok, err.kind, err.message)

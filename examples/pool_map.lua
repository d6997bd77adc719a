-- pool:map runs the function on every item (in parallel) and returns the
-- results in order.  Seed: "2.2.2. 方法" (map, Pool(4), [1, 2, 3, 4]).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function task(index)
  print("Start process: " .. index)
  mp.sleep(0.2)
  print("End process " .. index)
  return index * index
end

local pool <close> = mp.Pool(4)         -- <close>: close + join at the end of the scope
local res = pool:map(task, { 1, 2, 3, 4 }, 1)   -- chunksize 1: one item per task
print("results: " .. table.concat(res, ", ") .. " (n = " .. res.n .. ")")

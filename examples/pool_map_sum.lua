-- map with a function of a pair: Python's zip(range(10), range(10)).
-- Seed: "进程池" in 002 (job(x) = x[0] + x[1]).  starmap unpacks the pairs.
local mp = require "mproc"
io.stdout:setvbuf("line")

local function job(x) return x[1] + x[2] end   -- lists are 1-based

local pairs_ = {}
for i = 0, 9 do pairs_[#pairs_ + 1] = { i, i } end

local pool <close> = mp.Pool(3)
local res = pool:map(job, pairs_)
print("{" .. table.concat(res, ", ") .. "}")
res = pool:starmap(function(a, b) return a + b end, pairs_)
print("{" .. table.concat(res, ", ") .. "}")

-- Codec speed: mp.dumps + mp.loads round trips, against pickle (codec.py).
local bench = require "bench"
local mp = require "mproc"
local dumps, loads = mp.dumps, mp.loads

local small = { id = 1, name = "x", tags = { "a", "b" }, score = 1.5 }
local list = {}
for i = 1, 10000 do
  list[i] = { id = i, name = "x", tags = { "a", "b" }, score = 1.5 }
end

bench.report("dumps+loads small table", bench.per_op(function(n)
  for _ = 1, n do loads(dumps(small)) end
end), "s", "<=0.6")

bench.report("dumps+loads 10k list", bench.per_op(function(n)
  for _ = 1, n do loads(dumps(list)) end
end), "s", "<=0.6")

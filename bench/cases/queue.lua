-- mp.Queue throughput: one producer process -> the parent.  The producer
-- is a fresh Lua (the same VM) that attaches the queue by its handle.  Each figure is
-- also given as a fraction of the raw ring floor (bench/ringfloor.c).
local mp = require "mproc"
local core = require "mproc.core"
local compat = require "mproc.compat"
local bench = require "bench"

local function handle(q)
  local _, h = getmetatable(q).__mproc_encode(q)
  return h
end

local PRODUCER = [[
local core = require "mproc.core"
require "mproc"
local ok, q = core.queue_attach(arg[1]); assert(ok)
local ok2, ctl = core.queue_attach(arg[2]); assert(ok2)
local kind, n = ctl:get(), tonumber(arg[3])
local v = kind == "int" and 42 or kind == "table" and { 1, "two", x = 3 }
  or string.rep("m", 1048576)
if kind == "batch" then
  local b = {}
  for i = 1, 100 do b[i] = i end
  for _ = 1, n / 100 do q:put_many(b) end
else
  for _ = 1, n do q:put(v) end
end
]]

local path = os.tmpname()
do local f = assert(io.open(path, "w")); f:write(PRODUCER); f:close() end

-- Returns messages per second for `n` messages of `kind`.
local function run(kind, n)
  local q = mp.Queue(kind == "mib" and 8 or 100000)
  local ctl = mp.Queue()
  local p = io.popen(("%s %s %s %s %d"):format(bench.LUA, path, handle(q), handle(ctl), n), "w")
  ctl:put(kind)
  local got = 0
  local t0 = core.now()
  if kind == "batch" then
    while got < n do got = got + q:get_many(100, 30).n end
  else
    for _ = 1, n do q:get(30) end
    got = n
  end
  local dt = core.now() - t0
  p:close()
  q:close(); ctl:close()
  return got / dt
end

local floor = {}
do
  local exe = os.tmpname()
  if compat.succeeded("cc -O2 -o " .. exe .. " bench/ringfloor.c 2>/dev/null") then
    local p = io.popen(exe)
    for line in p:lines() do
      local m, v = line:match("^(%S+)\t(%S+)")
      floor[m] = tonumber(v)
    end
    p:close()
  end
  os.remove(exe)
end

local small = run("int", 1000000)
bench.report("small_int", small, "msgs/s", ">=8")
local tab = run("table", 500000)
bench.report("small_table", tab, "msgs/s", ">=8")
local batch = run("batch", 1000000)
bench.report("batch100", batch, "msgs/s")
local mib = run("mib", 400) * 1.048576
bench.report("str_1MiB", mib, "MB/s", ">=3")
if floor.floor_small then
  bench.report("ring floor, 8-byte messages", floor.floor_small, "msgs/s")
  bench.report("ring floor, 1 MiB messages", floor.floor_1MiB, "MB/s")
  bench.report("small_int_of_floor", 100 * small / floor.floor_small, "%")
  bench.report("batch100_of_floor", 100 * batch / floor.floor_small, "%")
  bench.report("str_1MiB_of_floor", 100 * mib / floor.floor_1MiB, "%")
end
os.remove(path)

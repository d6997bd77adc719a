-- The pool while the parent does something else (API.md "Pool": workers
-- never wait for the parent), against Python's multiprocessing.Pool.
local mp = require "mproc"
local bench = require "bench"
local core = require "mproc.core"

local function busy(seconds)  -- the parent's own Lua work, no mproc call
  local t0 = os.clock()
  local x = 0
  while os.clock() - t0 < seconds do x = x + 1 end
  return x
end

local function nap() core.sleep(0.01) end
local function burn()  -- about 0.2 ms of CPU
  local t0 = os.clock()
  local x = 0
  while os.clock() - t0 < 0.0002 do x = x + 1 end
  return x
end

local pool = mp.Pool(2)
pool:map(burn, { 1, 2, 3, 4 }, 1)

-- background: 100 tasks of 10 ms, then 1.2 s of the parent's own work;
-- how many are done when it looks (r:ready(), no other call first)
local rs = {}
for i = 1, 100 do rs[i] = pool:apply_async(nap, { i }) end
busy(1.2)
local done = 0
for i = 1, 100 do if rs[i]:ready() then done = done + 1 end end
bench.report("background_done_after_1.2s", done, "tasks", "value>=95")
for i = 1, 100 do rs[i]:get() end

-- game tick: a 60 Hz loop that keeps tasks of 0.2 ms coming, calls
-- mp.poll() once per tick and sleeps (another library's sleep) until the
-- next one; completed tasks/s as a share of the pool's rate when the
-- parent only waits (map, chunksize 1, the same tasks)
local N = 2000
local items = {}
for i = 1, N do items[i] = i end
local cap = 0
for _ = 1, 2 do
  local t0 = core.now()
  pool:map(burn, items, 1)
  cap = math.max(cap, N / (core.now() - t0))
end
local completed, pending = 0, 0
local function cb() completed = completed + 1; pending = pending - 1 end
local tick, t0 = 1 / 60, core.now()
local next_tick = t0
local want = math.ceil(cap * tick * 2)  -- two ticks' worth queued
while core.now() - t0 < 2 do
  while pending < want do
    pool:apply_async(burn, { 1 }, { callback = cb })
    pending = pending + 1
  end
  mp.poll()
  next_tick = next_tick + tick
  local left = next_tick - core.now()
  if left > 0 then core.sleep(left) end
end
local share = completed / (core.now() - t0) / cap * 100
bench.report("game_tick_share_of_capacity", share, "%", "value>=80")
pool:terminate()

-- an idle pool: CPU its workers use per second while nothing happens
local idle = mp.Pool(2)
idle:map(burn, { 1, 2 }, 1)
local function cpu_ticks()
  local total = 0
  for _, w in ipairs(mp.active_children()) do
    local f = io.open("/proc/" .. w.pid .. "/stat")
    if f then
      local s = f:read("a")
      f:close()
      local fields = {}
      for x in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
      total = total + tonumber(fields[12]) + tonumber(fields[13])
    end
  end
  return total
end
local c0 = cpu_ticks()
core.sleep(2)
bench.report("idle_pool_cpu", (cpu_ticks() - c0) * 10 / 2, "ms/s", "value<=1")
idle:close(); idle:join()

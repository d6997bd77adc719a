-- The master of a distributed task queue (run distributed_worker.lua in
-- other terminals, on this machine or others):
--   lua5.4 examples/distributed_master.lua [host] [port] [authkey]
-- It serves two queues through a manager, puts 10 tasks and prints the
-- results the workers send back.
local mp = require "mproc"

local host, port, key = arg[1] or "127.0.0.1", tonumber(arg[2] or 5000), arg[3] or "abc"
local ntasks = tonumber(os.getenv("TASKS") or 10)

-- Both queues live in the server process; every client sees the same two.
local task_queue = mp.BaseManager.types.Queue()
local result_queue = mp.BaseManager.types.Queue()

local m <close> = mp.BaseManager{ address = { host, port }, authkey = key }
m:register("get_task_queue", function() return task_queue end)
m:register("get_result_queue", function() return result_queue end)
m:start()
print(("master: serving on %s:%d"):format(host, m.address[2]))

local tasks, results = m:get_task_queue(), m:get_result_queue()
math.randomseed(os.time())
for _ = 1, ntasks do
  local n = math.random(0, 10000)
  print("Put task " .. n .. "...")
  tasks:put(n)
end

print("Try get results...")
for _ = 1, ntasks do
  local r = results:get(tonumber(os.getenv("RESULT_TIMEOUT") or 60))
  print("Result: " .. r)
end
print("master exit.")

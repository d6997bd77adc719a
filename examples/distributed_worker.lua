-- A worker of the distributed task queue (start distributed_master.lua
-- first):  lua5.4 examples/distributed_worker.lua [host] [port] [authkey]
-- Takes tasks until the queue stays empty for a second, sends n*n back.
local mp = require "mproc"

local host, port, key = arg[1] or "127.0.0.1", tonumber(arg[2] or 5000), arg[3] or "abc"

local m = mp.BaseManager{ address = { host, port }, authkey = key }
m:register("get_task_queue")
m:register("get_result_queue")
print(("worker: connecting to %s:%d..."):format(host, port))
m:connect()

local tasks, results = m:get_task_queue(), m:get_result_queue()
while true do
  local ok, n = pcall(tasks.get, tasks, 1)
  if not ok then
    if mp.is_error(n, "Empty") then print("task queue is empty.") break end
    if mp.is_error(n, "EOF") then print("the master is gone.") break end
    error(n, 0)
  end
  print(("run task %d * %d..."):format(n, n))
  results:put(("%d * %d = %d"):format(n, n, n * n))
end
print("worker exit.")

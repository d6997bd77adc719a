-- A callback receives a task's result and runs in the main process, not
-- in the worker.  Seed: "进程池" in 001 (callback_func, maxtasksperchild=3).
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local function callback_func(r)
  print(r)
  print(("这是%s的回调函数 (pid %d)"):format(mp.current_process().name, mp.getpid()))
end

local function test()
  print(("进程-%d开始测试"):format(mp.getpid()))
  mp.sleep(0.2)
  print(("进程-%d测试结束"):format(mp.getpid()))
  return 1
end

print("main pid " .. mp.getpid())
local start = now()
local pool = mp.Pool{ processes = 3, maxtasksperchild = 3 }
for _ = 1, 3 do
  pool:apply_async(test, {}, { callback = callback_func })
end
pool:close()
pool:join()                      -- callbacks run while the parent waits here
print(("耗时%.2f"):format(now() - start))

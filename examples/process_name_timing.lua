-- Two processes named Process-1 and Process-2 sleep 0.2 s each, in parallel.
-- Seed: "启动和停止进程" (test() with current_process().name, 耗时).
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local function test()
  print(("进程-%s测试开始"):format(mp.current_process().name))
  mp.sleep(0.2)
  print(("进程-%s测试结束"):format(mp.current_process().name))
end

local start = now()
local a = mp.Process(test); a:start()
local b = mp.Process(test); b:start()
a:join(); b:join()
-- About 0.2 s: fork costs well under a millisecond, unlike Python's
-- "spawn" start method that the tutorial's extra 0.5 s comes from.
print(("耗时%.2f"):format(now() - start))

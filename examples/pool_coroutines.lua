-- Three worker processes, each running ten coroutines: the tutorial's
-- "多进程(3个)+多线程(10个)" (Pool + ThreadPoolExecutor) with mp.run and
-- mp.spawn inside each task.  Seed: "多进程与多线程" in 001.
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local function test(i)
  mp.sleep(0.2)                  -- suspends this coroutine only
  return i
end

local function multi_tasks(w)
  -- one scheduler per worker; ten coroutines share the process
  local sum = mp.run(function()
    local ts = {}
    for i = 1, 10 do ts[i] = mp.spawn(test, i) end
    local s = 0
    for _, t in ipairs(ts) do s = s + t:join() end
    return s
  end)
  return ("worker %d (pid %d): 10 coroutines done, sum %d"):format(w, mp.getpid(), sum)
end

local start = now()
local p_pool = mp.Pool(3)
local rs = {}
for w = 1, 3 do
  rs[w] = p_pool:apply_async(multi_tasks, { w })
end
p_pool:close()
p_pool:join()
for _, r in ipairs(rs) do print(r:get()) end
-- 3 x 10 sleeps of 0.2 s in about 0.2 s
print(("耗时%.2f 全部进程执行结束，全部协程执行结束"):format(now() - start))

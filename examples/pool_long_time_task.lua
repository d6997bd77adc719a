-- Five tasks of random length on a Pool: a worker that is free takes the
-- next one, so a worker's pid shows up twice.  Seeds: "进程池" in 002,
-- "进程池和线程池" in 004, the Pool part of "multiprocessing" in 003.
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local function long_time_task(name)
  print(("Run task %d (%d)..."):format(name, mp.getpid()))
  local start = now()
  mp.sleep(math.random() * 0.3)
  print(("Task %d runs %0.2f seconds."):format(name, now() - start))
end

print(("Parent process %d."):format(mp.getpid()))
-- Workers are forked; each one reseeds math.random (as Python does), so
-- the tasks draw different lengths.
local p = mp.Pool(4)   -- mp.Pool() = cpu_count() workers
for i = 0, 4 do
  p:apply_async(long_time_task, { i })
end
print("Waiting for all subprocesses done...")
p:close()
p:join()
print("All subprocesses done.")

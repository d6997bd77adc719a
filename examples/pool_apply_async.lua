-- Pool(3) with four apply_async tasks: three run at once, the fourth when
-- a worker is free.  Seed: "2.2.2. 方法" (apply_async).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function task(index)
  print("Start process: " .. index)
  mp.sleep(0.3)                         -- the tutorial sleeps 3 s
  print("End process " .. index)
end

local pool = mp.Pool(3)
for i = 0, 3 do
  pool:apply_async(task, { i })         -- returns at once; the task starts now
end
print("Started processes")
pool:close()                            -- no new tasks; queued ones still run
pool:join()                             -- waits for them (needs close first)
print("Subprocess done.")

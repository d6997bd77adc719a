-- Pool: tasks start when submitted, not at close(); close() only refuses
-- new tasks; join() waits for the workers and must come after close() (or
-- terminate()).  (tutorial-notes.md, note 3)
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local t0 = now()
local pool = mp.Pool(2)
local started = mp.Value("double", -1)
pool:apply_async(function() started.value = now() - t0; mp.sleep(0.1) end)
mp.sleep(0.3)
print(("task started at %.2f s, close() called at %.2f s"):format(started.value, now() - t0))

local _, err = pcall(pool.join, pool)
print("join() before close(): " .. tostring(err))
pool:close()
_, err = pcall(pool.apply_async, pool, print)
print("apply_async() after close(): " .. tostring(err))
pool:join()
print("join() after close(): done")

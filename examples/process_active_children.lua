-- Five processes that sleep i/10 s; cpu_count() and active_children() meanwhile.
-- Seed: "2.1.1. 构造方法" (the tutorial sleeps i seconds).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function process(num)
  mp.sleep(num / 10)
  print("Process: " .. num)
end

for i = 0, 4 do                              -- create and start 5 processes
  mp.Process(process, i):start()
end
mp.sleep(0.05)                               -- Process 0 has printed by now
print("CPU number: " .. mp.cpu_count())
for _, p in ipairs(mp.active_children()) do  -- the ones still running
  print("Child process name: " .. p.name .. " id: " .. p.pid)
end
print("Process Ended")
-- The end of the script joins the non-daemon children (as Python does):
-- "Process: 1" .. "Process: 4" come after "Process Ended".

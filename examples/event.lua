-- Event: waiters block until someone sets the flag.  Seed: "事件 - Event".
local mp = require "mproc"
io.stdout:setvbuf("line")

local function waiter(ev, i)
  print("waiter " .. i .. " waiting")
  if ev:wait(2) then print("waiter " .. i .. " woke up") end
end

local ev = mp.Event()
print("is_set: " .. tostring(ev:is_set()))
local ps = {}
for i = 1, 3 do ps[i] = mp.Process(waiter, ev, i); ps[i]:start() end
mp.sleep(0.2)
print("main sets the event")
ev:set()                       -- flag = true: every waiter goes on
for _, p in ipairs(ps) do p:join() end
print("is_set: " .. tostring(ev:is_set()))
ev:clear()
print("wait(0.1) after clear: " .. tostring(ev:wait(0.1)))   -- false: timed out

-- Does start() wait until the parent's code has finished?  No: the child
-- runs as soon as start() returns, in parallel with the parent.  Here the
-- parent keeps a CPU busy for 0.3 s after start(); the child stamps the
-- time it ran into shared memory.  (tutorial-notes.md, note 1)
local mp = require "mproc"
io.stdout:setvbuf("line")
local now = require("mproc.core").now

local t0 = now()
local ran_at = mp.Value("double", -1)
local p = mp.Process(function()
  ran_at.value = now() - t0
  print(("child: running at %.3f s"):format(now() - t0))
end)
p:start()
print(("parent: start() returned at %.3f s"):format(now() - t0))
local x = 0
while now() - t0 < 0.3 do x = x + 1 end   -- the parent's "remaining code"
print(("parent: its own code ended at %.3f s"):format(now() - t0))
local before = ran_at.value >= 0 and ran_at.value < 0.3
print("child ran before the parent's code ended: " .. tostring(before))
p:join()

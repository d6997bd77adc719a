-- A Lock around printing, shared by five processes of a Process class.
-- Seed: "2.3.1. Lock 类" (MyProcess(i, lock), loop 10..14).
local mp = require "mproc"
io.stdout:setvbuf("no")   -- unbuffered: every piece is its own write

local MyProcess = mp.Process:extend()
function MyProcess:init(loop, lock)
  self.loop, self.lock = loop, lock  -- the Lock travels by reference
end
function MyProcess:run()
  for count = 0, self.loop - 1 do
    mp.sleep(0.01)
    self.lock:acquire()                -- one print at a time
    io.write("Pid: ", self.pid, " LoopCount: ", count, "\n")
    self.lock:release()
  end
end

local lock = mp.Lock()
for i = 2, 6 do                         -- the tutorial loops 10..14 times
  MyProcess(i, lock):start()
end
-- Non-daemon children are joined when the main script ends.

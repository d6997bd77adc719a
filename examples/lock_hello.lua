-- Lock: ten processes print under one lock; `guard` releases it at the end
-- of the scope even on error.  Seed: "Lock(锁)" in 004 (f(l, i)).
local mp = require "mproc"
io.stdout:setvbuf("no")

local function f(l, i)
  local _ <close> = l:guard()           -- Python: with l: ...
  io.write("hello world ", i, "\n")
end

local lock = mp.Lock()
for num = 0, 9 do
  mp.Process(f, lock, num):start()
end

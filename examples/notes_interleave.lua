-- Why outputs interleave, and what a Lock changes.  Two processes each
-- write three lines, every line in several pieces; each piece is its own
-- write() (unbuffered stdout), so without a lock pieces of both processes
-- mix inside a line.  With the lock held for a whole line, lines stay whole.
-- (tutorial-notes.md, note 2)
local mp = require "mproc"
io.stdout:setvbuf("no")

local function writer(label, lock)
  for _ = 1, 3 do
    if lock then lock:acquire() end
    for _, piece in ipairs { label, label, label, label, "\n" } do
      io.write(piece)
      mp.sleep(0.005)
    end
    if lock then lock:release() end
  end
end

for _, lock in ipairs { false, mp.Lock() } do
  print(lock and "-- with a lock:" or "-- without a lock:")
  local a = mp.Process(writer, "a", lock or nil)
  local b = mp.Process(writer, "b", lock or nil)
  a:start(); b:start(); a:join(); b:join()
end

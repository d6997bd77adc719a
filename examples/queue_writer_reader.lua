-- A Queue shared by a writer and a reader process; the reader loops
-- forever, so the parent terminates it.  Seeds: "2.4.1. Queue 类",
-- "进程间通信" (003 and 004).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function write(q)
  print("Process to write: " .. mp.getpid())
  for _, value in ipairs { "A", "B", "C" } do
    print(("Put %s to queue..."):format(value))
    q:put(value)
    mp.sleep(math.random() * 0.1)
  end
end

local function read(q)
  print("Process to read: " .. mp.getpid())
  while true do
    local value = q:get()          -- blocks; q:get(timeout) raises Empty after timeout
    print(("Get %s from queue."):format(value))
  end
end

local q = mp.Queue()               -- the parent creates it and passes it on
local pw = mp.Process(write, q)
local pr = mp.Process(read, q)
pw:start()
pr:start()
pw:join()                          -- wait for the writer
mp.sleep(0.1)                      -- let the reader print the last item
pr:terminate()                     -- the reader never ends by itself
pr:join()
print("reader exitcode: " .. pr.exitcode)   -- -15: SIGTERM

-- Without a timeout get() waits forever; with one it raises Empty.
local ok, err = pcall(q.get, q, 0.1)
print(ok, err.kind)                --> false  Empty

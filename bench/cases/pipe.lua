-- Pipe round trips between the parent and a child process, against
-- multiprocessing.Pipe with a fork Process (pipe.py does the same).
local bench = require "bench"
local mp = require "mproc"

-- Echoes values; after "bytes", echoes raw frames until an empty one.
local function echo(c)
  while true do
    local v = c:recv()
    if v == nil then return end
    if v == "bytes" then
      while true do
        local s = c:recv_bytes()
        if s == "" then break end
        c:send_bytes(s)
      end
    else
      c:send(v)
    end
  end
end

local a, b = mp.Pipe()
local p = mp.Process(echo, b)
p:start()
b:close()

local small = { 1, 2, "x" }
bench.report("ping-pong small table", bench.per_op(function(n)
  for _ = 1, n do
    a:send(small)
    a:recv()
  end
end), "s", "<=0.5")

a:send("bytes")
local blob = string.rep("x", 1024 * 1024)
bench.report("ping-pong 1 MiB bytes", bench.per_op(function(n)
  for _ = 1, n do
    a:send_bytes(blob)
    a:recv_bytes()
  end
end), "s", "<=1")
a:send_bytes("")

a:send(nil)
p:join(10)
a:close()

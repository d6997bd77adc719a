-- A duplex Pipe: two Process classes, one end each, exchange messages.
-- Seed: "2.4.2. Pipe 类" (Consumer/Producer with pipe[0], pipe[1]).
local mp = require "mproc"
io.stdout:setvbuf("line")

local Consumer = mp.Process:extend()
function Consumer:init(pipe) self.pipe = pipe end
function Consumer:run()
  self.pipe:send("Consumer Words")
  print("Consumer Received: " .. self.pipe:recv())
end

local Producer = mp.Process:extend()
function Producer:init(pipe) self.pipe = pipe end
function Producer:run()
  print("Producer Received: " .. self.pipe:recv())
  self.pipe:send("Producer Words")
end

local a, b = mp.Pipe()              -- Python: pipe = Pipe(); pipe[0], pipe[1]
local p, c = Producer(a), Consumer(b)
p.daemon, c.daemon = true, true
p:start(); c:start()
p:join(); c:join()
print("Ended!")

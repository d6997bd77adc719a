-- Producer/consumer with two Semaphores (free slots, filled slots), a
-- Lock and a Queue.  Seed: "2.3.2. Semaphore 类".  The tutorial's loops
-- never end (and its join() waits forever); these stop after 4 items.
local mp = require "mproc"
io.stdout:setvbuf("line")

local buffer = mp.Queue(10)
local empty = mp.Semaphore(2)   -- free slots
local full = mp.Semaphore(0)    -- filled slots
local lock = mp.Lock()
local N = 4

-- The four objects are upvalues of run(): they travel by reference.
local Consumer = mp.Process:extend()
function Consumer.run()
  for _ = 1, N do
    full:acquire()
    lock:acquire()
    buffer:get()
    print("Consumer pop an element")
    mp.sleep(0.05)
    lock:release()
    empty:release()
  end
end

local Producer = mp.Process:extend()
function Producer.run()
  for _ = 1, N do
    empty:acquire()
    lock:acquire()
    buffer:put(1)
    print("Producer append an element")
    mp.sleep(0.05)
    lock:release()
    full:release()
  end
end

local p, c = Producer(), Consumer()
p.daemon, c.daemon = true, true
p:start(); c:start()
p:join(5); c:join(5)
print("Ended!")

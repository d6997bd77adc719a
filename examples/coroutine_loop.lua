-- The tutorial's threading.Thread example with a coroutine of mp.run: a
-- "LoopThread" counting to 5 while the main task waits for it.
-- Seed: "多线程" in 004.
local mp = require "mproc"
io.stdout:setvbuf("line")

mp.run(function()
  print("task main is running...")
  local t = mp.spawn(function()
    print("task loop is running...")
    for n = 1, 5 do
      print("task loop >>> " .. n)
      mp.sleep(0.05)             -- other coroutines run meanwhile
    end
    print("task loop is end.")
  end)
  t:join()                       -- like Thread.join
  print("task main is end.")
end)

-- What a Lock protects: read-modify-write of shared memory.  Two processes
-- add and subtract the same amount 100000 times; with the lock the balance
-- ends at 0.  Seed: "多线程同步 / Lock" (balance, change_it) done with
-- processes and an mp.Value, since processes share no globals.
local mp = require "mproc"
io.stdout:setvbuf("line")

local balance = mp.Value("int64", 0, { lock = false })
local lock = mp.Lock()

local function change_it(n)
  balance.value = balance.value + n
  balance.value = balance.value - n
end

local function run(n, use_lock)
  for _ = 1, 100000 do
    if use_lock then
      lock:acquire()
      local ok, err = pcall(change_it, n)   -- try/finally
      lock:release()
      if not ok then error(err, 0) end
    else
      change_it(n)
    end
  end
end

for _, use_lock in ipairs { true, false } do
  balance.value = 0
  local t1 = mp.Process(run, 5, use_lock)
  local t2 = mp.Process(run, 8, use_lock)
  t1:start(); t2:start(); t1:join(); t2:join()
  print(("%s lock: balance = %d"):format(use_lock and "with" or "without", balance.value))
end
-- Without the lock the result is usually not 0 (lost updates); run it again
-- and it differs.

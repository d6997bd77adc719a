-- pool:apply blocks until the task returned, so the tasks run one after
-- the other.  Seed: "2.2.2. 方法" (apply).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function task(index)
  print("Start process: " .. index)
  mp.sleep(0.1)
  print("End process " .. index)
  return index * 10
end

local pool = mp.Pool(3)
for i = 0, 3 do
  local r = pool:apply(task, i)         -- Python: pool.apply(task, (i,)); the value comes back
  assert(r == i * 10)
end
print("Started processes")
pool:close()
pool:join()
print("Subprocess done.")

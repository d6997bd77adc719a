-- mproc demo: a few worker processes that talk to the parent over pipes.
-- Each worker receives jobs (tables, a closure), computes, and sends back
-- what it did; the parent prints the conversation and the exit codes.
local mp = require "mproc"

local function worker(conn, id)
  while true do
    local job = conn:recv()
    if job == "stop" then break end
    local t0 = os.clock()
    local value = job.fn(job.n)
    conn:send({ id = id, pid = mp.getpid(), n = job.n, value = value,
                cpu = os.clock() - t0 })
  end
  conn:close()
end

-- A closure with an upvalue: it travels to the workers as bytecode + upvalues.
local modulus = 1000003
local function sum_of_squares(n)
  local s = 0
  for i = 1, n do s = (s + i * i) % modulus end
  return s
end

print(("parent %d: %d CPUs, starting 3 workers"):format(mp.getpid(), mp.cpu_count()))
local workers = {}
for id = 1, 3 do
  local here, there = mp.Pipe()
  local p = mp.Process { target = worker, args = { there, id }, name = "worker-" .. id }
  p:start()
  there:close()                      -- the child holds its own copy
  workers[id] = { p = p, conn = here }
end

local jobs = { 100000, 200000, 300000, 400000, 500000, 600000 }
for i, n in ipairs(jobs) do
  local w = workers[(i - 1) % #workers + 1]
  w.conn:send({ fn = sum_of_squares, n = n })
end
for i = 1, #jobs do
  local w = workers[(i - 1) % #workers + 1]
  local r = w.conn:recv()
  print(("  %s (pid %d): sum of squares 1..%d mod %d = %d  [%.1f ms CPU]")
    :format(w.p.name, r.pid, r.n, modulus, r.value, r.cpu * 1000))
end
for _, w in ipairs(workers) do
  w.conn:send("stop")
  w.p:join(5)
  print(("  %s exited with code %s"):format(w.p.name, tostring(w.p.exitcode)))
  w.conn:close()
end
print("done: every worker joined, no process left behind")

-- A Pool starts its workers when it is created and reuses them: ten items
-- do not make ten processes.  (Python's default size is cpu_count(), not 4.)
-- (tutorial-notes.md, note 4)
local mp = require "mproc"
io.stdout:setvbuf("line")

local pool <close> = mp.Pool(2)
local function worker_pid() mp.sleep(0.02) return mp.getpid() end
local pids = pool:map(worker_pid, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 1)
local seen, n = {}, 0
for _, pid in ipairs(pids) do
  if not seen[pid] then seen[pid] = true; n = n + 1 end
end
print(("10 items ran in %d worker processes"):format(n))
print("default pool size = mp.cpu_count() = " .. mp.cpu_count())

-- map() takes the whole list first; imap() pulls items from an iterator
-- as workers need them, so an endless generator works with it.
local i = 0
local function gen() i = i + 1; return i end    -- never ends
for k, v in pool:imap(function(x) return x * x end, gen) do
  if k == 5 then print("imap over an endless iterator: 5th square = " .. v) break end
end

-- Four processes started in order: who prints first is up to the OS.
-- Seed: "多进程" in 004 (p1..p4, "子进程的创建顺序是由OS决定的").
local mp = require "mproc"
io.stdout:setvbuf("line")

local function run_proc(name)
  print(("Run child process %s (%d)"):format(name, mp.getpid()))
end

print(("Parent process %d."):format(mp.getpid()))
local ps = {}
for i = 1, 4 do ps[i] = mp.Process(run_proc, "test" .. i) end
print("Process will start.")
for _, p in ipairs(ps) do p:start() end
-- No join: the end of the main script waits for them anyway.

-- A first Process: a function and its arguments run in a child.
-- Seeds: "创建进程" (run_proc), "multiprocessing" (fun("test")).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function run_proc(name)
  print(("Run child process %s (%d)..."):format(name, mp.getpid()))
end

print(("Parent process %d."):format(mp.getpid()))
local p = mp.Process(run_proc, "test")       -- Python: Process(target=run_proc, args=('test',))
print("Process will start.")
p:start()
p:join()                                     -- wait until the child ended
print("Process end. exitcode = " .. p.exitcode)

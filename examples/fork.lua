-- fork: one call, two returns (0 in the child, the child's pid in the
-- parent).  Seeds: "os.fork() 系统调用", "fork_in_python".
local mp = require "mproc"
io.stdout:setvbuf("line")   -- one write per line, even into a pipe

print(("Process (%d) start..."):format(mp.getpid()))
local pid = mp.fork()
if pid == 0 then
  print(("I am child process (%d) and my parent is %d."):format(mp.getpid(), mp.getppid()))
  os.exit(0)
end
print(("I (%d) just created a child process (%d)."):format(mp.getpid(), pid))
-- Unlike os.fork in Python, waiting is optional: mproc reaps it anyway.
print("child exit code: " .. mp.waitpid(pid, 5))

-- Run a program and get its exit code.  Seed: "subprocess_子进程"
-- (subprocess.call(['nslookup', 'www.python.org'])); here a command that
-- needs no network.
local mp = require "mproc"
io.stdout:setvbuf("line")

print("$ uname -s")
local r = mp.subprocess.call({ "uname", "-s" })   -- output goes to our stdout
print("Exit code: " .. r)

print("$ sh -c 'exit 3'")
print("Exit code: " .. mp.subprocess.call({ "sh", "-c", "exit 3" }))

-- A missing program raises OSError (Python: FileNotFoundError).
local ok, err = pcall(mp.subprocess.call, { "no-such-program-mproc" })
print(ok, err.kind)

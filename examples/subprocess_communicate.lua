-- Popen with pipes: write commands to a program's stdin, read its output.
-- Seed: "subprocess_子进程" (Popen(['nslookup'], ...).communicate(b'set
-- q=mx\npython.org\nexit\n')); here the program is /bin/sh.
local mp = require "mproc"
io.stdout:setvbuf("line")

print("$ sh")
local p = mp.subprocess.Popen({ "sh" }, { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
local output, err = p:communicate("echo hello\nexpr 6 \\* 7\necho oops >&2\nexit\n", 5)
io.write(output)
print("stderr: " .. err:gsub("\n$", ""))
print("Exit code: " .. p.returncode)

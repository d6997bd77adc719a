-- daemon = true: the child is terminated when the parent ends; a
-- non-daemon child is waited for.  Seeds: "2.1.2. 属性" (daemon) and the
-- daemon option in "启动和停止进程".
local mp = require "mproc"
io.stdout:setvbuf("line")

local function count(label, n)
  for i = 1, n do
    print(label .. " " .. i)
    mp.sleep(0.1)
  end
  print(label .. " finished")
end

local d = mp.Process{ target = count, args = { "daemon", 100 }, daemon = true }
local w = mp.Process{ target = count, args = { "worker", 3 } }
d:start()
w:start()
local ok, err = pcall(function() d.daemon = false end)
print("set daemon after start: " .. tostring(ok) .. ", " .. tostring(err))
mp.sleep(0.25)                     -- both print a few lines meanwhile
print("main ends")
-- Exit path: the daemon gets SIGTERM at once (never prints "daemon
-- finished"), the worker is joined ("worker finished" is printed).

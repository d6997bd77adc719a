-- terminate(): the child gets SIGTERM and runs no more Lua code (no
-- <close>, no "finally"), as in Python.  Unlike in Python, the processes it
-- started end too: no orphans.  (tutorial-notes.md, note 5)
local mp = require "mproc"
io.stdout:setvbuf("line")

local grandchild_pid = mp.Value("int64", 0)
-- Running (not gone, not a zombie waiting for its new parent to reap it).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return os.execute(("kill -0 %d 2>/dev/null"):format(pid)) == true end
  local state = f:read("a"):match("^%d+ %b() (%S)")
  f:close()
  return state ~= nil and state ~= "Z" and state ~= "X"
end

local child = mp.Process(function()
  local gc = mp.Process(function() mp.sleep(30) end)
  gc:start()
  grandchild_pid.value = gc.pid
  local _ <close> = setmetatable({}, { __close = function() print("child: cleanup ran") end })
  mp.sleep(30)
end)
child:start()
while grandchild_pid.value == 0 do mp.sleep(0.01) end
local gpid = grandchild_pid.value
print("grandchild alive before terminate: " .. tostring(alive(gpid)))
child:terminate()
child:join()
print("child exitcode: " .. child.exitcode)           -- -15, and no "cleanup ran"
local deadline = os.time() + 2
while alive(gpid) and os.time() < deadline do mp.sleep(0.05) end
print("grandchild alive after terminate: " .. tostring(alive(gpid)))

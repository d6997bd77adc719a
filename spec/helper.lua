-- Busted helper: after every spec file, fails the run if a process started
-- by it is still running (or a zombie) or a shared-memory segment of ours is
-- left in /dev/shm.  Processes are found by the MPROC_SPEC_TOKEN variable that
-- tools/run-specs.sh puts in the environment, which every descendant inherits.
local busted = require "busted"

local token = os.getenv("MPROC_SPEC_TOKEN")
-- Segments created before this file started belong to someone else.
local marker = os.tmpname()

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")  -- ("*a": Lua 5.1 needs the star)
  f:close()
  return s
end

local function ancestors()
  local set, pid = {}, read("/proc/self/stat"):match("^(%d+)")
  while pid and pid ~= "0" and not set[pid] do
    set[pid] = true
    local stat = read("/proc/" .. pid .. "/stat")
    pid = stat and stat:match("^%d+ %b() %S+ (%d+)")
  end
  return set
end

local function strays()
  local found, mine = {}, ancestors()
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") and not mine[pid] then
      local env = read("/proc/" .. pid .. "/environ")
      local cmd = (read("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
      -- our own `ls` children below are not strays
      local stat = env and read("/proc/" .. pid .. "/stat") or ""
      -- the segment tracker and the forkserver end after this process
      -- (run-specs.sh checks it)
      local comm = stat:match("^%d+ (%b())")
      local tracker = comm == "(mproc-tracker)" or comm == "(mproc-forkserv)"
      if env and env:find("MPROC_SPEC_TOKEN=" .. token, 1, true) and not tracker
         and not cmd:find("ls /proc", 1, true) and not cmd:find("/dev/shm", 1, true) then
        found[#found + 1] = pid .. " [" .. (stat:match("^%d+ %b() (%S+)") or "?") .. "] " .. cmd
      end
    end
  end
  p:close()
  return found
end

-- A live process that is not part of this spec run (another run going on at
-- the same time) owns the segments whose names carry its pid.
-- Our names start with the creator's pid: mproc-<pid>-..., mproc-q<pid>-...
local function foreign_pid(name)
  local pid = name:match("^mproc%-%a?(%d+)")
  local env = pid and read("/proc/" .. pid .. "/environ")
  return env ~= nil and not env:find("MPROC_SPEC_TOKEN=" .. token, 1, true)
end

local function shm_left()
  local found = {}
  local p = io.popen("find /dev/shm -maxdepth 1 -iname '*mproc*' -newer " .. marker
    .. " 2>/dev/null")
  for path in p:lines() do
    local name = path:match("[^/]+$")
    if not foreign_pid(name) then found[#found + 1] = name end
  end
  p:close()
  return found
end

local function check()
  if not token then return end
  -- objects a spec dropped are released by their __gc ("closed or
  -- collected"): collect them first, so only real leaks remain (loaded
  -- here, once the file ran: support loads mproc)
  require("support").full_gc()
  local left, shm
  for _ = 1, 40 do               -- children get up to 2 s to die with us
    left, shm = strays(), shm_left()
    if #left == 0 and #shm == 0 then return end
    os.execute("sleep 0.05")
  end
  io.stderr:write("\n!! spec helper: this spec file left things behind\n")
  for _, l in ipairs(left) do
    io.stderr:write("   process ", l, "\n")
    os.execute("kill -9 " .. l:match("^%d+") .. " 2>/dev/null")
  end
  for _, s in ipairs(shm) do
    io.stderr:write("   /dev/shm/", s, "\n")
    os.remove("/dev/shm/" .. s)
  end
  os.remove(marker)
  os.exit(1)
end

busted.subscribe({ "exit" }, function()
  check()
  os.remove(marker)
  return nil, true
end)

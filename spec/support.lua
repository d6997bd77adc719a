-- Support for specs: running a body in another process.
--
--   local support = require "support"
--   assert.equal(0, support.in_child(function() assert(x == 1) end))
--   local out, ok = support.run_script("print(1)", { MPROC_NO_PDEATHSIG = "1" })
local core = require "mproc.core"
local process = require "mproc.process"
local mp = require "mproc"
local compat = require "mproc.compat"

local pack, unpack, math_type = compat.pack, compat.unpack, compat.math_type

local M = {}

local DEFAULT_TIMEOUT = 30

-- Runs fn(...) in a forked child that always ends in _exit (after the
-- exit path: its own children are joined) and returns its exitcode:
-- fn returning nil/true -> 0, false -> 1, an integer n -> n; an error ->
-- the error and its traceback on stderr, then 1; os.exit(n) -> n; killed by
-- a signal -> -signum.  The child is killed (SIGKILL) when it has not
-- ended after `timeout` seconds (default 30), and nil, "timeout" returned.
function M.in_child(fn, timeout, ...)
  if type(timeout) ~= "number" then return M.in_child(fn, DEFAULT_TIMEOUT, timeout, ...) end
  local args = pack(...)
  local pid = process.fork()
  if pid == 0 then
    local code = 1
    pcall(function()
      os.exit = process.child_exit  -- luacheck: ignore 122
      process.reset_sched()
      local ok, r = compat.xpcall(fn, debug.traceback, unpack(args, 1, args.n))
      if not ok then
        io.stderr:write("in_child: ", tostring(r), "\n")
      elseif r == nil or r == true then code = 0
      elseif r == false then code = 1
      elseif math_type(r) == "integer" then code = r
      end
    end)
    core.exit(code)
  end
  local code = process.waitpid(pid, timeout)
  if code == nil then
    core.kill(pid, core.SIGKILL)
    process.waitpid(pid, 5)
    return nil, "timeout"
  end
  return code
end

-- The interpreter the specs run on (tools/run-specs.sh's MPROC_LUA): what a
-- spec starts as "a fresh Lua".
M.LUA = os.getenv("MPROC_SPEC_LUA") or "lua5.4"

-- LUA_PATH / LUA_CPATH for a Lua started from a spec (the same modules).
function M.lua_env()
  return ("LUA_PATH=%q LUA_CPATH=%q"):format(package.path, package.cpath)
end

-- Runs Lua source `src` in a fresh M.LUA (the same modules); `env` adds
-- environment variables.  Output (stdout and stderr) goes to a file, so
-- that a process left running by the script (detached) cannot hold up the
-- caller; with opts.pipe it is read through a pipe instead (stdout is then
-- a pipe, not a file).  Returns the output, then os.execute's results.
function M.run_script(src, env, opts)
  local path, out_path = os.tmpname(), os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  local vars = { M.lua_env() }
  for k, v in pairs(env or {}) do vars[#vars + 1] = ("%s=%q"):format(k, v) end
  local cmd = table.concat(vars, " ") .. " timeout -k 5 60 " .. M.LUA .. " " .. path
  local out, ok, how, n
  if opts and opts.pipe then
    local p = assert(io.popen(cmd .. " 2>&1", "r"))
    out = p:read("*a")
    ok, how, n = p:close()
  else
    ok, how, n = M.exec_status(os.execute(cmd .. " >" .. out_path .. " 2>&1"))
    local g = assert(io.open(out_path, "rb"))
    out = g:read("*a")
    g:close()
  end
  os.remove(path)
  os.remove(out_path)
  return out, ok, how, n
end


-- The contents of a file, or nil when it cannot be read (for a /proc file:
-- also when its process went away between the open and the read).
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- The state letter of pid ("R", "S", "Z"...) or nil when it is gone.
function M.proc_state(pid)
  local stat = M.read_file("/proc/" .. pid .. "/stat")
  return stat and stat:match("^%d+ %b() (%S)")
end

-- True when pid exists and is not a zombie.
function M.alive(pid)
  local st = M.proc_state(pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end

-- Polls pred() every 10 ms until it is true or `timeout` seconds passed.
function M.wait_until(pred, timeout)
  local deadline = core.now() + (timeout or 5)
  repeat
    if pred() then return true end
    core.sleep(0.01)
  until core.now() >= deadline
  return pred() and true or false
end

-- The /dev/shm names that contain `part` (plain text).
function M.shm_names(part)
  local found = {}
  local p = io.popen("ls /dev/shm 2>/dev/null")
  for name in p:lines() do
    if name:find(part, 1, true) then found[#found + 1] = name end
  end
  p:close()
  return found
end

-- The segments made by process `pid` (slab and SharedMemory segments).
function M.shm_of(pid)
  return M.shm_names("mproc-" .. pid .. "-")
end

-- The error that fn(...) raises (it must raise), without the
-- "file:line: " position of a string error.
function M.errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  if type(err) == "string" then return (err:gsub("^[^:\n]*:%d+: ", "")) end
  return err
end

-- Runs fn(i) in n processes at once; returns their exit codes.
function M.in_children(n, fn)
  local ps = {}
  for i = 1, n do
    ps[i] = mp.Process(fn, i)
    ps[i]:start()
  end
  local codes = {}
  for i = 1, n do
    assert(ps[i]:join(60), "a child did not end in 60 s")
    codes[i] = ps[i].exitcode
    ps[i]:close()
  end
  return codes
end

-- Asserts that every exit code is 0.
function M.all_zero(codes)
  for i, c in ipairs(codes) do
    assert(c == 0, ("child %d exited with %s"):format(i, tostring(c)))
  end
end

-- Seconds that pcall(fn) took, then pcall's results.
function M.elapsed(fn)
  local t = core.now()
  local r = pack(pcall(fn))
  return core.now() - t, unpack(r, 1, r.n)
end

-- group B

-- os.execute's results (and so run_script's) as Lua 5.2+ gives them: true
-- or nil, "exit" or "signal", the number.  5.1 and LuaJIT return the wait
-- status instead.
function M.exec_status(ok, how, n)
  if type(ok) ~= "number" then return ok, how, n end
  if ok % 256 == 0 then
    local code = (ok - ok % 256) / 256
    return code == 0 or nil, "exit", code
  end
  return nil, "signal", ok % 128
end

-- group A

-- What `local x <close> = v` does at the end of a scope, for specs that run
-- on every VM (`finally(function() support.close(a, b) end)`): calls the
-- __close of each value given (nil and false skipped), the last one first;
-- its close method where the VM has no __close (an io file before 5.4).
function M.close(...)
  for i = select("#", ...), 1, -1 do
    local v = select(i, ...)
    if v then
      local mt = getmetatable(v)
      local fin = type(mt) == "table" and rawget(mt, "__close")
      if fin then fin(v) else v:close() end
    end
  end
end

-- The pids of the processes whose command line is exactly `argv`.
function M.pids_of(argv)
  local want, found = table.concat(argv, "\0") .. "\0", {}
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") and M.read_file("/proc/" .. pid .. "/cmdline") == want then
      found[#found + 1] = pid
    end
  end
  p:close()
  return found
end

-- Runs Lua source `src` (it prints "ready" once set up) in a fresh M.LUA
-- and sends it SIGINT, as Ctrl-C would, once it printed "ready", sleeps
-- (state S) and runs one program with the command line `argv`.  Returns
-- what it printed after "ready", and its exit code.
function M.sigint_script(src, argv)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(src)
  f:close()
  local cmd = ("LUA_PATH=%q LUA_CPATH=%q exec %s %s"):format(
    package.path, package.cpath, M.LUA, script)
  local p = mp.subprocess.Popen({ "sh", "-c", cmd }, { stdout = "pipe" })
  local ok, out, code = pcall(function()
    assert(p.stdout:readline(10) == "ready", "no ready line")
    assert(M.wait_until(function()
      return #M.pids_of(argv) == 1 and M.proc_state(p.pid) == "S"
    end, 10), "the program did not start")
    p:send_signal(2)
    local o = p.stdout:read(nil, 10)
    return o, p:wait(10)
  end)
  M.close(p)
  os.remove(script)
  if not ok then error(out, 0) end
  return out, code
end

-- A stream that keeps what is written (for mp.progress{stream=}).
function M.sink()
  local s = { parts = {} }
  function s:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function s.flush() end
  function s:text() return table.concat(self.parts) end
  return s
end

-- A private redis-server on the Unix socket `sock` (its files in `dir`),
-- answering before this returns; `extra` adds arguments.  Returns its Popen.
function M.redis_server(sock, dir, extra)
  local argv = { "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                 "--appendonly", "no", "--dir", dir }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local server = mp.subprocess.Popen(argv, { stdout = "devnull", stderr = "devnull" })
  local redis = require "mproc.redis"
  assert(M.wait_until(function()
    local ok, c = redis.connect(sock, nil, 1)
    if ok then c:close() end
    return ok
  end, 10), "redis-server did not start")
  return server
end

-- Collects what the specs dropped.  A LuaJIT trace keeps the objects it
-- was compiled against (an upvalue never assigned becomes a constant of
-- the trace) until the trace is flushed.
function M.full_gc()
  local jit = rawget(_G, "jit")
  if jit then jit.flush() end
  collectgarbage(); collectgarbage()
end

return M

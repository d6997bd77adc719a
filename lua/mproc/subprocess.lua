-- mp.subprocess (API.md "Subprocesses"): run other programs, on
-- posix_spawn (src/core/subprocess.c).  Every wait goes through sched (the one
-- waiting point): pipes and the child's end (a Linux pidfd) are waited
-- for as descriptors; without a pidfd the exit is polled with short naps.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"

local check, raise, argerror, typename = errors.check, errors.raise, util.argerror, util.typename
local math_type, pcall = compat.math_type, compat.pcall  -- pcall: a wait in it may yield (mp.run)

local M = {}

-- {=====================================================================
-- Arguments
-- ======================================================================

local function got(v) return v == nil and "no value" or typename(v) end

-- The options each function takes; `capture_output` and `text` are
-- Python's spellings (text is a no-op: Lua strings are bytes either way).
local POPEN_OPTS = { stdin = true, stdout = true, stderr = true, cwd = true, env = true,
                     shell = true, text = true, universal_newlines = true,
                     start_new_session = true }
local RUN_OPTS = { input = true, capture = true, capture_output = true, timeout = true,
                   check = true }
for k in pairs(POPEN_OPTS) do RUN_OPTS[k] = true end

local function check_opts(opts, allowed, n, fname)
  opts = util.check_opts(opts, allowed, fname, n, 1)
  for _, k in ipairs({ "shell", "text", "universal_newlines", "start_new_session", "capture",
                       "capture_output", "check" }) do
    if allowed[k] then util.opt_boolean(opts, k, fname, n, 1) end
  end
  return opts
end

-- argv as a list of strings (with shell = true: one string for /bin/sh -c)
local function argv_of(argv, opts, fname)
  if opts.shell then
    if type(argv) ~= "string" then
      argerror(1, fname, "string expected with shell = true, got " .. got(argv), 3)
    end
    return { "/bin/sh", "-c", argv }
  end
  if type(argv) ~= "table" then argerror(1, fname, "table expected, got " .. got(argv), 3) end
  local n = #argv
  if n == 0 then argerror(1, fname, "argv must not be empty", 3) end
  local out = {}
  for i = 1, n do
    local a = argv[i]
    if type(a) == "number" then a = tostring(a) end
    if type(a) ~= "string" then
      argerror(1, fname, ("argv[%d] must be a string, got %s"):format(i, got(argv[i])), 3)
    end
    out[i] = a
  end
  return out
end

local STDIO = {
  inherit = core.STDIO_INHERIT, pipe = core.STDIO_PIPE, devnull = core.STDIO_DEVNULL,
  stdout = core.STDIO_STDOUT,
}

-- A stream option: "pipe", "devnull", "inherit" (nil), "stdout" (stderr
-- only), a descriptor number or an open Lua file.
local function stdio_of(v, name, n, fname)
  if v == nil then return core.STDIO_INHERIT end
  if type(v) == "string" and STDIO[v] and (v ~= "stdout" or name == "stderr") then
    return STDIO[v]
  end
  if math_type(v) == "integer" and v >= 0 then return core.STDIO_FD, v end
  local fd = io.type(v) == "file" and core.subprocess_file_fileno(v)
  if fd then return core.STDIO_FD, fd end
  argerror(n, fname, ("%s must be \"pipe\", \"devnull\", \"inherit\"%s, "
    .. "a descriptor or an open file")
    :format(name, name == "stderr" and ", \"stdout\"" or ""), 4)
end

local function env_of(env, n, fname)
  if env == nil then return nil end
  if type(env) ~= "table" then argerror(n, fname, "env must be a table", 4) end
  local list = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      argerror(n, fname, "env must map strings to strings", 4)
    end
    list[#list + 1] = k .. "=" .. v
  end
  table.sort(list)
  return list
end

-- }=====================================================================

-- {=====================================================================
-- Pipe streams: p.stdin, p.stdout, p.stderr
-- ======================================================================

local Stream = {}
Stream.__index = Stream
Stream.__name = "mproc.subprocess.Stream"

local function stream_ud(self, fname)
  if self.closed or not self.proc._ud:_fd(self.i) then
    error("attempt to use a closed stream", 3)
  end
  if fname and ((self.i == 0) ~= (fname == "write")) then
    error(("cannot %s %s"):format(fname == "write" and "write to" or "read from",
      self.i == 0 and "stdin" or self.i == 1 and "stdout" or "stderr"), 3)
  end
  return self.proc._ud
end

-- stdin:write(s [, timeout]): returns once all of s is in the pipe.
function Stream:write(s, timeout)
  local ud = stream_ud(self, "write")
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then argerror(1, "write", "string expected, got " .. got(s)) end
  util.check_timeout(timeout, 2, "write")
  local deadline, pos, fd = sched.deadline(timeout), 0, ud:_fd(0)
  while pos < #s do
    local n = check(ud:_write(s, pos))
    pos = pos + n
    if pos < #s and n == 0 and not sched.wait_fd(fd, "w", deadline) then
      raise("Timeout", ("write timed out after %g s (%d of %d bytes written)")
        :format(timeout, pos, #s))
    end
  end
  return self
end

-- Reads one chunk into self.buf; false at EOF.
local function fill(self, ud, deadline, timeout)
  while true do
    local data = check(ud:_read(self.i))
    if data then
      self.buf = self.buf .. data
      return true
    elseif data == nil then
      return false
    end
    if not sched.wait_fd(ud:_fd(self.i), "r", deadline) then
      raise("Timeout", ("read timed out after %g s"):format(timeout))
    end
  end
end

-- stdout:read([n [, timeout]]): up to n bytes (nil at EOF); n = nil or
-- "a" reads everything up to EOF.
function Stream:read(n, timeout)
  local ud = stream_ud(self, "read")
  if n ~= nil and n ~= "a" and (math_type(n) ~= "integer" or n < 0) then
    argerror(1, "read", "non-negative integer or \"a\" expected, got " .. got(n))
  end
  util.check_timeout(timeout, 2, "read")
  local deadline = sched.deadline(timeout)
  if n == nil or n == "a" then
    while fill(self, ud, deadline, timeout) do end
    local all = self.buf
    self.buf = ""
    return all
  end
  if #self.buf == 0 and n > 0 and not fill(self, ud, deadline, timeout) then return nil end
  local out = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return out
end

-- stdout:readline([timeout]): the next line without its "\n", nil at EOF.
function Stream:readline(timeout)
  local ud = stream_ud(self, "readline")
  util.check_timeout(timeout, 1, "readline")
  local deadline = sched.deadline(timeout)
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      return line
    end
    if not fill(self, ud, deadline, timeout) then
      if #self.buf == 0 then return nil end
      local line = self.buf
      self.buf = ""
      return line
    end
  end
end

-- for line in p.stdout:lines() do ... end
function Stream:lines(timeout)
  return function() return self:readline(timeout) end
end

function Stream:fileno()
  return stream_ud(self):_fd(self.i)
end

function Stream:close()
  if self.closed then return end
  self.closed = true
  self.proc._ud:_closefd(self.i)
end

-- }=====================================================================

-- {=====================================================================
-- Popen
-- ======================================================================

local Popen = {}
Popen.__index = Popen
Popen.__name = "mproc.subprocess.Popen"

local function popen(argv, opts, fname, lvl)
  local cmd = argv_of(argv, opts, fname)
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    argerror(2, fname, "cwd must be a string", lvl)
  end
  local env = env_of(opts.env, 2, fname)
  local m0, f0 = stdio_of(opts.stdin, "stdin", 2, fname)
  local m1, f1 = stdio_of(opts.stdout, "stdout", 2, fname)
  local m2, f2 = stdio_of(opts.stderr, "stderr", 2, fname)
  local ok, ud, msg, errno = core.subprocess_spawn(cmd, opts.cwd, env, m0, f0, m1, f1, m2, f2,
    opts.start_new_session == true)
  if not ok then
    -- posix_spawn reports a bad cwd like a missing program: tell them apart
    if opts.cwd then
      local f, why, code = io.open(opts.cwd .. "/.", "r")
      if f then f:close() else
        raise("OSError", ("cannot use '%s' as cwd (to run '%s'): %s"):format(opts.cwd, cmd[1],
          why:sub(#opts.cwd + 5)), { errno = code, cwd = opts.cwd })
      end
    end
    check(false, ud, msg, errno)
  end
  local self = setmetatable({ _ud = ud, args = argv, pid = ud:_pid() }, Popen)
  for i, name in pairs({ [0] = "stdin", "stdout", "stderr" }) do
    if ud:_fd(i) then self[name] = setmetatable({ proc = self, i = i, buf = "" }, Stream) end
  end
  return self
end

function M.Popen(argv, opts)
  opts = check_opts(opts, POPEN_OPTS, 2, "Popen")
  return popen(argv, opts, "Popen", 3)
end

local function checkp(self, fname)
  if getmetatable(self) ~= Popen then
    argerror(1, fname, "Popen expected, got " .. got(self), 3)
  end
  return self._ud
end

function Popen:poll()
  local ud = checkp(self, "poll")
  local code = check(ud:_poll(false))
  self.returncode = code
  return code
end

-- Waits for the end; false when the deadline passed.
local function wait_until(self, ud, deadline)
  local code = check(ud:_poll(false))
  if code then self.returncode = code return true end
  local fd = ud:_waitfd()
  if fd then
    if not sched.wait_fd(fd, "r", deadline) then return false end
    self.returncode = check(ud:_poll(true))
    return true
  end
  if not sched.wait_until(function()
    code = check(ud:_poll(false))
    return code ~= nil
  end, deadline) then
    return false
  end
  self.returncode = code
  return true
end

function Popen:wait(timeout)
  local ud = checkp(self, "wait")
  util.check_timeout(timeout, 1, "wait")
  if not wait_until(self, ud, sched.deadline(timeout)) then
    raise("Timeout", ("process %d did not end within %g s"):format(self.pid, timeout),
      { pid = self.pid })
  end
  return self.returncode
end

local function send_signal(self, fname, sig)
  local ud = checkp(self, fname)
  if math_type(sig) ~= "integer" then
    argerror(1, fname, "integer expected, got " .. got(sig), 3)
  end
  check(ud:_signal(sig))
end

function Popen:send_signal(sig) send_signal(self, "send_signal", sig) end
function Popen:terminate() send_signal(self, "terminate", core.SIGTERM) end
function Popen:kill() send_signal(self, "kill", core.SIGKILL) end

-- communicate([input [, timeout]]) -> stdout, stderr (nil where no pipe).
-- On Timeout the child keeps running (as in Python): kill it or call
-- communicate again; what was read so far is kept for that next call.
function Popen:communicate(input, timeout)
  local ud = checkp(self, "communicate")
  if input ~= nil and type(input) ~= "string" then
    argerror(1, "communicate", "string expected, got " .. got(input))
  end
  if input and #input > 0 and not self.stdin then
    error("cannot send input: stdin is not a pipe", 2)
  end
  util.check_timeout(timeout, 2, "communicate")
  local deadline = sched.deadline(timeout)
  -- bytes already read by stream:read stay in front
  ud:_comm(input)
  for _, name in ipairs({ "stdin", "stdout", "stderr" }) do
    if self[name] then self[name].closed = true end
  end
  while true do
    local done, fd, slice = check(ud:_step())
    if done then break end
    local dl = deadline
    if slice then dl = math.min(deadline or math.huge, sched.now() + 0.01) end
    if not sched.wait_fd(fd, "r", dl) and not slice then
      raise("Timeout", ("communicate timed out after %g s"):format(timeout), { pid = self.pid })
    end
    if slice and deadline and sched.now() >= deadline then
      raise("Timeout", ("communicate timed out after %g s"):format(timeout), { pid = self.pid })
    end
  end
  local out, err = ud:_result()
  -- ("" .. out copies out on LuaJIT: 16 MiB captured cost 1.8x 5.4's)
  if self.stdout and out and self.stdout.buf ~= "" then out = self.stdout.buf .. out end
  if self.stderr and err and self.stderr.buf ~= "" then err = self.stderr.buf .. err end
  if not wait_until(self, ud, deadline) then
    raise("Timeout", ("communicate timed out after %g s"):format(timeout), { pid = self.pid })
  end
  return out, err
end

-- Closes the pipes (the child is still reaped when the object goes).
function Popen:close()
  checkp(self, "close")
  for _, s in ipairs({ self.stdin or false, self.stdout or false, self.stderr or false }) do
    if s then s:close() end
  end
end

-- `local p <close> = Popen(...)`: closes the pipes and waits for the end.
function Popen.__close(self)
  self:close()
  if self.returncode == nil then self:wait() end
end

-- }=====================================================================

-- {=====================================================================
-- run, call, check_call, check_output
-- ======================================================================

local function cmd_of(argv)
  local out = {}
  for i = 1, #argv do out[i] = tostring(argv[i]) end
  return out
end

local function called_error(argv, code, out, err)
  local cmd = type(argv) == "table" and table.concat(cmd_of(argv), " ") or tostring(argv)
  raise("CalledProcessError", ("command '%s' returned non-zero exit status %d"):format(cmd, code),
    { returncode = code, stdout = out, stderr = err, cmd = argv })
end

local function run(argv, opts, fname)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if opts.input ~= nil then
    if type(opts.input) ~= "string" then argerror(2, fname, "input must be a string", 3) end
    if o.stdin == nil then o.stdin = "pipe" end
  end
  if opts.capture or opts.capture_output then
    if o.stdout == nil then o.stdout = "pipe" end
    if o.stderr == nil then o.stderr = "pipe" end
  end
  if opts.timeout ~= nil then util.check_timeout(opts.timeout, 2, fname) end
  local p = popen(argv, o, fname, 4)
  -- Ends the child unless it was waited for: on a timeout, an error, or the
  -- calling task being closed (mp.run closing its tasks) while waiting.
  local function cleanup()
    if p.returncode == nil then
      pcall(p.kill, p)
      pcall(p.close, p)
      pcall(p.wait, p)
    end
  end
  local cancel = sched.defer(cleanup)
  local ok, out, err = pcall(p.communicate, p, opts.input, opts.timeout)
  if cancel then cancel() end
  cleanup()
  if not ok then
    if errors.is_error(out, "Timeout") then
      local cmd = type(argv) == "table" and table.concat(cmd_of(argv), " ") or tostring(argv)
      out = errors.new("Timeout", ("%s timed out after %g s: %s"):format(fname, opts.timeout, cmd),
        { pid = p.pid, cmd = argv })
    end
    error(out, 0)
  end
  local res = { returncode = p.returncode, stdout = out, stderr = err, args = argv, pid = p.pid }
  if opts.check and res.returncode ~= 0 then called_error(argv, res.returncode, out, err) end
  return res
end

function M.run(argv, opts)
  return run(argv, check_opts(opts, RUN_OPTS, 2, "run"), "run")
end

function M.call(argv, opts)
  return run(argv, check_opts(opts, RUN_OPTS, 2, "call"), "call").returncode
end

function M.check_call(argv, opts)
  local o = {}
  for k, v in pairs(check_opts(opts, RUN_OPTS, 2, "check_call")) do o[k] = v end
  o.check = true
  return run(argv, o, "check_call").returncode
end

function M.check_output(argv, opts)
  local o = {}
  for k, v in pairs(check_opts(opts, RUN_OPTS, 2, "check_output")) do o[k] = v end
  if o.stdout == nil then o.stdout = "pipe" end
  o.check = true
  return run(argv, o, "check_output").stdout
end

-- }=====================================================================

local public = {
  run = M.run, call = M.call, check_call = M.check_call, check_output = M.check_output,
  Popen = M.Popen,
}
M.exports = { subprocess = public }
return M

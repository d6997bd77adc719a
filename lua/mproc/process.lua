-- Processes (API.md "Processes"): mp.Process, subclassing with :extend(),
-- mp.fork/mp.waitpid and the process-wide functions.  The C core
-- (src/core/process.c) forks, reaps and runs the exit path; this module is the
-- policy: names, the child's bootstrap, joins through the one waiting point.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local codec = require "mproc.codec"
local context = require "mproc.context"

local check, argerror = errors.check, util.argerror
local getpid = core.getpid
local pack, unpack, math_type = compat.pack, compat.unpack, compat.math_type

-- Private state of each Process object (instances keep only user fields,
-- so that `self.x` is free for subclasses and the fields can be sent).
local priv = setmetatable({}, { __mode = "k" })

-- Per-process state, reset in every child.
local state = {
  counter = 0,      -- Process-N numbering
  identity = "",    -- "" in the main process, "1", "1:2"... in children
  children = {},    -- started, not yet reaped Process objects (in order)
  current = { name = "MainProcess", pid = getpid(), daemon = false },
  parent = nil,
}

local M = {}

-- {=====================================================================
-- Children bookkeeping
-- ======================================================================

local function finish(s, code)
  s.ended, s.exitcode = true, code
end

-- Polls every child once, forgets the finished ones (Python's _cleanup).
local function reap_children()
  if #state.children == 0 then return end
  local kept = {}
  for _, p in ipairs(state.children) do
    local s = priv[p]
    if not s.ended and not s.closed then
      local ok, code = context.child_poll(s.child)
      if ok and code ~= nil then finish(s, code)
      elseif ok then kept[#kept + 1] = p end
    end
  end
  state.children = kept
end

local function forget_child(p)
  local list = state.children
  for i = 1, #list do
    if list[i] == p then table.remove(list, i) return end
  end
end

-- Lets go of a process object's OS resources (it has ended, or is left).
local function release(p, s)
  s.closed = true
  if s.child then context.child_close(s.child) end
  s.sentinel = nil
  forget_child(p)
end

-- A process whose scheduler hooks (mp.run) were inherited must block for
-- real: the parent's coroutines do not run here.
local function reset_sched()
  if sched.reset_child then return sched.reset_child() end
  for k in pairs(sched.hooks) do sched.hooks[k] = nil end
end

-- }=====================================================================

-- {=====================================================================
-- The child side
-- ======================================================================

local function child_exit(code)
  core.exit(code)
end

-- The child's traceback, without the bootstrap's own frames below run().
local function traceback(e)
  local tb = errors.traceback(e, 3)
  local n
  repeat
    tb, n = tb:gsub("\n[^\n]*mproc/process%.lua:[^\n]*$", "")
    if n == 0 then tb, n = tb:gsub("\n%s*%(%.%.%.tail calls%.%.%.%)$", "") end
    if n == 0 then tb, n = tb:gsub("\n%s*%(tail call%): %?$", "") end  -- Lua 5.1's
    if n == 0 then tb, n = tb:gsub("\n%s*%[C%]: in %?$", "") end
    if n == 0 then tb, n = tb:gsub("\n[^\n]*mproc/spawn_child%.lua:[^\n]*$", "") end
    if n == 0 then tb, n = tb:gsub("\n[^\n]*%(command line%):[^\n]*$", "") end
  until n == 0
  return tb
end

-- Turns this forked process into the Process `self`.
local function become_child(self, s)
  -- a forkserver child's OS parent is the server: the payload names ours
  state.parent = { name = state.current.name, pid = s.parent_pid or core.getppid() }
  state.current = self
  state.identity, state.counter, state.children = s.identity, 0, {}
  s.pid, s.is_self, s.child, s.sentinel = getpid(), true, nil, nil
  os.exit = child_exit  -- luacheck: ignore 122 (the child's own exit path)
  reset_sched()
end

local function child_body(self, s, payload)
  become_child(self, s)
  if payload then
    local req = payload.require   -- spawned: modules are required by name
    s.target = codec.decode(payload[1], false, req)
    s.args = codec.decode(payload[2], false, req)
    for i, fd in pairs(payload.fd_args or {}) do s.args[i] = fd end
    if payload[3] then
      for k, v in pairs(codec.decode(payload[3], false, req)) do rawset(self, k, v) end
    end
  end
  -- the collector was paused by child_main: restart it for the user's code
  collectgarbage("restart")
  return self:run()
end

-- Runs in the child and never returns: every path ends in core.exit.
local function child_main(self, s, payload)
  -- A collector step here would write to most of the heap inherited from
  -- the parent (copy-on-write faults): the bootstrap runs without it.
  collectgarbage("stop")
  local ok, err = compat.xpcall(child_body, traceback, self, s, payload)
  if ok then child_exit(0) end
  pcall(function()
    io.stderr:write("Process ", tostring(s.name), ":\n", tostring(err), "\n")
    io.stderr:flush()
  end)
  child_exit(1)
end

-- }=====================================================================

-- {=====================================================================
-- Process class
-- ======================================================================

local Process = {}

local function state_of(self, fname)
  local s = priv[self]
  if not s then
    error(("bad argument #1 to '%s' (Process expected, got %s)")
      :format(fname, util.typename(self)), 3)
  end
  if s.closed then error("attempt to use a closed process", 3) end
  return s
end

local GETTERS = {
  name = function(s) return s.name end,
  daemon = function(s) return s.daemon end,
  pid = function(s)
    if s.closed then error("attempt to use a closed process", 3) end
    return s.pid
  end,
  sentinel = function(s)
    if s.closed then error("attempt to use a closed process", 3) end
    return s.sentinel
  end,
  exitcode = function(s)
    if s.closed then error("attempt to use a closed process", 3) end
    if s.child and not s.ended then
      local code = check(context.child_poll(s.child))
      if code ~= nil then finish(s, code) end
    end
    return s.exitcode
  end,
}

local SETTERS = {
  name = function(s, v)
    if type(v) ~= "string" then
      argerror(1, "name", "string expected, got " .. util.typename(v), 3)
    end
    s.name = v
  end,
  daemon = function(s, v)
    if s.started then error("cannot set daemon after start", 3) end
    if type(v) ~= "boolean" then
      argerror(1, "daemon", "boolean expected, got " .. util.typename(v), 3)
    end
    s.daemon = v
  end,
}

local function readonly(field)
  return function() error(("cannot set read-only field '%s'"):format(field), 3) end
end
SETTERS.pid, SETTERS.exitcode, SETTERS.sentinel =
  readonly("pid"), readonly("exitcode"), readonly("sentinel")

local function tostr(self)
  local s = priv[self]
  local what = s.closed and "closed" or not s.started and "initial"
    or s.ended and ("exitcode=" .. tostring(s.exitcode)) or "started"
  return ("<Process name='%s'%s %s>"):format(s.name,
    s.pid and (" pid=" .. s.pid) or "", what)
end

-- Parses mp.Process(fn, ...) / mp.Process{...} into s.
local OPTS = { target = true, args = true, name = true, daemon = true, detached = true }

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- The name a constructor was called by ("Worker" for `Worker{...}`), for
-- its argument errors; mp.Process itself, or a call without a name, says
-- "Process".
local function ctor_name(cls)
  if cls == Process then return "Process" end
  local info = debug.getinfo(3, "n")   -- ctor_name <- parse <- construct
  return info and info.name or "Process"
end

local function parse(cls, s, a, ...)
  if a == nil or type(a) == "function" then
    s.target, s.args = a, pack(...)
    return
  end
  local fname = ctor_name(cls)
  if type(a) ~= "table" then
    argerror(1, fname, "function or table expected, got " .. util.typename(a), 3)
  end
  for k in pairs(a) do
    if not OPTS[k] then
      -- a subclass takes the same options: a misspelt `nmae` must not
      -- become a silent instance field
      local hint = type(k) == "string" and util.near(k, OPTS)
      local more = ""
      if hint then
        more = ("; did you mean '%s'?"):format(hint)
      elseif not rawget(cls, "_strict") and type(k) == "string" then
        more = ("; set own fields on the instance: w.%s = ... before start"):format(k)
      end
      argerror(1, fname, ("unknown option '%s'%s"):format(tostring(k), more), 3)
    end
  end
  local t, args = a.target, a.args
  if t ~= nil and not is_callable(t) then
    argerror(1, fname, "'target' must be a function, got " .. util.typename(t), 3)
  end
  if args ~= nil and type(args) ~= "table" then
    argerror(1, fname, "'args' must be a table, got " .. util.typename(args), 3)
  end
  for _, k in ipairs { "name", "daemon", "detached" } do
    local want = k == "name" and "string" or "boolean"
    if a[k] ~= nil and type(a[k]) ~= want then
      argerror(1, fname, ("'%s' must be a %s, got %s"):format(k, want,
        util.typename(a[k])), 3)
    end
  end
  s.target = t
  s.args = args and { n = args.n or #args, unpack(args, 1, args.n or #args) } or { n = 0 }
  if a.name ~= nil then s.name = a.name end
  s.daemon = a.daemon or false
  s.detached = a.detached or false
end

local function construct(cls, ...)
  local self = setmetatable({}, cls)
  state.counter = state.counter + 1
  local id = state.identity == "" and tostring(state.counter)
    or (state.identity .. ":" .. state.counter)
  local s = { identity = id, name = "Process-" .. id, daemon = false,
              detached = false, started = false, closed = false, ended = false,
              args = { n = 0 } }
  priv[self] = s
  local init = cls.init
  if init ~= nil then
    init(self, ...)  -- a subclass with its own constructor: Worker(loop)
  else
    parse(cls, s, ...)
  end
  return self
end

local function close_mm(self)
  local s = priv[self]
  if not s or s.closed then return end
  if s.started and not s.ended and not s.is_self and s.creator == getpid() then
    if s.daemon then context.child_signal(s.child, core.SIGTERM) end
    sched.wait_fd(s.sentinel, "r", nil)
    local ok, code = context.child_poll(s.child, true)
    if ok and code ~= nil then finish(s, code) end
  end
  release(self, s)
end

local function make_class(parent, methods)
  local cls = {}
  cls.__index = function(self, k)
    local get = GETTERS[k]
    if get then
      local s = priv[self]
      if s then return get(s) end
    end
    return cls[k]
  end
  cls.__newindex = function(self, k, v)
    local set = SETTERS[k]
    local s = priv[self]
    if set and s then return set(s, v) end
    rawset(self, k, v)
  end
  cls.__close = close_mm
  cls.__tostring = tostr
  cls.__name = "mproc.Process"
  if methods then
    for k, v in pairs(methods) do cls[k] = v end
  end
  return setmetatable(cls, { __index = parent, __call = construct })
end

-- Serializes what the child needs before forking (DESIGN.md invariant 4):
-- an unsendable argument raises SerializeError here and nothing starts.
local function payload_of(self, s)
  local encode = codec.encode
  if not encode or not codec.decode then return nil end  -- codec not built yet
  local fields
  if next(self) ~= nil then
    fields = {}
    for k, v in next, self do fields[k] = v end
  end
  return { encode(s.target, "target"), encode(s.args, "args"),
           fields and encode(fields, "self") }
end

-- The user's classes between Process (or a context's Process) and the
-- object's class, base first: their methods, for a spawned child.
local CLASS_KEYS = { __index = true, __newindex = true, __close = true, __tostring = true,
                     __name = true, _strict = true, _start_method = true }

local function class_chain(self)
  local chain, cls = {}, getmetatable(self)
  while type(cls) == "table" and not rawget(cls, "_strict") do
    local methods = {}
    for k, v in pairs(cls) do
      if not CLASS_KEYS[k] then methods[k] = v end
    end
    table.insert(chain, 1, methods)
    local mt = getmetatable(cls)
    cls = mt and mt.__index
  end
  return chain
end

-- start() under the spawn and forkserver methods: a fresh interpreter (or
-- a fork of the forkserver) gets the object's target, arguments, fields
-- and class through the codec.
local function spawn_start(self, s, method)
  local fields
  if next(self) ~= nil then
    fields = {}
    for k, v in next, self do fields[k] = v end
  end
  local enc = context.encode
  local extra
  if s.fd_args then
    extra = {}
    for j, i in ipairs(s.fd_args) do extra[j] = s.args[i] end
  end
  local pid, child = context.start(method, function()
    return { kind = "process", name = s.name, identity = s.identity, daemon = s.daemon,
             parent_name = state.current.name, parent_pid = getpid(),
             target = enc(s.target, "target"), args = enc(s.args, "args"),
             self = fields and enc(fields, "self"), class = enc(class_chain(self), "class"),
             fd_args = s.fd_args }
  end, s.detached, s.daemon, extra)
  s.started, s.pid, s.child, s.creator = true, pid, child, getpid()
  s.sentinel = context.child_fileno(child)
  local list = state.children
  list[#list + 1] = self
end

-- The child side of spawn_start (called by spawn_child.lua); never returns.
function M.spawned_main(p)
  state.current = { name = p.parent_name, pid = core.getppid(), daemon = false }
  local s = { identity = p.identity, name = p.name, daemon = p.daemon, detached = false,
              started = true, closed = false, ended = false, args = { n = 0 },
              parent_pid = p.parent_pid }
  local ok, cls = pcall(function()
    local cls = Process
    for _, methods in ipairs(codec.decode(p.class, false, true)) do
      cls = cls:extend(methods)
    end
    return cls
  end)
  if not ok then
    io.stderr:write("Process ", tostring(p.name), ":\n", tostring(cls), "\n")
    child_exit(1)
  end
  local self = setmetatable({}, cls)
  priv[self] = s
  local fd_args
  if p.fd_args then   -- args that are descriptors: the child's numbers
    fd_args = {}
    for j, i in ipairs(p.fd_args) do fd_args[i] = p.fds[p.extra_at + j - 1] end
  end
  child_main(self, s, { p.target, p.args, p.self, require = true, fd_args = fd_args })
end

local function start_method_of(self)
  return getmetatable(self)._start_method or context.method()
end

function Process:start()
  local s = state_of(self, "start")
  if s.started then error("cannot start a process twice", 2) end
  if s.is_self then error("cannot start a process twice", 2) end
  reap_children()
  local method = start_method_of(self)
  if method ~= "fork" then return spawn_start(self, s, method) end
  context.check_fork("start a process")
  context.mark_started()
  local payload = payload_of(self, s)
  local pid, child = check(core.process_fork(s.detached, s.daemon))
  if pid == 0 then child_main(self, s, payload) end
  s.started, s.pid, s.child, s.creator = true, pid, child, getpid()
  s.sentinel = context.child_fileno(child)
  local list = state.children
  list[#list + 1] = self
end

function Process:run()
  local s = priv[self]
  if s and s.target then return s.target(unpack(s.args, 1, s.args.n)) end
end

function Process:join(timeout)
  local s = state_of(self, "join")
  util.check_timeout(timeout, 1, "join")
  if not s.started then error("can only join a started process", 2) end
  if s.is_self or s.creator ~= getpid() then error("can only join a child process", 2) end
  if s.ended then return true end
  if not sched.wait_fd(s.sentinel, "r", sched.deadline(timeout)) then return false end
  finish(s, check(context.child_poll(s.child, true)))
  forget_child(self)
  return true
end

function Process:is_alive()
  local s = state_of(self, "is_alive")
  if s.is_self then return true end
  if not s.started or s.ended then return false end
  if s.creator ~= getpid() then error("can only test a child process", 2) end
  local code = check(context.child_poll(s.child))
  if code == nil then return true end
  finish(s, code)
  forget_child(self)
  return false
end

local function signal(self, fname, sig)
  local s = state_of(self, fname)
  if not s.started then error(("can only %s a started process"):format(fname), 3) end
  if s.is_self then return check(core.kill(getpid(), sig)) end
  if s.ended then return end
  check(context.child_signal(s.child, sig))
end

function Process:terminate() signal(self, "terminate", core.SIGTERM) end
function Process:kill() signal(self, "kill", core.SIGKILL) end

function Process:close()
  local s = priv[self]
  if not s then state_of(self, "close") end
  if s.closed then return end
  if s.started and not s.ended and not s.is_self then
    local ok, code = context.child_poll(s.child)
    if ok and code ~= nil then finish(s, code) end
    if not s.ended then error("cannot close a running process", 2) end
  end
  release(self, s)
end

-- Process:extend([methods]) -> a subclass, constructed like mp.Process.
function Process:extend(methods)
  if methods ~= nil and type(methods) ~= "table" then
    argerror(1, "extend", "table expected, got " .. util.typename(methods))
  end
  return make_class(self, methods)
end

Process._strict = true   -- mp.Process itself (and a context's): no own-field hint
Process = make_class(nil, Process)

-- A context's Process (mp.get_context(m).Process): starts with method m.
local bound = {}
local function class_for(m)
  bound[m] = bound[m] or make_class(Process, { _start_method = m, _strict = true })
  return bound[m]
end
context.bind.Process = class_for
M.class_for = class_for

-- }=====================================================================

-- {=====================================================================
-- Module functions
-- ======================================================================

-- Other modules' children (pool workers) that active_children lists too.
local children_sources = {}
function M.add_children_source(fn)
  children_sources[#children_sources + 1] = fn
end

local function active_children()
  reap_children()
  local out = {}
  for i, p in ipairs(state.children) do out[i] = p end
  for i = 1, #children_sources do children_sources[i](out) end
  return out
end

local function current_process()
  return state.current
end

local function parent_process()
  return state.parent
end

-- mp.fork(): 0 in the child, the child's pid in the parent.  The child
-- keeps running the caller's code; it dies with its parent (no orphans) and
-- is reaped automatically when nobody calls mp.waitpid for it.
local function fork()
  context.check_fork("fork")
  context.mark_started()
  local pid = check(core.fork())
  if pid == 0 then
    local cur = state.current
    state.parent = { name = cur.name, pid = core.getppid() }
    state.current = { name = cur.name, pid = getpid(), daemon = false }
    state.children = {}
  end
  return pid
end

local function waitpid(pid, timeout)
  if math_type(pid) ~= "integer" then
    argerror(1, "waitpid", "integer expected, got " .. (pid == nil and "no value"
      or math_type(pid) or util.typename(pid)))
  end
  util.check_timeout(timeout, 2, "waitpid")
  local deadline = sched.deadline(timeout)
  local fd = core.process_fork_sentinel(pid)
  if fd then
    if not sched.wait_fd(fd, "r", deadline) then return nil end
    return check(core.waitpid(pid, true))
  end
  -- not an mp.fork child: poll (raises OSError ECHILD for a stranger)
  local code
  if not sched.wait_until(function()
    code = check(core.waitpid(pid, false))
    return code ~= nil
  end, deadline) then
    return nil
  end
  return code
end

local function cpu_count() return core.cpu_count() end
local function mp_getpid() return getpid() end
local function mp_getppid() return core.getppid() end

M.Process = Process
M.fork = fork
M.waitpid = waitpid
M.child_exit = child_exit
M.reset_sched = reset_sched

-- For the modules that start processes (manager.lua): args[i] for i in
-- `list` are descriptors the child needs; spawn and forkserver pass them
-- along and the child's target gets its own numbers.
function M.pass_fd_args(p, list)
  priv[p].fd_args = list
end

-- This forked process is a pool worker (pool.lua), named like Python's
-- ForkPoolWorker-N.
function M.become_worker(name, parent_pid)
  state.parent = { name = state.current.name, pid = parent_pid or core.getppid() }
  state.current = { name = name, pid = getpid(), daemon = true }
  state.counter, state.children = 0, {}
  reset_sched()
end
M.exports = {
  Process = Process,
  current_process = current_process,
  parent_process = parent_process,
  active_children = active_children,
  cpu_count = cpu_count,
  getpid = mp_getpid,
  getppid = mp_getppid,
  fork = fork,
  waitpid = waitpid,
}
return M

-- Start methods (API.md "Start methods"; docs/start-methods.md):
-- mp.set_start_method, mp.get_start_method, mp.get_context and
-- mp.set_executable, the fork guard against threads, and the parent's
-- side of "spawn" (a fresh interpreter that gets its work through the
-- codec; its own side is lua/mproc/spawn_child.lua).
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local util = require "mproc.util"

local argerror, typename = util.argerror, util.typename

local M = {}

local METHODS = { fork = true, spawn = true, forkserver = true }

local state = {
  method = nil,          -- set by set_start_method; nil: the default
  allow_threads = false, -- fork even when other threads run
  started = false,       -- a process was started (set_start_method is late)
  executable = nil,      -- set_executable's path
}

-- {=====================================================================
-- The method and the fork guard
-- ======================================================================

-- MPROC_START_METHOD: the default for a whole run (CI runs the specs under
-- each method); mp.set_start_method overrides it.
local env_method = os.getenv("MPROC_START_METHOD")
if env_method == "" then env_method = nil end
if env_method and not METHODS[env_method] then
  error(("MPROC_START_METHOD: unknown start method '%s' (one of 'fork', 'spawn', "
    .. "'forkserver')"):format(env_method), 0)
end

function M.method()
  return state.method or env_method or "fork"
end

-- Every process-making feature calls this before it starts one.
function M.mark_started()
  state.started = true
end

local function check_method(m, fname, n)
  if type(m) ~= "string" then
    argerror(n, fname, "string expected, got " .. (m == nil and "no value" or typename(m)), 3)
  end
  if not METHODS[m] then
    local hint = util.near(m, METHODS)
    argerror(n, fname, ("unknown start method '%s' (one of 'fork', 'spawn', "
      .. "'forkserver')%s"):format(m, hint and ("; did you mean '%s'?"):format(hint) or ""), 3)
  end
end

-- Raises unless a fork is safe here: fork copies the calling thread only,
-- and whatever lock another thread held stays locked in the child.
-- `what`: "start a process", "start a pool"...; `level` for error().
function M.check_fork(what, level)
  if state.allow_threads then return end
  local n = core.process_thread_count()
  if n and n > 1 then
    error(("cannot %s with the 'fork' start method: this process runs %d threads "
      .. "and fork copies only the calling one (a lock another thread holds stays "
      .. "locked in the child); use mp.set_start_method(\"spawn\") or "
      .. "mp.get_context(\"spawn\") (or \"forkserver\"), or "
      .. "mp.set_start_method(\"fork\", {allow_threads = true}) if the other threads "
      .. "hold nothing the child needs"):format(what, n), (level or 2) + 1)
  end
end

local SET_OPTS = { force = true, allow_threads = true }

-- mp.set_start_method(method [, opts]): opts {force = true} (Python's
-- force=True; also a plain `true`), {allow_threads = true} (fork only).
local function set_start_method(m, opts)
  check_method(m, "set_start_method", 1)
  local force, allow = false, false
  if type(opts) == "boolean" then
    force = opts
  elseif opts ~= nil then
    if type(opts) ~= "table" then
      argerror(2, "set_start_method", "table expected, got " .. typename(opts))
    end
    util.check_opts(opts, SET_OPTS, "set_start_method", 2)
    force = util.opt_boolean(opts, "force", "set_start_method", 2) or false
    allow = util.opt_boolean(opts, "allow_threads", "set_start_method", 2) or false
  end
  if allow and m ~= "fork" then
    argerror(2, "set_start_method", "'allow_threads' applies to the 'fork' method only")
  end
  if not force then
    if state.started then
      error("the start method must be set before the first process is started "
        .. "(or pass {force = true})", 2)
    end
    if state.method ~= nil then
      error(("the start method has already been set (to '%s'); pass {force = true} "
        .. "to change it"):format(state.method), 2)
    end
  end
  state.method, state.allow_threads = m, allow
end

local function get_start_method()
  return M.method()
end

local function set_executable(path)
  if type(path) ~= "string" or path == "" then
    argerror(1, "set_executable", "non-empty string expected, got "
      .. (path == nil and "no value" or path == "" and "empty string" or typename(path)))
  end
  state.executable = path
end

-- }=====================================================================

-- {=====================================================================
-- Contexts: the whole API, with Process and Pool bound to one method
-- ======================================================================

local contexts = {}

-- Set by process.lua and pool.lua: method -> their bound Process / Pool.
M.bind = {}

local function get_context(m)
  if m == nil then m = M.method() end
  check_method(m, "get_context", 1)
  local ctx = contexts[m]
  if ctx then return ctx end
  local mp = require "mproc"
  ctx = {}
  for k, v in pairs(mp) do ctx[k] = v end
  for k, make in pairs(M.bind) do ctx[k] = make(m) end
  setmetatable(ctx, { __index = mp })   -- mp.cluster, loaded on first use
  ctx.get_start_method = function() return m end
  ctx._start_method = m
  contexts[m] = ctx
  -- a context travels by name, as the mproc table does (a function that
  -- uses it is sent to a process: spawned ones require it back)
  package.loaded["mproc.context." .. m] = ctx
  return ctx
end

for m in pairs(METHODS) do
  package.preload["mproc.context." .. m] = function() return get_context(m) end
end

-- }=====================================================================

-- {=====================================================================
-- spawn: the parent's side
-- ======================================================================

local STDLIB = { _G = true, string = true, table = true, math = true, io = true,
                 os = true, coroutine = true, utf8 = true, debug = true, package = true }

-- Whether a value that travels by name can be rebuilt by a fresh
-- interpreter: its module must be one that `require` finds there.
local searchpath = compat.searchpath
local function namecheck(kind, name, key)
  if kind == "registered" then
    return ("cannot send \"%s\" to a spawned process (it was registered with "
      .. "mp.register in this process only; register it in a module the child "
      .. "requires, or pass it another way)"):format(name)
  end
  if STDLIB[name] or package.preload[name] then return nil end
  if name:match("^mproc") then return nil end
  local base = name:match("^[^.]+")
  for _, p in ipairs { package.path, package.cpath } do
    if searchpath(name, p) or searchpath(base, p) then return nil end
  end
  local what = key and ("\"%s.%s\""):format(name, key) or ("module \"%s\""):format(name)
  return ("cannot send %s to a spawned process (a new interpreter cannot require "
    .. "\"%s\": it is not found in package.path or package.cpath)"):format(what, name)
end
M.namecheck = namecheck

-- The interpreter that spawn starts: mp.set_executable's; else the one
-- running us when it is a standalone interpreter (the `arg` table of
-- lua.c); else lua5.4 (luajit, lua5.1...: this VM's) from PATH (a program
-- that embeds Lua).
function M.executable()
  if state.executable then return state.executable end
  if type(arg) == "table" and arg[-1] ~= nil then
    local exe = core.process_exe_path()
    if exe then return exe end
    local i = -1
    while arg[i - 1] ~= nil do i = i - 1 end
    return arg[i]
  end
  return compat.interpreter
end

-- Per-process state that a forked child inherits with the memory and a
-- spawned one must be sent (the managers' authkeys, as Python sends
-- process.authkey): name -> { get, set }.
local inherited = {}
function M.inherit(name, get, set)
  inherited[name] = { get = get, set = set }
end

-- payload.inherit, filled in the parent; restored in the child.
function M.add_inherited(payload)
  local t = {}
  for name, h in pairs(inherited) do t[name] = h.get() end
  payload.inherit = t
end
function M.restore_inherited(payload)
  for name, v in pairs(payload.inherit or {}) do
    if inherited[name] then inherited[name].set(v) end
  end
end

-- A spawned child starts its own processes with its parent's method (as
-- Python's spawn sends start_method with the preparation data).
M.inherit("start_method",
  function() return { state.method, state.allow_threads, state.executable } end,
  function(v) state.method, state.allow_threads, state.executable = v[1], v[2], v[3] end)

local BOOT = "require('mproc.spawn_child').main()"

-- Encodes v for a spawned process: names it cannot rebuild raise
-- SerializeError naming their path from `root`.
function M.encode(v, root)
  local ok, s, msg = core.codec_dumps(v, root, false, namecheck)
  if ok then return s end
  errors.raise(s, msg)
end

-- Starts a fresh interpreter that runs the payload that build() returns
-- (a table that spawn_child.lua knows; build encodes its parts with
-- M.encode, and the Pipe ends met go along).  `extra`: more descriptors
-- for the child, from descriptor 4 + payload.extra_at on.
-- Returns pid, child (mproc.Child).
-- The payload that build() returns and the descriptors that go with it:
-- the Pipe ends its encodes met, then `extra` (from payload.extra_at on).
function M.build_payload(build, extra)
  core.pipe_collect(true)
  local ok, payload = pcall(build)
  local fds = core.pipe_collect(false)
  if not ok then error(payload, 0) end
  payload.extra_at = #fds + 1
  for i = 1, extra and #extra or 0 do fds[#fds + 1] = extra[i] end
  return payload, fds
end

function M.spawn(build, detached, daemon, extra)
  local payload, fds = M.build_payload(build, extra)
  -- the child joins this tree's segment tracker (its segments are cleaned
  -- up if it is killed; Pipe ends through queues and pools reach it)
  local tfd, tpid = core.tracker_export()
  if tfd then fds[#fds + 1] = tfd end
  payload.nfds = #fds
  local exe = M.executable()
  payload.exe = exe   -- the child's own spawns use the same interpreter
  M.add_inherited(payload)
  local bytes = M.encode(payload, "payload")
  local env = {
    compat.PATH_VAR .. "=" .. package.path,    -- LUA_PATH_5_4 on 5.4
    compat.CPATH_VAR .. "=" .. package.cpath,
    ("MPROC_SPAWN=%d:%d:%d"):format(core.getpid(), detached and 1 or 0,
      core.process_spawn_watch(detached) and 1 or 0),
  }
  if tfd then env[#env + 1] = ("MPROC_TRACKER=%d:%d"):format(4 + #fds, tpid) end
  local pid, child = errors.check(core.process_spawn(exe, { exe, "-e", BOOT }, env, fds,
                                                  detached, daemon))
  state.started = true
  -- a child that died before reading leaves its exit code to tell why
  core.process_boot_send(child, bytes)
  return pid, child
end

-- Starts the payload with `method` ("spawn" or "forkserver"): as M.spawn.
function M.start(method, build, detached, daemon, extra)
  if method == "forkserver" then
    return require("mproc.forkserver").spawn(build, detached, daemon, extra)
  end
  return M.spawn(build, detached, daemon, extra)
end

-- What core.child_* do for our own children, also for the children of the
-- forkserver (tables with methods).
function M.child_poll(c, block)
  if type(c) == "table" then return c:poll(block) end
  return core.child_poll(c, block)
end
function M.child_signal(c, sig)
  if type(c) == "table" then return c:signal(sig) end
  return core.child_signal(c, sig)
end
function M.child_fileno(c)
  if type(c) == "table" then return c:fileno() end
  return core.child_fileno(c)
end
function M.child_close(c)
  if type(c) == "table" then return c:close() end
  return core.child_close(c)
end

-- }=====================================================================

M.state = state
M.exports = {
  set_start_method = set_start_method,
  get_start_method = get_start_method,
  get_context = get_context,
  set_executable = set_executable,
}
return M

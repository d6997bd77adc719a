-- mp.Pool (API.md "Pool"; DESIGN.md invariant 2).
--
-- Workers never wait for the parent.  A task is encoded when it is
-- submitted and pushed into the pool's task ring (src/core/pool.c); an idle
-- worker takes the next one itself and records it in its slot of the
-- ring's claim board in the same journaled change.  Results wait in the
-- result ring until the parent collects them, which it does whenever it
-- looks (any wait, r:ready(), mp.poll()).  When a worker dies, its slot
-- tells which task it held: that task alone fails (WorkerLost, or Timeout
-- when its own alarm ended it), the pool forks a replacement.  A task's
-- timeout is an alarm in the worker (SIGALRM ends it on time whatever the
-- parent does); the parent also kills a worker that overran it.
--
-- map/starmap split their items into batches of whole chunks, large
-- first and single chunks at the end (guided scheduling), so that no
-- worker idles at the end of a job behind a batch held by another;
-- all-number batches travel packed (9-byte records, src/lua/pool.c).
-- imap/imap_unordered read their input a few chunks per worker ahead and
-- push what they read the same way.
--
-- The parts: lua/mproc/pool/worker.lua (the worker side),
-- pool/dispatch.lua (the parent side: submit, collect, replace workers),
-- pool/jobs.lua (map, imap); this file is the API.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local result = require "mproc.result"
local process = require "mproc.process"
local poolargs = require "mproc.poolargs"
local codec = require "mproc.codec"
local context = require "mproc.context"

local getpid = core.getpid
local pack, unpack = compat.pack, compat.unpack
local math_type, tointeger = compat.math_type, compat.tointeger
local argerror, typename = util.argerror, util.typename
local errnew = errors.new
local check_fn, apply_args = poolargs.check_fn, poolargs.apply_args
local map_opts, check_map_opts = poolargs.map_opts, poolargs.check_map_opts



local worker = require "mproc.pool.worker"
local dispatch = require "mproc.pool.dispatch"
local jobs = require "mproc.pool.jobs"

local Pool = dispatch.Pool
local SPIN_MAX = dispatch.SPIN_MAX
local all_boards, live_pools = worker.boards, dispatch.live
local new_id, fn_entry, check_pool, check_running =
  dispatch.new_id, dispatch.fn_entry, dispatch.check_pool, dispatch.check_running
local raise_status, add_task = dispatch.raise_status, dispatch.add_task
local start_workers, remove_worker = dispatch.start_workers, dispatch.remove_worker

-- {=====================================================================
-- Public methods
-- ======================================================================

local function apply_task(self, fn, args, opts)
  local fe = fn_entry(self, fn)
  local tid = new_id()
  local timeout = opts and opts.timeout
  if timeout == math.huge then timeout = nil end
  raise_status(self._board:_apply(tid, fe.id, fe.bytes, args, timeout))
  local r = result.new(self, opts and opts.callback, opts and opts.error_callback)
  r._tid = tid
  add_task(self, tid, { r = r, timeout = timeout })
  return r
end

function Pool:apply_async(fn, args, opts)
  check_running(self, "apply_async")
  check_fn(fn, 1, "apply_async")
  return apply_task(self, fn, apply_args(args, opts), opts)
end

function Pool:submit(fn, ...)
  check_running(self, "submit")
  check_fn(fn, 1, "submit")
  return apply_task(self, fn, pack(...), nil)
end

function Pool:apply(fn, ...)
  check_running(self, "apply")
  check_fn(fn, 1, "apply")
  return apply_task(self, fn, pack(...), nil):get()
end
function Pool:map_async(fn, items, opts)
  return jobs.map_async(self, "map_async", fn, items, check_map_opts(opts, "map_async"), false)
end

function Pool:starmap_async(fn, items, opts)
  return jobs.map_async(self, "starmap_async", fn, items,
                        check_map_opts(opts, "starmap_async"), true)
end

function Pool:map(fn, items, chunksize)
  return jobs.map_async(self, "map", fn, items, map_opts("map", chunksize), false):get()
end

function Pool:starmap(fn, items, chunksize)
  return jobs.map_async(self, "starmap", fn, items, map_opts("starmap", chunksize), true):get()
end

function Pool:imap(fn, items, opts)
  return jobs.imap(self, "imap", fn, items, opts, true)
end

function Pool:imap_unordered(fn, items, opts)
  return jobs.imap(self, "imap_unordered", fn, items, opts, false)
end

function Pool:fileno()
  check_pool(self, "fileno")
  return self._pollfd or self._board:_fileno()
end

function Pool:close()
  check_pool(self, "close")
  if self._state == "RUN" then
    self._state = "CLOSE"
    sched.add_source(self)  -- until the workers are gone
    self:_pump()
  end
end

-- Fails every task left with err.
local function abandon_all(self, err)
  local tasks = self._tasks
  self._tasks, self._ntasks, self._timeouts = {}, 0, 0
  for tid, task in pairs(tasks) do
    local job = task.job
    if job then
      job.live[tid] = nil
      if not job.failed then job:fail(task.first, task.count, err) end
    else
      task.r:_reject(err)
    end
  end
end

local function shut(self)
  live_pools[self] = nil
  sched.remove_source(self)
  if self._poller then self._poller:_close() end
  self._board:_close()
end

function Pool:terminate()
  check_pool(self, "terminate")
  if self._state == "TERMINATE" then return end
  self._state = "TERMINATE"
  for _, w in ipairs(self._workers) do context.child_signal(w.child, core.SIGKILL) end
  sched.remove_source(self)  -- nothing to pump while its workers end
  for _, w in ipairs({ unpack(self._workers) }) do
    sched.wait_fd(w.sentinel, "r", nil)
    context.child_poll(w.child, true)
    remove_worker(self, w)
    context.child_close(w.child)
  end
  abandon_all(self, errnew("Cancelled", "the pool was terminated"))
  shut(self)
  sched.dispatch()
end

-- join: waits for the queued work (after close) or the workers' end.
function Pool:join(timeout)
  check_pool(self, "join")
  util.check_timeout(timeout, 1, "join")
  if self._state == "RUN" then error("pool is still running", 2) end
  local deadline = sched.deadline(timeout)
  if self._state == "CLOSE" then
    -- the pump stops the workers once the work is done
    local ok = sched.wait_event(function()
      self:_pump()
      return #self._workers == 0
    end, deadline)
    if not ok then return false end
    self._state = "TERMINATE"
    shut(self)
  end
  sched.dispatch()
  return true
end

-- <close>: close and join; when the block is left by an error (Ctrl-C
-- included), terminate instead of waiting for the queued work.
function Pool:__close(err)
  if self._pid ~= core.getpid() then return end
  if err ~= nil then return self:terminate() end
  if self._state == "RUN" then self:close() end
  if self._state == "CLOSE" then self:join() end
  self:terminate()
end

function Pool:__gc()
  if self._state ~= "TERMINATE" and self._workers and self._pid == core.getpid() then
    for _, w in ipairs(self._workers) do
      pcall(context.child_signal, w.child, core.SIGTERM)
    end
  end
end

function Pool:__tostring()
  return ("<Pool state=%s processes=%d>"):format(self._state, self._processes)
end

-- }=====================================================================

-- {=====================================================================
-- Constructor
-- ======================================================================

-- mp.register while a pool runs: its workers were forked without the name.
codec.before_register = function(name)
  for p in pairs(live_pools) do
    if p._state ~= "TERMINATE" and p._pid == getpid() then
      error(("mp.register(%q) after a Pool started: its workers cannot learn the name; "
        .. "register before mp.Pool()"):format(name), 4)
    end
  end
end

-- mp.active_children() lists the pools' workers too, as Python does.
process.add_children_source(function(out)
  for p in pairs(live_pools) do
    if p._state ~= "TERMINATE" and p._pid == getpid() then
      for _, w in ipairs(p._workers) do out[#out + 1] = w.info end
    end
  end
end)

local POOL_OPTS = { processes = true, initializer = true, initargs = true,
                    maxtasksperchild = true }

local function positive_int(v, what)
  if v == nil then return nil end
  local i = math_type(v) and tointeger(v)
  if not i then
    argerror(1, "Pool", ("'%s' must be an integer, got %s"):format(what,
      math_type(v) == "float" and "a fraction" or typename(v)), 4)
  end
  if i < 1 then argerror(1, "Pool", ("'%s' must be >= 1"):format(what), 4) end
  return i
end

local function new_pool(opts, method)
  local processes, init, initargs, maxtasks
  if type(opts) == "number" or opts == nil then
    processes = positive_int(opts, "processes")
  elseif type(opts) == "table" then
    util.check_opts(opts, POOL_OPTS, "Pool", 1)
    processes = positive_int(opts.processes, "processes")
    init = opts.initializer
    if init ~= nil and type(init) ~= "function" then
      argerror(1, "Pool", "'initializer' must be a function, got " .. typename(init))
    end
    initargs = opts.initargs
    if initargs ~= nil and type(initargs) ~= "table" then
      argerror(1, "Pool", "'initargs' must be a table, got " .. typename(initargs))
    end
    maxtasks = positive_int(opts.maxtasksperchild, "maxtasksperchild")
  else
    argerror(1, "Pool", "number or table expected, got " .. typename(opts))
  end
  processes = processes or core.cpu_count()
  if processes > 1024 then argerror(1, "Pool", "at most 1024 processes") end
  method = method or context.method()
  if method == "fork" then context.check_fork("start a pool") end
  context.mark_started()
  initargs = initargs or {}
  local free = {}
  for i = 1023, 0, -1 do free[#free + 1] = i end
  local self = setmetatable({
    _processes = processes, _init = init,
    _initargs = { n = initargs.n or #initargs, unpack(initargs, 1, initargs.n or #initargs) },
    _maxtasks = maxtasks, _state = "RUN", _workers = {}, _free = free,
    _tasks = {}, _ntasks = 0, _timeouts = 0, _spin = SPIN_MAX,
    _fns = setmetatable({}, { __mode = "k" }), _ncached = 0, _pid = core.getpid(),
    _method = method,
  }, Pool)
  compat.gc(self)  -- Lua 5.1/LuaJIT: Pool.__gc
  self._board = errors.check(core.pool_board())
  all_boards[self._board] = true
  live_pools[self] = true
  local ok, p = core.poll_new()
  if ok then
    self._poller = p
    self._pollfd = p:_fileno()
    if self._pollfd then p:_ctl("add", self._board:_fileno(), "r")
    else self._poller, self._pollfd = nil, nil end
  end
  local ok2, err = pcall(start_workers, self, processes)
  if not ok2 then  -- the workers that did start must not outlive this call
    self:terminate()
    error(err, 0)
  end
  return self
end

-- }=====================================================================

-- A context's Pool (mp.get_context(m).Pool): its workers start with method m.
context.bind.Pool = function(m)
  return function(opts) return new_pool(opts, m) end
end

return { Pool = Pool, spawned_worker = worker.spawned,
         exports = { Pool = function(opts) return new_pool(opts) end } }


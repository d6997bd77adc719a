-- mp.Pool (lua/mproc/pool.lua): the parent side.  Tasks go into the task
-- ring as they are submitted; answers are collected whenever the parent
-- looks (the Pool is a source of sched, pumped from every wait); dead
-- workers are replaced and their tasks failed from their claim slots.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local poolargs = require "mproc.poolargs"
local context = require "mproc.context"

local dumps, now, poll_fd, getpid = core.codec_dumps, core.now, core.poll_fd, core.getpid
local pack, unpack, idiv = compat.pack, compat.unpack, compat.idiv
local argerror, typename = util.argerror, util.typename
local errnew = errors.new
local make_task_error = poolargs.make_task_error
local max, min = math.max, math.min

local SPIN_MAX = 100e-6    -- longest busy wait for a result before blocking
local GUIDE = 2            -- a batch holds 1/(GUIDE * workers) of the chunks left
local TIMEOUT_GRACE = 0.5  -- the parent kills a worker this late past a task's timeout
local SIGALRM = 14

local worker = require "mproc.pool.worker"

local M = {}
-- Pools of this process whose workers run.
M.live = setmetatable({}, { __mode = "k" })
local worker_main = worker.main

-- {=====================================================================
-- The parent side
-- ======================================================================

local Pool = {}
Pool.__index = Pool
Pool.__name = "mproc.Pool"

local next_id = 0
local function new_id()
  next_id = next_id + 1
  return next_id
end

local worker_count = 0  -- ForkPoolWorker-N numbering, as in Python

-- What mp.active_children() shows of a worker: pid, name, daemon, sentinel.
local WorkerInfo = { __name = "mproc.PoolWorker" }
WorkerInfo.__index = WorkerInfo
function WorkerInfo:is_alive()
  return self.sentinel ~= nil and not core.poll_fd(self.sentinel, "r", 0)
end
function WorkerInfo:__tostring()
  return ("<PoolWorker name=%s pid=%d>"):format(self.name, self.pid)
end

local function lost_error(w)
  local code = w.exitcode
  return errnew("WorkerLost", ("worker process %d died (exitcode %s) while running the task")
    :format(w.pid, tostring(code)), { exitcode = code, pid = w.pid })
end

local function timeout_error(task)
  return errnew("Timeout", ("task timed out after %g s; its worker was killed")
    :format(task.timeout), { where = "task" })
end

-- An "err" answer {value, traceback, kind} as an error object.
local function answer_error(v)
  if v[3] == "SerializeError" then return errnew("SerializeError", tostring(v[1])) end
  return make_task_error(v[1], v[2])
end

local function poller_set(self, fd, op)
  if self._poller then self._poller:_ctl(op, fd, "r") end
end

-- Starts n workers: the forks back to back (the parent's own work between
-- two forks, its copy-on-write faults included, delays the next one), then
-- the bookkeeping.  A failed fork raises once the workers forked before it
-- are registered.
-- A worker under the spawn (or forkserver) method: a fresh interpreter (or
-- a fork of the forkserver) that attaches to the board by name
-- (spawned_worker below).  Returns pid, child.
local function spawn_worker(self, slot, name)
  local tasks, results, wfd = self._board:_names()
  local enc = context.encode
  return context.start(self._method, function()
    return { kind = "pool_worker", tasks = tasks, results = results, slot = slot,
             name = name, init = enc(self._init, "initializer"),
             initargs = enc(self._initargs, "initargs"), maxtasks = self._maxtasks,
             parent_pid = getpid() }
  end, false, true, { wfd })
end

local function start_workers(self, n)
  local spawned = self._method ~= "fork"
  if not spawned then context.check_fork("start a pool worker", 2) end
  local forked, failed, raised = {}, nil, nil
  local free = self._free
  for _ = 1, n do
    local slot = free[#free]
    if not slot then
      failed = pack(false, "OSError", "a pool has at most 1024 worker slots")
      break
    end
    worker_count = worker_count + 1
    local name = (self._method == "spawn" and "SpawnPoolWorker-"
      or self._method == "forkserver" and "ForkServerPoolWorker-" or "ForkPoolWorker-")
      .. worker_count
    local r
    if spawned then
      r = pack(pcall(spawn_worker, self, slot, name))
      if not r[1] then raised = r[2] break end
    else
      r = pack(core.process_fork(false, true))
    end
    if not r[1] then failed = r break end
    if r[2] == 0 then
      worker_main(self._board, slot, name, self._init, self._initargs, self._maxtasks)
    end
    free[#free] = nil
    local w = { pid = r[2], child = r[3], sentinel = context.child_fileno(r[3]), slot = slot }
    w.info = setmetatable({ pid = w.pid, name = name, daemon = true, sentinel = w.sentinel },
                          WorkerInfo)
    forked[#forked + 1] = w
  end
  local ws = self._workers
  for i = 1, #forked do
    local w = forked[i]
    poller_set(self, w.sentinel, "add")
    ws[#ws + 1] = w
  end
  if raised ~= nil then error(raised, 0) end
  if failed then errors.check(unpack(failed, 1, failed.n)) end
end

-- {------ tasks ------
--
-- self._tasks[tid]: what the parent waits for.  An apply task:
-- {r = AsyncResult, timeout}; a batch: {job, first, count}.

local function add_task(self, tid, task)
  self._tasks[tid] = task
  self._ntasks = self._ntasks + 1
  if task.timeout then self._timeouts = self._timeouts + 1 end
  sched.add_source(self)
end

local function drop_task(self, tid, task)
  self._tasks[tid] = nil
  self._ntasks = self._ntasks - 1
  if task.timeout then self._timeouts = self._timeouts - 1 end
end

local function raise_status(ok, kind, msg)
  if not ok then errors.raise(kind, msg) end
end

-- Pushes items first..first+count-1 of a job as one batch.
local function push_batch(self, job, first, count)
  local tid = new_id()
  local ok, kind, msg = self._board:_batch(tid, job.star, job.id, job.fnbytes, job.cs,
                                           job.items, first, count)
  if not ok then
    -- an item that cannot travel fails its own chunk; the rest still runs
    if kind ~= "SerializeError" or count <= job.cs then
      return job:fail(first, count, errnew(kind, msg))
    end
    local cs = job.cs
    for at = first, first + count - 1, cs do
      push_batch(self, job, at, min(cs, first + count - at))
    end
    return
  end
  job.live[tid] = true
  add_task(self, tid, { job = job, first = first, count = count })
end

-- Splits items first..first+count-1 into batches of whole chunks, each
-- 1/(GUIDE * workers) of the chunks left (at least one).
local function push_job(self, job, first, count)
  local cs, w = job.cs, self._processes * GUIDE
  local last = first + count - 1
  while first <= last do
    local chunks = idiv(last - first + cs, cs)
    local n = min(max(1, idiv(chunks, w)) * cs, last - first + 1)
    push_batch(self, job, first, n)
    first = first + n
  end
end

local function settle_apply(self, tid, task, ok, v)
  drop_task(self, tid, task)
  if ok then task.r:_resolve(v) else task.r:_reject(v) end
end

-- One answer from the result ring.
local function on_answer(self, tid, kind, v)
  local board = self._board
  local task = self._tasks[tid]
  if not task then
    if kind == "packed" then board:_take(v) end  -- cancelled or failed already
    return
  end
  local job = task.job
  if job then
    drop_task(self, tid, task)
    job.live[tid] = nil
    if kind == "packed" then job:deliver(task.first, task.count, nil, nil, v)
    elseif kind == "batch" then job:deliver(task.first, task.count, v[1], v[2])
    elseif kind == "err" then job:fail(task.first, task.count, answer_error(v))
    else job:fail(task.first, task.count, errnew("SerializeError", tostring(v))) end
  elseif kind == "ok" then
    settle_apply(self, tid, task, true, v)
  elseif kind == "err" then
    settle_apply(self, tid, task, false, answer_error(v))
  else
    settle_apply(self, tid, task, false, errnew("SerializeError", tostring(v)))
  end
end

local function collect(self)
  local board = self._board
  while true do
    local tid, kind, v = board:_get()
    if tid == nil then return end
    on_answer(self, tid, kind, v)
  end
end

-- }------

local function remove_worker(self, w)
  local ws = self._workers
  for i = 1, #ws do if ws[i] == w then table.remove(ws, i) break end end
  w.info.sentinel = nil
  poller_set(self, w.sentinel, "del")
  w.dead = true
end

-- A worker ended: its claim says which task it held.  That task fails
-- (for a batch, the chunk it was at; the rest of the batch runs again).
local function worker_ended(self, w)
  local board = self._board
  collect(self)  -- what it posted before dying counts
  local ok, code = context.child_poll(w.child, true)
  w.exitcode = ok and code or nil
  remove_worker(self, w)
  context.child_close(w.child)
  local tid, _, at = board:_claim(w.slot)
  board:_clear(w.slot)
  self._free[#self._free + 1] = w.slot
  local task = tid ~= 0 and self._tasks[tid]
  if task then
    local err = task.timeout and (task.timed_out or w.exitcode == -SIGALRM)
      and timeout_error(task) or lost_error(w)
    local job = task.job
    if job then
      drop_task(self, tid, task)
      job.live[tid] = nil
      local cs, first, count = job.cs, task.first, task.count
      at = (at >= 1 and at <= count) and at or 1
      local start = idiv(at - 1, cs) * cs + 1
      local len = min(cs, count - start + 1)
      job:fail(first + start - 1, len, err)
      if not job.failed and self._state ~= "TERMINATE" then
        if start > 1 then push_job(self, job, first, start - 1) end
        if start + len <= count then
          push_job(self, job, first + start + len - 1, count - start - len + 1)
        end
      end
    else
      settle_apply(self, tid, task, false, err)
    end
  end
  if self._state ~= "TERMINATE" and (self._ntasks > 0 or self._state == "RUN") then
    start_workers(self, 1)
  end
end

-- The parent's own check of timeouts: the worker's alarm should have
-- ended it already.
local function check_timeouts(self)
  local t = now()
  local board, tasks = self._board, self._tasks
  for _, w in ipairs(self._workers) do
    local tid, start = board:_claim(w.slot)
    local task = tid ~= 0 and tasks[tid]
    if task and task.timeout and not task.timed_out
       and t >= start + task.timeout + TIMEOUT_GRACE then
      task.timed_out = true
      context.child_signal(w.child, core.SIGKILL)
    end
  end
end

local ready_set = {}
local function pump_body(self)
  collect(self)
  local ws = self._workers
  local n = self._poller and self._poller:_ready(ready_set) or -1
  if n ~= 0 then
    local i = 1
    while i <= #ws do
      local w = ws[i]
      if (n < 0 or ready_set[w.sentinel]) and poll_fd(w.sentinel, "r", 0) then
        worker_ended(self, w)
      else
        i = i + 1
      end
    end
    if n > 0 then for k in pairs(ready_set) do ready_set[k] = nil end end
  end
  if self._board:_flush() > 0 then self._overflow = true else self._overflow = false end
  if self._timeouts > 0 then check_timeouts(self) end
  if self._ntasks == 0 then
    if self._state == "CLOSE" then
      if not self._stopped then
        self._stopped = true
        self._board:_stop(#ws)
      end
    elseif self._state == "RUN" then
      sched.remove_source(self)
    end
  end
end

function Pool:_pump()
  if self._pumping or self._state == "TERMINATE" then return end
  if self._pid ~= getpid() then  -- inherited by an mp.fork child: not ours
    return sched.remove_source(self)
  end
  self._pumping = true
  local ok, err = pcall(pump_body, self)
  self._pumping = false
  if not ok then error(err, 0) end
end

-- r:ready() and friends: what has finished is known without waiting.
function Pool:_poll()
  if self._state ~= "TERMINATE" and self._pid == getpid() then self:_pump() end
end

function Pool:_wait_fds(fds, modes, n)
  if self._pid ~= getpid() or self._state == "TERMINATE" then return n end
  local pfd = self._pollfd
  if pfd then
    n = n + 1
    fds[n], modes[n] = pfd, "r"
  else
    n = n + 1
    fds[n], modes[n] = self._board:_fileno(), "r"
    for _, w in ipairs(self._workers) do
      n = n + 1
      fds[n], modes[n] = w.sentinel, "r"
    end
  end
  return n
end

function Pool:_timer()
  local dl
  if self._overflow then dl = now() + 0.01 end  -- the task ring was full
  if self._timeouts == 0 then return dl end
  local board, tasks = self._board, self._tasks
  for _, w in ipairs(self._workers) do
    local tid, start = board:_claim(w.slot)
    local task = tid ~= 0 and tasks[tid]
    if task and task.timeout and not task.timed_out then
      local d = start + task.timeout + TIMEOUT_GRACE
      if not dl or d < dl then dl = d end
    end
  end
  -- a task not taken yet: look again now and then
  return dl or now() + 0.1
end

-- Waits for one result; spins briefly first (a blocking wake-up costs more
-- than a short task's whole round trip).
function Pool:_await(r, deadline)
  local pred = function() return r._done end
  local spin = function()
    local budget = self._spin
    if budget <= 0 then
      self._spin = 5e-6
      return false
    end
    if self._board:_spin(budget) then
      self._spin = min(budget * 2, SPIN_MAX)
      self:_pump()
      return true
    end
    self._spin = budget / 2 < 2e-6 and 0 or budget / 2
    return false
  end
  return sched.wait_event(pred, deadline, spin)
end

function Pool:_cancel(r)
  local tid = r._tid
  local task = tid and self._tasks[tid]
  if not task or not self._board:_cancel(tid) then return false end
  drop_task(self, tid, task)
  return true
end

-- }=====================================================================

-- {=====================================================================
-- Checks and encoding, for the public methods
-- ======================================================================

local function check_pool(self, fname)
  if getmetatable(self) ~= Pool then
    argerror(1, fname, "Pool expected, got " .. typename(self), 3)
  end
  if self._pid ~= core.getpid() then
    error("a pool can only be used by the process that created it", 3)
  end
end

local function check_running(self, fname)
  check_pool(self, fname)
  if self._state ~= "RUN" then error("pool is not running", 3) end
end

local function encode(v, root)
  local ok, s, msg = dumps(v, root)
  if ok then return s end
  errors.raise(s, msg)
end

-- A Lua function whose only upvalue is _ENV cannot change between calls:
-- a worker decodes it once and keeps it under its id.  Up to MAX_CACHED
-- per pool; other functions are decoded with each task.
local MAX_CACHED = 256
local getupvalue, getinfo = debug.getupvalue, debug.getinfo

local function fn_entry(self, fn)
  local fe = self._fns[fn]
  if fe then return fe end
  local plain = type(fn) == "function" and self._ncached < MAX_CACHED
    and getinfo(fn, "S").what ~= "C"
  local i = 1
  while plain do
    local name = getupvalue(fn, i)
    if name == nil then break end
    if name ~= "_ENV" then plain = false end
    i = i + 1
  end
  fe = { id = 0, bytes = encode(fn, "fn") }
  if plain then
    fe.id = new_id()
    self._ncached = self._ncached + 1
    self._fns[fn] = fe
  end
  return fe
end

-- }=====================================================================

M.Pool, M.new_id, M.check_pool, M.check_running = Pool, new_id, check_pool, check_running
M.encode, M.fn_entry, M.SPIN_MAX = encode, fn_entry, SPIN_MAX
M.raise_status, M.add_task, M.drop_task, M.push_job = raise_status, add_task, drop_task, push_job
M.start_workers, M.remove_worker = start_workers, remove_worker

return M

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
local core = require "mproc.core"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local result = require "mproc.result"
local process = require "mproc.process"
local poolargs = require "mproc.poolargs"
local codec = require "mproc.codec"
local context = require "mproc.context"

local dumps, now, poll_fd, getpid = core.dumps, core.now, core.poll_fd, core.getpid
local new_list, alarm = core.new_list, core.alarm
local packed_acc, acc_pos, acc_result = core.packed_acc, core.acc_pos, core.acc_result
local pack, unpack, tmove = table.pack, table.unpack, table.move
local argerror, typename = util.argerror, util.typename
local errnew = errors.new
local make_task_error, check_fn = poolargs.make_task_error, poolargs.check_fn
local check_chunksize, collect_items = poolargs.check_chunksize, poolargs.collect_items
local map_opts, check_map_opts = poolargs.map_opts, poolargs.check_map_opts
local max, min = math.max, math.min

local SPIN_MAX = 100e-6    -- longest busy wait for a result before blocking
local SLICE = sched.SLICE  -- a worker's wait for a task before it re-checks its parent
local GUIDE = 2            -- a batch holds 1/(GUIDE * workers) of the chunks left
local AHEAD = 8            -- imap: chunks read ahead per worker
local TIMEOUT_GRACE = 0.5  -- the parent kills a worker this late past a task's timeout
local FN_CACHE_SPAN = 512  -- a worker forgets its cached functions this often
local SIGALRM = 14

-- Every board of this process: a new worker closes the ones it inherited.
local all_boards = setmetatable({}, { __mode = "k" })
-- Pools of this process whose workers run.
local live_pools = setmetatable({}, { __mode = "k" })

-- {=====================================================================
-- The worker side
-- ======================================================================

local error_text, traceback, catch = errors.error_text, errors.traceback, errors.catch

local function post_error(board, tid, box, kind)
  local ok = board:_post(tid, "err", { box[1], box[2], kind or "TaskError" })
  if not ok then board:_post(tid, "err", { error_text(box[1]), box[2], kind or "TaskError" }) end
end

local function post_values(board, tid, vals)
  local ok, _, emsg = board:_post(tid, "ok", vals)
  if not ok then
    board:_post(tid, "err", { "cannot send the task's result: " .. emsg, nil, "SerializeError" })
  end
end

local function run_apply(board, tid, fn, args)
  local r = pack(xpcall(fn, catch, unpack(args, 1, args.n)))
  if r[1] then post_values(board, tid, tmove(r, 2, r.n, 1, { n = r.n - 1 }))
  else post_error(board, tid, r[2]) end
end

-- A batch: items[1..n] in chunks of cs.  One xpcall covers the whole
-- batch; after an error it goes on from the next chunk.  The answer holds
-- every value and, for the chunks that failed, {start, error value,
-- traceback}.  The claim's progress word follows the chunks, so that the
-- parent knows which one a dead worker was running.
local pos  -- the item being run (read after an error)
local function run_range(board, fn, star, items, from, n, cs)
  for k = from, n do
    pos = k
    if (k - 1) % cs == 0 then board:_progress(k) end
    if star then
      local a = items[k]
      items[k] = fn(unpack(a, 1, a.n or #a))
    else
      items[k] = fn(items[k])
    end
  end
end

local function post_batch(board, tid, out, errs)
  local ok = board:_post(tid, "batch", { out, errs })
  if not ok and errs then
    for i = 1, #errs do errs[i][2] = error_text(errs[i][2]) end
    ok = board:_post(tid, "batch", { out, errs })
  end
  if not ok then
    local _, _, emsg = board:_post(tid, "batch", { out })
    board:_post(tid, "err", { "cannot send the task's result: " .. tostring(emsg), nil,
                              "SerializeError" })
  end
end

local function run_batch(board, tid, fn, star, items, cs)
  local n = items.n
  local errs, from = nil, 1
  while from <= n do
    local ok, box = xpcall(run_range, catch, board, fn, star, items, from, n, cs)
    if ok then break end
    local start = (pos - 1) // cs * cs + 1
    for k = start, min(start + cs - 1, n) do items[k] = nil end
    errs = errs or {}
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  post_batch(board, tid, items, errs)
  return (n + cs - 1) // cs
end

-- A batch of packed numbers, still in the board's buffer: the calls run in
-- a C loop that writes packed results into an accumulator kept from batch
-- to batch (src/lua/pool.c); same answer as above.
local acc
local function run_packed(board, tid, fn, n, cs)
  acc = packed_acc(n, acc)
  local from, errs = 1, nil
  while from <= n do
    local ok, box = xpcall(board._run_pending, catch, board, fn, acc, from)
    if ok then break end
    local at = acc_pos(acc)
    errs = errs or {}
    if at < from then  -- failed before any call: every chunk left fails
      for start = from, n, cs do errs[#errs + 1] = { start, box[1], box[2] } end
      break
    end
    local start = (at - 1) // cs * cs + 1
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  if errs or not board:_post_numbers(tid, acc) then
    local out = acc_result(acc)
    if errs then
      for i = 1, #errs do
        for k = errs[i][1], min(errs[i][1] + cs - 1, n) do out[k] = nil end
      end
    end
    post_batch(board, tid, out, errs)
  end
  return (n + cs - 1) // cs
end

-- Runs in the worker and never returns: every path ends in core.exit.
local function worker_main(board, slot, name, init, initargs, maxtasks, parent_pid)
  local ppid = core.getppid()
  pcall(function()
    for b in pairs(all_boards) do if b ~= board then b:_close() end end
    process.become_worker(name, parent_pid)
    os.exit = function(code)  -- luacheck: ignore 122 (our exit path, never the host's)
      core.exit(code == nil and 0 or code)
    end
  end)
  local code = 0
  local ok, err = xpcall(function()
    board:_worker(slot)
    if init then init(unpack(initargs, 1, initargs.n)) end
    local cache, taken, done = {}, 0, 0
    -- one slice of waiting for a task; "orphan" when the pool's process is gone
    local function take(slice)
      local op, tid, fn, payload, cs, timeout = board:_next(slice, cache)
      if op ~= nil then return op, tid, fn, payload, cs, timeout end
      if core.getppid() ~= ppid then return "orphan" end
    end
    while true do
      local op, tid, fn, payload, cs, timeout = take(SLICE)
      if op == nil then op, tid, fn, payload, cs, timeout = sched.wait_shared(take, nil) end
      if op == "orphan" or op == "stop" then
        break
      elseif op == "error" then
        board:_post(tid, "err", { "cannot receive the task: " .. tostring(fn), nil,
                                  "SerializeError" })
        done = done + 1
      elseif op ~= "none" then
        if timeout > 0 then alarm(timeout) end
        if op == "apply" then
          run_apply(board, tid, fn, payload)
          done = done + 1
        elseif op == "packed" then
          done = done + run_packed(board, tid, fn, payload, cs)
        else
          done = done + run_batch(board, tid, fn, op == "star", payload, cs)
        end
        if timeout > 0 then alarm(0) end
      end
      taken = taken + 1
      if taken % FN_CACHE_SPAN == 0 then cache = {} end
      if maxtasks and done >= maxtasks then break end
    end
  end, traceback)
  if not ok then
    pcall(function() io.stderr:write("Pool worker:\n", tostring(err), "\n") end)
    code = 1
  end
  core.exit(code)
end

-- }=====================================================================

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
      r = pack(core.proc_fork(false, true))
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
    local chunks = (last - first + cs) // cs
    local n = min(max(1, chunks // w) * cs, last - first + 1)
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
      local start = (at - 1) // cs * cs + 1
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
-- Public methods
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

local APPLY_OPTS = { callback = true, error_callback = true, timeout = true }

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
  if args ~= nil and type(args) ~= "table" then
    argerror(2, "apply_async", "table expected, got " .. typename(args))
  end
  if opts ~= nil then
    util.check_opts(opts, APPLY_OPTS, "apply_async", 3)
    for _, k in ipairs { "callback", "error_callback" } do
      if opts[k] ~= nil and type(opts[k]) ~= "function" then
        argerror(3, "apply_async", ("'%s' must be a function, got %s"):format(k, typename(opts[k])))
      end
    end
    util.check_timeout(opts.timeout, 3, "apply_async")
  end
  args = args or {}
  args = { n = args.n or #args, unpack(args, 1, args.n or #args) }
  return apply_task(self, fn, args, opts)
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

-- {------ jobs: map, starmap, imap ------
--
-- A job is one function over many items, in chunks of `cs` items, pushed
-- as batches (push_job).  job.live holds the ids of its batches not
-- answered yet.

local Job = {}
Job.__index = Job

local function new_job(self, fn, star, cs)
  return setmetatable({ id = new_id(), pool = self, cs = cs, star = star, items = {},
                        fnbytes = encode(fn, "fn"), live = {} }, Job)
end

-- Stops the job: its batches not taken yet are cancelled.
function Job:stop()
  self.failed = true
  local pool = self.pool
  for tid in pairs(self.live) do
    local task = pool._tasks[tid]
    if task and pool._board:_cancel(tid) then drop_task(pool, tid, task) end
  end
  self.live = {}
end

local function release(job, first, count)
  if job.own then
    local items = job.items
    for i = first, first + count - 1 do items[i] = nil end
  end
end

-- Values of items first..first+count-1 (vals[1..count]); errs lists the
-- chunks that failed as {start (1-based in the batch), value, traceback}.
-- `packed`: a count of packed numbers waiting in the board; a map unpacks
-- them straight into its result list (job.out), others get a table.
function Job:deliver(first, count, vals, errs, packed)
  release(self, first, count)
  if packed then
    local board = self.pool._board
    if self.out then
      board:_take(count, self.out, first)
      vals = nil
    else
      vals = board:_take(count)
    end
  end
  self.on_values(first, count, vals, errs)
end

function Job:fail(first, count, err)
  release(self, first, count)
  self.on_fail(first, count, err)
end

local function default_chunksize(self, n)
  local w = self._processes * 4
  local cs, extra = n // w, n % w
  if extra > 0 then cs = cs + 1 end
  return max(cs, 1)
end

local function map_async(self, fname, fn, items, opts, star)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local list, n = collect_items(items, fname)
  opts = opts or {}
  local cs = check_chunksize(opts.chunksize, 3, fname) or default_chunksize(self, n)
  local r = result.new(self, opts.callback, opts.error_callback)
  r._map = true
  local out
  local left = n
  local job = new_job(self, fn, star, cs)
  job.items = list
  job.on_values = function(first, count, vals, errs)
    if r._done then return end
    if errs then
      job:stop()
      return r:_reject(make_task_error(errs[1][2], errs[1][3]))
    end
    if vals then tmove(vals, 1, count, first, out) end  -- nil: unpacked into out
    left = left - count
    if left == 0 then r:_resolve({ out, n = 1 }) end
  end
  job.on_fail = function(_, _, err)
    if r._done then return end
    job:stop()
    r:_reject(err)
  end
  if n == 0 then
    r:_resolve({ new_list(0), n = 1 })
  else
    out = new_list(n)
    job.out = out
    push_job(self, job, 1, n)
  end
  return r
end

function Pool:map_async(fn, items, opts)
  return map_async(self, "map_async", fn, items, check_map_opts(opts, "map_async"), false)
end

function Pool:starmap_async(fn, items, opts)
  return map_async(self, "starmap_async", fn, items, check_map_opts(opts, "starmap_async"), true)
end

function Pool:map(fn, items, chunksize)
  return map_async(self, "map", fn, items, map_opts("map", chunksize), false):get()
end

function Pool:starmap(fn, items, chunksize)
  return map_async(self, "starmap", fn, items, map_opts("starmap", chunksize), true):get()
end

-- imap / imap_unordered: items are read lazily, at most AHEAD chunks per
-- worker beyond what the loop has consumed.  An error raised by the input
-- iterator comes after the items read before it.  With errors = "return"
-- a failed item yields i, nil, err and the loop goes on.
local function imap(self, fname, fn, items, opts, ordered)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local nextitem, cs, ret_errors = poolargs.imap_args(fname, items, opts)
  local job = new_job(self, fn, false, cs)
  job.own = true
  local ahead = self._processes * cs * AHEAD
  local fed, consumed, exhausted = 0, 0, false
  local src_err  -- the input iterator raised: after the items read before
  local vals, has, errs = {}, {}, {}   -- ordered: by input index
  local fifo, fh, ft = {}, 1, 0        -- unordered: indices as they complete
  local want, failed = 1, nil
  local function put(idx, v, err)
    if ordered then
      has[idx], vals[idx], errs[idx] = true, v, err
    else
      ft = ft + 1
      fifo[ft] = idx
      vals[idx], errs[idx] = v, err
    end
  end
  job.on_values = function(first, count, vs, es)
    local bad
    if es then
      bad = {}
      for i = 1, #es do bad[es[i][1]] = es[i] end
    end
    local rel = 1
    while rel <= count do
      local e = bad and bad[rel]
      local clen = min(cs, count - rel + 1)
      if e then
        local err = make_task_error(e[2], e[3])
        for k = rel, rel + clen - 1 do put(first + k - 1, nil, err) end
      else
        for k = rel, rel + clen - 1 do put(first + k - 1, vs[k]) end
      end
      rel = rel + clen
    end
  end
  job.on_fail = function(first, count, err)
    for k = first, first + count - 1 do put(k, nil, err) end
  end
  local function feed()
    local from = fed + 1
    while not exhausted and fed - consumed < ahead do
      local ok, more, v = pcall(nextitem)
      if not ok then
        exhausted, src_err = true, more
        break
      end
      if not more then exhausted = true break end
      fed = fed + 1
      job.items[fed] = v
    end
    if fed >= from then push_job(self, job, from, fed - from + 1) end
  end
  local function have()
    if ordered then return has[want] ~= nil end
    return fh <= ft
  end
  feed()
  return function()
    if failed then error(failed, 0) end
    while not have() do
      if exhausted and consumed >= fed then
        job:stop()
        if src_err ~= nil then
          failed, src_err = src_err, nil
          error(failed, 0)
        end
        return nil
      end
      sched.wait_event(have, nil)
    end
    local idx
    if ordered then
      idx = want
      want = want + 1
      has[idx] = nil
    else
      idx = fifo[fh]
      fifo[fh] = nil
      fh = fh + 1
    end
    local v, err = vals[idx], errs[idx]
    vals[idx], errs[idx] = nil, nil
    consumed = consumed + 1
    if not exhausted and fed - consumed <= ahead // 2 then feed() end
    if err then
      if ret_errors then return idx, nil, err end
      failed = err
      job:stop()
      error(err, 0)
    end
    return idx, v
  end
end

function Pool:imap(fn, items, opts)
  return imap(self, "imap", fn, items, opts, true)
end

function Pool:imap_unordered(fn, items, opts)
  return imap(self, "imap_unordered", fn, items, opts, false)
end

-- }------

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
  local i = math.type(v) and math.tointeger(v)
  if not i then
    argerror(1, "Pool", ("'%s' must be an integer, got %s"):format(what,
      math.type(v) == "float" and "a fraction" or typename(v)), 4)
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
  self._board = errors.check(core.pool_board())
  all_boards[self._board] = true
  live_pools[self] = true
  local ok, p = core.pool_poller()
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

-- The child side of spawn_worker (spawn_child.lua); never returns.
local function spawned_worker(p)
  local ok, board, init, initargs = pcall(function()
    return errors.check(core.pool_board_attach(p.tasks, p.results, p.fds[p.extra_at])),
      codec.decode(p.init, false, true), codec.decode(p.initargs, false, true)
  end)
  if not ok then
    io.stderr:write("Pool worker ", tostring(p.name), ":\n", tostring(board), "\n")
    core.exit(1)
  end
  worker_main(board, p.slot, p.name, init, initargs, p.maxtasks, p.parent_pid)
end

-- A context's Pool (mp.get_context(m).Pool): its workers start with method m.
context.bind.Pool = function(m)
  return function(opts) return new_pool(opts, m) end
end

return { Pool = Pool, spawned_worker = spawned_worker,
         exports = { Pool = function(opts) return new_pool(opts) end } }

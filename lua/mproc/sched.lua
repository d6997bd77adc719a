-- The one waiting point (DESIGN.md invariant 1) and the coroutine scheduler.
--
-- Every blocking call of the Lua layer waits here: for a descriptor
-- (wait_fd), a deadline (sleep), a condition that other parts of mproc make
-- true (wait_event: pool results, coroutine tasks), or a shared-memory
-- object that has no descriptor (wait_shared: locks, events, queues, the
-- pool worker's task ring), with one slice policy (SLICE).
--
-- Outside mp.run these block the process (in the C core).  Inside mp.run a
-- call made by one of its tasks yields that task's coroutine only; the
-- scheduler loop then waits for every task at once (one poll over all their
-- descriptors and the descriptors of busy pools, with the nearest deadline).
--
-- "Sources" (busy pools) are pumped from every wait, so results arrive and
-- callbacks become due whatever the program is waiting for.  Callbacks run
-- from `dispatch`, one at a time, never re-entered, never from a signal
-- handler.
local core = require "mproc.core"

local compat = require "mproc.compat"
local errors = require "mproc.errors"
local interruptible = errors.interruptible
local now = core.now
-- the blocking calls: a SIGINT during them raises Interrupted
local poll_fd, csleep = interruptible(core.poll_fd), interruptible(core.sleep)
local poll_many = interruptible(core.poll_many)
local huge, min = math.huge, math.min
-- compat.running: a protected call's helper coroutine (Lua 5.1) counts as its task
local running, yield, resume = compat.running, coroutine.yield, coroutine.resume
local create, status, coclose = coroutine.create, coroutine.status, compat.coclose
local pack, unpack, ppcall = compat.pack, compat.unpack, compat.pcall

local M = { hooks = {}, dispatchers = {} }

-- The one slice policy: a wait on shared memory blocks in C for at most
-- SLICE seconds, then comes back to Lua (so SIGINT gets through) and waits
-- again; a probe that cannot block in C is retried after a nap that grows
-- from NAP_MIN to NAP_MAX (inside mp.run every probe is such a one).
M.SLICE = 0.05
local SLICE, NAP_MIN, NAP_MAX = M.SLICE, 0.0005, 0.02

-- {=====================================================================
-- Deadlines
-- ======================================================================

-- Absolute deadline for a timeout in seconds (nil: forever).
function M.deadline(timeout)
  if timeout == nil or timeout == huge then return nil end
  return now() + timeout
end

-- Seconds left until `deadline` (nil: forever), never negative.
function M.remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

local function earlier(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return a < b and a or b
end

M.now = now

-- }=====================================================================

-- {=====================================================================
-- Callbacks
-- ======================================================================

local queue, qhead, qtail = {}, 1, 0
local dispatching = false

-- Queues fn(arg) to run at the next dispatch point.
function M.post(fn, arg)
  qtail = qtail + 1
  queue[qtail] = { fn, arg }
end

local function run_queue()
  while qhead <= qtail do
    local item = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
    item[1](item[2])  -- an error leaves the rest queued for the next call
  end
  qhead, qtail = 1, 0
end

-- Runs the queued callbacks in order, and the dispatchers other modules
-- registered.  Never re-entered: inside a callback it returns at once.
function M.dispatch()
  if dispatching then return end
  dispatching = true
  local ok, err = ppcall(function()
    run_queue()
    local d = M.dispatchers
    for i = 1, #d do d[i]() end
  end)
  dispatching = false
  if not ok then error(err, 0) end
end

function M.pending_callbacks()
  return qtail - qhead + 1
end

-- }=====================================================================

-- {=====================================================================
-- Sources: objects with work in flight (busy pools).  A source has
-- :_pump() (non-blocking progress), :_wait_fds(fds, modes, n) -> n (adds
-- the descriptors to watch) and :_timer() -> deadline or nil.
-- ======================================================================

local sources = {}

local is_source = setmetatable({}, { __mode = "k" })

function M.add_source(s)
  if is_source[s] then return end
  is_source[s] = true
  sources[#sources + 1] = s
end

function M.remove_source(s)
  if not is_source[s] then return end
  is_source[s] = nil
  for i = 1, #sources do
    if sources[i] == s then table.remove(sources, i) return end
  end
end

function M.has_sources() return #sources > 0 end

-- Lets every source make progress without blocking.
function M.pump()
  local n = #sources
  if n == 0 then return end
  if n == 1 then return sources[1]:_pump() end
  local copy = { unpack(sources, 1, n) }
  for i = 1, n do copy[i]:_pump() end
end
local pump = M.pump

-- Adds the sources' descriptors to fds/modes; returns n and the nearest
-- source timer.
local function source_fds(fds, modes, n)
  local timer
  for i = 1, #sources do
    local s = sources[i]
    n = s:_wait_fds(fds, modes, n)
    timer = earlier(timer, s:_timer())
  end
  return n, timer
end

-- One blocking wait outside mp.run: for fd (may be nil) and the sources,
-- until deadline.  Returns true when fd became ready.
local function step(fd, mode, deadline)
  local fds, modes, n = {}, {}, 0
  if fd then n, fds[1], modes[1] = 1, fd, mode end
  local timer
  n, timer = source_fds(fds, modes, n)
  local dl = earlier(deadline, timer)
  local ready
  if n == 0 then
    local left = M.remaining(dl)
    if left == nil then error("mproc: waiting forever for nothing (deadlock)", 0) end
    csleep(left)
  elseif n == 1 and fd then
    ready = { poll_fd(fd, mode, M.remaining(dl)) }
  else
    ready = poll_many(fds, modes, n, M.remaining(dl))
  end
  pump()
  return fd ~= nil and ready and ready[1] or false
end

-- }=====================================================================

-- {=====================================================================
-- The scheduler (mp.run)
-- ======================================================================

local sched = nil      -- the running scheduler's state, nil outside mp.run
local TOKEN = {}       -- marks our yields
local MANY_TICK = 0.01 -- polling period of wait_many conditions without a descriptor

-- The task record of the running coroutine, when it is one of ours.
local function current()
  if not sched then return nil end
  local co = running()
  return sched.by_co[co]
end
M.current_task = current

function M.in_run() return sched ~= nil end

-- Suspends the running task until the scheduler resumes it.
local function suspend(t, kind, a, b, deadline)
  t.kind, t.a, t.b, t.deadline = kind, a, b, deadline
  local r1, r2 = yield(TOKEN)
  return r1, r2
end

local function make_ready(s, t, value, err)
  t.kind = nil
  t.rv, t.rerr = value, err
  s.ready[#s.ready + 1] = t
end

local function finish_task(s, t, ok, ...)
  s.by_co[t.co] = nil
  s.count = s.count - 1
  if t.on_done then t.on_done(ok, ...) end
end

local function is_interrupt(e)
  if type(e) == "string" then return e:find("interrupted!", 1, true) ~= nil end
  return type(e) == "table" and e.kind == "Interrupted"
end

local function step_task(s, t)
  local ok, r1 = resume(t.co, t.rv, t.rerr)
  if not ok then
    -- a SIGINT that surfaced in any task ends the run, as in the main one
    if t.is_main or (s.main_error == nil and is_interrupt(r1)) then s.main_error = r1 end
    -- the dead coroutine keeps its stack: a traceback for an unjoined error
    return finish_task(s, t, false, r1, not t.is_main and debug.traceback(t.co) or nil)
  end
  if status(t.co) == "dead" then
    return finish_task(s, t, true, unpack(t.results, 1, t.results.n))
  end
  if r1 ~= TOKEN then
    -- a bare coroutine.yield() in a task: treat it as "let others run"
    make_ready(s, t, nil)
  end
end

local function spawn_record(s, fn, args, on_done, is_main)
  s.seq = s.seq + 1
  local t = { on_done = on_done, is_main = is_main, seq = s.seq }
  t.co = create(function()
    t.results = pack(fn(unpack(args, 1, args.n)))
  end)
  s.by_co[t.co] = t
  s.count = s.count + 1
  s.ready[#s.ready + 1] = t
  return t
end

-- Starts fn(...) as a task of the running scheduler; on_done(ok, ...)
-- receives its outcome.
function M.spawn(fn, args, on_done)
  if not sched then error("mp.spawn must be called inside mp.run", 3) end
  return spawn_record(sched, fn, args, on_done, false)
end

-- Checks the waiting tasks after a wait: descriptors ready, deadlines
-- passed, events true, polled conditions met.
local function wake_waiters(s, ready_fd)
  local t_now = now()
  for _, t in pairs(s.by_co) do
    local kind = t.kind
    if kind then
      if kind == "fd" and ready_fd[t] then
        make_ready(s, t, true)
      elseif kind == "event" then
        local ok, v = pcall(t.a)
        if not ok then make_ready(s, t, nil, v)
        elseif v then make_ready(s, t, true) end
      elseif kind == "many" then
        -- descriptors only wake the loop: the condition says what is ready
        local ok, v = pcall(t.a)
        if not ok then make_ready(s, t, nil, v)
        elseif v then make_ready(s, t, true) end
      elseif kind == "poll" and t_now >= t.next_try then
        local ok, v = pcall(t.a, t.b)
        if not ok then make_ready(s, t, nil, v)
        elseif v then make_ready(s, t, true)
        else
          t.backoff = min(t.backoff * 2, NAP_MAX)
          t.next_try = t_now + t.backoff
        end
      end
      if t.kind and t.deadline and t_now >= t.deadline then make_ready(s, t, false) end
    end
  end
end

-- One wait for every task at once (none when a task is ready already);
-- true when the run must end.
local function wait_round(s)
  -- a task that ended may be what others wait for
  wake_waiters(s, {})
  if #s.ready > 0 then return false end
  -- wait for every task at once
  local fds, modes, owners, n = {}, {}, {}, 0
  local dl, polls = nil, false
  for _, t in pairs(s.by_co) do
    local kind = t.kind
    if kind == "fd" then
      n = n + 1
      fds[n], modes[n], owners[n] = t.a, t.b, t
    elseif kind == "poll" then
      polls = true
      dl = earlier(dl, t.next_try)
    elseif kind == "many" then
      local ok, mfds, polled = pcall(t.b)
      if not ok then
        make_ready(s, t, nil, mfds)
      else
        for i = 1, #mfds do
          n = n + 1
          fds[n], modes[n], owners[n] = mfds[i], "r", t
        end
        if polled then polls = true; dl = earlier(dl, now() + MANY_TICK) end
      end
    end
    if kind then dl = earlier(dl, t.deadline) end
  end
  if #s.ready > 0 then return false end
  local ns = n
  local timer
  n, timer = source_fds(fds, modes, n)
  dl = earlier(dl, timer)
  local ready_fd = {}
  if n == 0 then
    local left = M.remaining(dl)
    if left == nil and not polls then
      s.main_error = "mp.run: deadlock: every task waits for something that cannot happen"
      return true
    end
    if left and left > 0 then csleep(left) end
  else
    local ready = poll_many(fds, modes, n, M.remaining(dl))
    if ready then
      for i = 1, ns do if ready[i] then ready_fd[owners[i]] = true end end
    end
  end
  pump()
  M.dispatch()  -- callbacks due while every task waits
  wake_waiters(s, ready_fd)
  return false
end

local function loop(s)
  while true do
    while #s.ready > 0 do
      local batch = s.ready
      s.ready = {}
      for i = 1, #batch do step_task(s, batch[i]) end
      if s.main_error ~= nil then return end
    end
    if s.count == 0 then return end
    if wait_round(s) then return end
  end
end

-- Cleanup of the library for a task that mp.run may close while it waits
-- (the VMs before 5.4 have no <close>): fn runs, newest first, before the
-- task's coroutine is closed.  Returns the function that cancels it (nil
-- outside mp.run, where nothing is closed).
function M.defer(fn)
  local t = current()
  if not t then return nil end
  local list = t.closers
  if not list then list = {}; t.closers = list end
  list[#list + 1] = fn
  return function()
    for i = #list, 1, -1 do
      if list[i] == fn then table.remove(list, i); return end
    end
  end
end

local function close_task(t)
  local list, failed, ferr = t.closers, false, nil
  for i = #(list or {}), 1, -1 do
    local ok, err = pcall(list[i])
    if not ok and not failed then failed, ferr = true, err end
  end
  local ok, err = coclose(t.co)
  if failed then return false, ferr end
  return ok, err
end

-- The run ends early (the main task raised, SIGINT, a deadlock): close
-- every task still suspended, newest first, so its pending <close>
-- handlers and deferred cleanups run (a subprocess.run waiting in one kills
-- its child).  The scheduler is gone by then: a handler that waits blocks
-- for real.
local function close_tasks(s)
  local left = {}
  for _, t in pairs(s.by_co) do left[#left + 1] = t end
  table.sort(left, function(a, b) return a.seq > b.seq end)
  for i = 1, #left do
    local t = left[i]
    s.by_co[t.co] = nil
    s.count = s.count - 1
    local pok, ok, err = pcall(close_task, t)
    if not pok then err = ok end
    if not (pok and ok) then
      io.stderr:write("mp.run: closing a task raised: ",
        errors.error_text(err), "\n")
    end
    if t.on_done then
      t.on_done(false, errors.new("Cancelled",
        "mp.run ended before the task (its main task raised or was interrupted)"))
    end
  end
end

-- mp.run(fn, ...): runs fn(...) as the main task and returns its values
-- once it and every task it spawned have ended.
function M.run(fn, ...)
  if sched then error("mp.run cannot be nested", 3) end
  local s = { by_co = {}, ready = {}, count = 0, seq = 0 }
  local main = spawn_record(s, fn, pack(...), nil, true)
  sched = s
  local ok, err = pcall(loop, s)
  sched = nil
  if next(s.by_co) then close_tasks(s) end
  if not ok then error(err, 0) end
  if s.main_error ~= nil then error(s.main_error, 0) end
  return unpack(main.results, 1, main.results.n)
end

-- A forked child must block for real: its parent's tasks do not run there.
function M.reset_child()
  sched = nil
  for k in pairs(M.hooks) do M.hooks[k] = nil end
  for i = #sources, 1, -1 do is_source[sources[i]] = nil; sources[i] = nil end
  queue, qhead, qtail, dispatching = {}, 1, 0, false
end

-- }=====================================================================

-- {=====================================================================
-- Waiting
-- ======================================================================

-- Waits until `fd` is ready for mode "r", "w" or "rw", or until the
-- deadline.  Returns true when ready, false when the deadline passed.
function M.wait_fd(fd, mode, deadline)
  local hook = M.hooks.wait_fd
  if hook then return hook(fd, mode, deadline) end
  local t = current()
  if t then
    local ok, err = suspend(t, "fd", fd, mode, deadline)
    if err ~= nil then error(err, 0) end
    return ok
  end
  while true do
    if #sources > 0 then
      if step(fd, mode, deadline) then return true end
    else
      -- poll returns false on EINTR too: back in Lua, a pending SIGINT hook
      -- of the interpreter raises here, then we re-check the deadline.
      if poll_fd(fd, mode, M.remaining(deadline)) then return true end
    end
    if deadline and now() >= deadline then return false end
  end
end

-- Sleeps `seconds` (a task inside mp.run sleeps alone).
function M.sleep(seconds)
  local hook = M.hooks.sleep
  if hook then return hook(seconds) end
  local deadline = now() + seconds
  local t = current()
  if t then
    suspend(t, "sleep", nil, nil, deadline)
  else
    while now() < deadline do
      if #sources > 0 then step(nil, nil, deadline)
      else csleep(deadline - now()) end
    end
  end
  M.dispatch()
end

-- Waits until pred() is true (other parts of mproc make it true while the
-- sources are pumped: pool results, task ends) or the deadline passes.
-- `spin` (optional) is tried before each blocking wait outside mp.run; it
-- returns true when it made progress.  Returns true, or false on deadline.
function M.wait_event(pred, deadline, spin)
  if pred() then return true end
  local t = current()
  if t then
    local ok, err = suspend(t, "event", pred, nil, deadline)
    if err ~= nil then error(err, 0) end
    return ok
  end
  while true do
    pump()
    if pred() then return true end
    if not (spin and spin(deadline)) then
      if deadline and now() >= deadline then return false end
      step(nil, nil, deadline)
    end
    if pred() then return true end
    if deadline and now() >= deadline then return false end
  end
end

-- Waits until pred() is true or the deadline passes, watching the
-- descriptors (for reading) that collect() returns: a list, and true when
-- some condition has no descriptor and must be polled (every MANY_TICK s
-- inside mp.run, with a growing nap outside).  collect() is called before
-- each wait, so a caller leaves out what is ready already.  Returns true,
-- or false on deadline.
function M.wait_many(collect, pred, deadline)
  if pred() then return true end
  local t = current()
  if t then
    local ok, err = suspend(t, "many", pred, collect, deadline)
    if err ~= nil then error(err, 0) end
    return ok
  end
  local nap = 0.0005
  while true do
    local fds, polled = collect()
    local list, modes, n = {}, {}, #fds
    for i = 1, n do list[i], modes[i] = fds[i], "r" end
    local timer
    n, timer = source_fds(list, modes, n)
    local dl = earlier(deadline, timer)
    if polled then
      dl = earlier(dl, now() + nap)
      nap = min(nap * 2, 0.02)
    end
    if n == 0 then
      local left = M.remaining(dl)
      if left == nil then error("mproc: waiting forever for nothing (deadlock)", 0) end
      if left > 0 then csleep(left) end
    else
      poll_many(list, modes, n, M.remaining(dl))
    end
    pump()
    if pred() then return true end
    if deadline and now() >= deadline then return false end
  end
end

-- Waits for a shared-memory object, which has no descriptor (locks,
-- events, queues, a pool's task ring, a child that is not ours).
-- probe(slice) makes one attempt that waits in C at most `slice` seconds
-- and returns nothing (nil) when not done yet, `false, kind, message
-- [, errno]` on a failure (raised here as an mp.Error), or its results.
-- `polled`: the probe cannot wait in C (it is called with 0 and napped
-- between).  Outside mp.run the process blocks here; inside, only the
-- calling task waits: the scheduler loop retries probe(0).  A SIGINT
-- raises Interrupted.  Returns the probe's results, or false when the
-- deadline passed.
local function wait_shared(probe, deadline, polled)
  local res
  local function try(slice)
    local r = pack(probe(slice))
    if r[1] == nil then return false end
    res = r
    return true
  end
  local t = current()
  if t then
    if not try(0) then
      t.backoff = NAP_MIN
      t.next_try = now() + NAP_MIN
      local ok, err = suspend(t, "poll", try, 0, deadline)
      if err ~= nil then error(err, 0) end
      if not ok then return false end
    end
  elseif polled then
    local nap = NAP_MIN
    while not try(0) do
      if deadline and now() >= deadline then return false end
      local until_t = now() + nap
      if deadline and deadline < until_t then until_t = deadline end
      if #sources > 0 then step(nil, nil, until_t) else csleep(until_t - now()) end
      nap = min(nap * 2, NAP_MAX)
    end
  else
    while true do
      local left = M.remaining(deadline)
      if try((left == nil or left > SLICE) and SLICE or left) then break end
      if deadline and now() >= deadline then return false end
    end
  end
  if res[1] == false then errors.check(false, res[2], res[3], res[4]) end
  return unpack(res, 1, res.n)
end
M.wait_shared = interruptible(wait_shared)

-- wait_until(try, deadline [, block]): try() makes one non-blocking
-- attempt and returns true on success; outside mp.run block(deadline),
-- when given, is the caller's own blocking wait and its result is
-- returned.  Returns true, or false when the deadline passed.
function M.wait_until(try, deadline, block)
  if block and not current() then return block(deadline) end
  return M.wait_shared(function() if try() then return true end end, deadline, true)
end

-- Gives the other tasks a turn (no-op outside mp.run).
function M.yield()
  local t = current()
  if t then
    make_ready(sched, t, nil)
    t.kind = nil
    yield(TOKEN)
  end
end

-- }=====================================================================

return M

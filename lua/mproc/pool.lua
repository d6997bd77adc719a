-- mp.Pool (API.md "Pool"; DESIGN.md invariant 2).
--
-- The parent assigns every task itself: each worker has its own channel
-- (a socket, src/lpool.c) and a FIFO of the tasks it holds, at most
-- `window` of them (adapted to how long tasks take, so that short tasks
-- travel in batches and long ones do not queue behind each other).  A
-- worker runs its tasks in order, so the head of its FIFO is the one
-- running: when a worker dies that task fails with WorkerLost and the tasks
-- queued behind it go to other workers; when the head runs past its
-- timeout the worker is killed.  Replacements are forked on the spot.
--
-- apply/submit payloads are encoded when submitted (SerializeError at the
-- caller, nothing sent); map/imap batches when handed to a worker.  Results
-- are read whenever anything waits (sched pumps busy pools), so callbacks
-- run in completion order from dispatch points.
local core = require "mproc.core"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local result = require "mproc.result"
local process = require "mproc.process"

local dumps, now, poll_fd, getpid = core.dumps, core.now, core.poll_fd, core.getpid
local new_list = core.new_list
local packed_acc, acc_pos, acc_result = core.packed_acc, core.acc_pos, core.acc_result
local pack, unpack, tmove = table.pack, table.unpack, table.move
local argerror, typename = util.argerror, util.typename
local errnew = errors.new
local floor, max, min = math.floor, math.max, math.min

local SPIN_MAX = 100e-6    -- longest busy wait for a result before blocking
local WORKER_SPIN = 100e-6 -- a worker's busy wait for its next task
local TARGET_BATCH = 0.002 -- seconds of work a worker may hold queued

-- Every channel end of this process, so that a new worker closes the ends
-- it inherited (it must see EOF from nobody but the parent).
local all_chans = setmetatable({}, { __mode = "k" })

-- {=====================================================================
-- The worker side
-- ======================================================================

local error_text, traceback = errors.error_text, errors.traceback

local function send_result(ch, msg)
  local ok, _, emsg = ch:_put(msg, "result")
  if not ok then
    ch:_put({ msg[1], false, emsg, nil, "SerializeError" })
  end
end

-- xpcall handler that keeps the error value and the traceback.
local function catch(e)
  return { e, traceback(e, 3) }
end

local function send_error(ch, tid, box)
  local ok = ch:_put({ tid, false, box[1], box[2], "TaskError" })
  if not ok then ch:_put({ tid, false, error_text(box[1]), box[2], "TaskError" }) end
end

local function flush_all(ch)
  while true do
    local ok = ch:_flush()
    if ok ~= nil then return ok end
    poll_fd(ch:_fileno(), "w", nil)
  end
end

local function run_apply(ch, tid, fn, args)
  local r = pack(xpcall(fn, catch, unpack(args, 1, args.n)))
  if r[1] then
    send_result(ch, { tid, true, tmove(r, 2, r.n, 1, { n = r.n - 1 }) })
  else
    send_error(ch, tid, r[2])
  end
end

-- A batch of a job: items[1..n] in chunks of cs.  One xpcall covers the
-- whole batch; after an error the batch goes on from the next chunk.  The
-- answer holds every value and, for the chunks that failed, {start, error
-- value, traceback}.
local pos  -- the item being run (read after an error)
local function run_range(fn, star, items, from, n, out)
  if star then
    for k = from, n do
      pos = k
      local a = items[k]
      out[k] = fn(unpack(a, 1, a.n or #a))
    end
  else
    for k = from, n do
      pos = k
      out[k] = fn(items[k])
    end
  end
end

-- Sends a batch's answer: packed when every value is a number (see
-- lpool.c), else as a list; error values that cannot travel go as text.
local function send_batch(ch, tid, out, errs, n)
  local ok = not errs and n > 0 and ch:_put_numbers("R", tid, 0, 0, out, 1, n)
    or ch:_put({ tid, true, out, errs }, "result")
  if not ok and errs then
    for i = 1, #errs do errs[i][2] = error_text(errs[i][2]) end
    ok = ch:_put({ tid, true, out, errs }, "result")
  end
  if not ok then
    local _, _, emsg = ch:_put({ tid, true, out }, "result")
    ch:_put({ tid, false, emsg, nil, "SerializeError" })
  end
end

local function run_batch(ch, tid, job, items, cs)
  local fn, star, n = job.fn, job.star, items.n
  local out, errs = new_list(n), nil
  local from = 1
  while from <= n do
    local ok, box = xpcall(run_range, catch, fn, star, items, from, n, out)
    if ok then break end
    local start = (pos - 1) // cs * cs + 1
    errs = errs or {}
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  send_batch(ch, tid, out, errs, n)
  return (n + cs - 1) // cs
end

-- A batch of packed numbers for a plain map, still in the channel's
-- buffer: the calls run in a C loop that writes packed results into an
-- accumulator kept from batch to batch (lpool.c); same answer as above.
local acc
local function run_packed(ch, tid, job, n, cs)
  acc = packed_acc(n, acc)
  local from, errs = 1, nil
  while from <= n do
    local ok, box = xpcall(ch._run_pending, catch, ch, job.fn, acc, from)
    if ok then break end
    local at = acc_pos(acc)
    errs = errs or {}
    if at < from then  -- failed before any call (a bad frame): every chunk left fails
      for start = from, n, cs do errs[#errs + 1] = { start, box[1], box[2] } end
      break
    end
    local start = (at - 1) // cs * cs + 1
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  if errs or not ch:_put_numbers("R", tid, 0, 0, acc) then
    send_batch(ch, tid, acc_result(acc), errs, n)
  end
  return (n + cs - 1) // cs
end

-- One attempt to read a message: true, msg | nil | false, kind, message.
-- A by-reference decoder may raise: that is a failed decode too.
local function try_get(ch, spin)
  local ok, got, a, b = pcall(ch._get, ch, spin)
  if not ok then return false, "SerializeError", error_text(got) end
  return got, a, b
end

-- Next message for the worker: spins a little (adaptively) before
-- blocking, so that a task sent right after a result is caught at once.
local function next_message(ch, st)
  local got, a, b = try_get(ch)
  if got ~= nil then return got, a, b end
  flush_all(ch)
  st.last_flush = now()
  if st.spin > 0 then
    got, a, b = try_get(ch, st.spin)
    if got ~= nil then
      st.spin = min(st.spin * 2, WORKER_SPIN)
      return got, a, b
    end
    st.spin = st.spin / 2 < 2e-6 and 0 or st.spin / 2
  end
  local t0 = now()
  repeat
    poll_fd(st.fd, "r", nil)
    got, a, b = try_get(ch)
  until got ~= nil
  if now() - t0 < 200e-6 then st.spin = max(st.spin, 5e-6) end
  return got, a, b
end

-- The function of a job, or an error answer when its definition could not
-- be decoded here.
local function job_of(ch, jobs, tid, id, decode_err)
  local job = jobs[id]
  if job then return job end
  ch:_put({ tid, false, decode_err or "the task's function did not arrive", nil,
            "SerializeError" })
  return nil
end

-- Runs in the worker and never returns: every path ends in core.exit.
local function worker_main(ch, init, initargs, maxtasks)
  pcall(function()
    for c in pairs(all_chans) do if c ~= ch then c:_close() end end
    all_chans[ch] = true  -- a pool started by a task must not inherit it
    process.reset_sched()
    os.exit = function(code)  -- luacheck: ignore 122 (results first, then our exit path)
      pcall(flush_all, ch)
      core.exit(code == nil and 0 or code)
    end
  end)
  local code = 0
  local ok, err = xpcall(function()
    if init then init(unpack(initargs, 1, initargs.n)) end
    local jobs, done, decode_err = {}, 0, nil
    -- no spin until a task came quickly after an answer: while the pool
    -- is still forking its other workers, a spin only takes their CPU
    local st = { spin = 0, last_flush = now(), fd = ch:_fileno() }
    while true do
      local got, msg, emsg = next_message(ch, st)
      if got == false then
        if msg == "EOF" then break end  -- the pool is gone or closing
        -- the message could not be decoded: it was the first task not
        -- answered yet (or the definition of its function)
        decode_err = "cannot receive the task: " .. tostring(emsg)
        ch:_put({ -1, false, decode_err, nil, "SerializeError" })
      else
        local op = msg[1]
        if op == 2 then
          run_apply(ch, msg[2], msg[3], msg[4])
          done = done + 1
        elseif op == 5 then
          local job = job_of(ch, jobs, msg[2], msg[3], decode_err)
          if job then run_apply(ch, msg[2], job.fn, msg[4]) end
          done = done + 1
        elseif op == 3 or op == 6 then
          local job = job_of(ch, jobs, msg[2], msg[3], decode_err)
          local items = msg[4]
          local packed = op == 6 and job and not job.star  -- packed numbers
          if op == 6 and not packed then items = ch:_take(items) end
          if not job then done = done + (items.n + msg[5] - 1) // msg[5]
          elseif packed then done = done + run_packed(ch, msg[2], job, items, msg[5])
          else done = done + run_batch(ch, msg[2], job, items, msg[5]) end
        elseif op == 1 then
          jobs[msg[2]] = { fn = msg[3], star = msg[4] }
        elseif op == 4 then
          jobs[msg[2]] = nil
        elseif op == 0 then
          break
        end
        if maxtasks and done >= maxtasks then break end
        if now() - st.last_flush > 0.001 then
          ch:_flush()
          st.last_flush = now()
        end
      end
    end
  end, traceback)
  if not ok then
    pcall(function() io.stderr:write("Pool worker:\n", tostring(err), "\n") end)
    code = 1
  end
  pcall(flush_all, ch)
  core.exit(code)
end

-- }=====================================================================

-- {=====================================================================
-- The parent side: workers
--
-- A worker's FIFO holds "entries": an apply task (one unit), or a batch of
-- a job (items first..first+count-1, `units` chunks).  slot.units counts
-- the units it holds; slot.win is how many it may hold: about
-- TARGET_BATCH seconds of work at the pace its last answers came back.
-- ======================================================================

local Pool = {}
Pool.__index = Pool
Pool.__name = "mproc.Pool"

local MAX_WINDOW = 1024
local BIG_BATCH = 256  -- items
local LONG_UNIT = 0.001  -- seconds: a unit of work that long is not prefetched
                         -- at the end of a job

local next_id = 0
local function new_id()
  next_id = next_id + 1
  return next_id
end

local function lost_error(slot)
  local code = slot.exitcode
  return errnew("WorkerLost", ("worker process %d died (exitcode %s) while running the task")
    :format(slot.pid, tostring(code)), { exitcode = code, pid = slot.pid })
end

local function timeout_error(task)
  return errnew("Timeout", ("task timed out after %g s; its worker was killed")
    :format(task.timeout))
end

local function make_task_error(value, tb)
  return errnew("TaskError", error_text(value), { value = value, traceback = tb })
end

local function task_error(msg)
  if msg[5] == "SerializeError" then
    local m = tostring(msg[3])
    if msg[1] ~= -1 and not m:find("^cannot receive") and not m:find("did not arrive") then
      m = "cannot send the task's result: " .. m
    end
    return errnew("SerializeError", m)
  end
  return make_task_error(msg[3], msg[4])
end

local function poller_set(self, fd, mode, op)
  if self._poller then self._poller:_ctl(op, fd, mode) end
end

-- Starts n workers: every channel first, then the forks back to back (the
-- parent's own work between two forks, its copy-on-write faults included,
-- delays the next one), then the bookkeeping.  A failed fork raises once
-- the workers forked before it are registered.
local function start_workers(self, n)
  local chans, forked, failed = {}, {}, nil
  for i = 1, n do
    local r = pack(core.chan_pair())
    if not r[1] then failed = r break end
    all_chans[r[2]], all_chans[r[3]] = true, true
    chans[i] = { r[2], r[3] }
  end
  for i = 1, #chans do
    if failed then break end
    local r = pack(core.proc_fork(false, true))
    if not r[1] then failed = r break end
    if r[2] == 0 then worker_main(chans[i][2], self._init, self._initargs, self._maxtasks) end
    forked[i] = r
  end
  local ws = self._workers
  for i = 1, #chans do
    local mine, theirs = chans[i][1], chans[i][2]
    theirs:_close()
    all_chans[theirs] = nil
    local r = forked[i]
    if r then
      local slot = { pid = r[2], child = r[3], sentinel = core.child_fileno(r[3]), ch = mine,
                     fd = mine:_fileno(), head = 1, tail = 0, units = 0, sent = 0, win = 1,
                     known = {}, ema = nil, wmode = "r" }
      poller_set(self, slot.fd, "r", "add")
      poller_set(self, slot.sentinel, "r", "add")
      ws[#ws + 1] = slot
    else
      mine:_close()
      all_chans[mine] = nil
    end
  end
  if failed then errors.check(unpack(failed, 1, failed.n)) end
end

local function update_window(slot, dt, units)
  local per = dt / units
  local ema = slot.ema
  ema = ema and (ema * 0.7 + per * 0.3) or per
  slot.ema = ema
  if ema <= TARGET_BATCH / MAX_WINDOW then slot.win = MAX_WINDOW
  else slot.win = floor(TARGET_BATCH / ema) + 1 end
end

-- The queue: apply tasks, jobs with items left to hand out, and batches
-- given back by a dead worker (at the front).
local function enqueue(self, item)
  local q = self._q
  q.tail = q.tail + 1
  q[q.tail] = item
end

local function requeue_front(self, item)
  local q = self._q
  q.head = q.head - 1
  q[q.head] = item
end

local function settle_apply(self, task, ok, v)
  if task.settled then return end
  task.settled = true
  self._busy = self._busy - 1
  if task.timeout then self._timeouts = self._timeouts - 1 end
  if ok then task.r:_resolve(v) else task.r:_reject(v) end
end

-- Fails whatever `item` (queued or held by a worker) still stands for.
local function abandon(self, item, err)
  if item.is_job then
    local left = item.avail - item.next + 1
    if left > 0 then item:fail(item.next, left, err) end
    item.next = item.avail + 1
  elseif item.job then
    item.job:fail(item.first, item.count, err)
  else
    settle_apply(self, item, false, err)
  end
end

local function remove_worker(self, slot)
  local ws = self._workers
  for i = 1, #ws do if ws[i] == slot then table.remove(ws, i) break end end
  poller_set(self, slot.fd, nil, "del")
  poller_set(self, slot.sentinel, nil, "del")
  slot.ch:_close()
  all_chans[slot.ch] = nil
  slot.dead = true
end

-- A worker ended: the entry it was running fails (for a batch: its first
-- chunk), the entries queued behind it go back to the queue.
local function worker_ended(self, slot)
  local ok, code = core.child_poll(slot.child, true)
  slot.exitcode = ok and code or nil
  remove_worker(self, slot)  -- first: it takes the sentinel out of the poller
  core.child_close(slot.child)
  local back = {}
  for i = slot.head, slot.tail do
    local e = slot[i]
    slot[i] = nil
    local job = e.job
    if i == slot.head then
      local err = e.timed_out and timeout_error(e) or lost_error(slot)
      if job then
        local n1 = min(job.cs, e.count)
        job:fail(e.first, n1, err)
        if e.count > n1 then
          back[#back + 1] = { job = job, first = e.first + n1, count = e.count - n1 }
        end
      else
        settle_apply(self, e, false, err)
      end
    elseif job then
      back[#back + 1] = { job = job, first = e.first, count = e.count }
    elseif not e.settled then
      e.worker = nil
      back[#back + 1] = e
    end
  end
  slot.head, slot.tail, slot.units = 1, 0, 0
  for i = #back, 1, -1 do requeue_front(self, back[i]) end
  if self._state ~= "TERMINATE" and (self._busy > 0 or self._state == "RUN") then
    start_workers(self, 1)
  end
end

-- }=====================================================================

-- {=====================================================================
-- Pumping: read answers, handle deaths and timeouts, hand out work
-- ======================================================================

local function on_message(self, slot, msg)
  local e = slot[slot.head]
  -- -1: the worker could not decode the first message it had not answered
  if not e or (e.id ~= msg[1] and msg[1] ~= -1) then return end
  slot[slot.head] = nil
  slot.head = slot.head + 1
  slot.units = slot.units - e.units
  local t = now()
  update_window(slot, t - e.start, e.units)
  local nxt = slot[slot.head]
  if nxt then nxt.start = t end
  local job = e.job
  if job then
    if msg[2] then job:deliver(e.first, e.count, msg[3], msg[4], msg[5] == "packed" and slot.ch)
    else job:fail(e.first, e.count, task_error(msg)) end
  else
    if msg[2] then settle_apply(self, e, true, msg[3])
    else settle_apply(self, e, false, task_error(msg)) end
  end
end

local function drain(self, slot)
  local ch = slot.ch
  while true do
    local ok, msg = ch:_get()
    if ok == nil then return true end
    if ok == false then return false end
    on_message(self, slot, msg)
  end
end

-- The live worker holding the fewest units that has room, and its room.
-- Items of a job (map, imap) get two in flight per worker, so a worker
-- never idles between them; but when they are long and only a few are left
-- (`left` units, no more than the workers), one at a time: a second one
-- held by a busy worker would leave another idle at the end of the job.
-- An apply task of unknown length waits alone when the tasks seen so far
-- were long.
local function pick(self, chunked, left)
  local best, room
  local maxtasks = self._maxtasks
  local ws = self._workers
  for i = 1, #ws do
    local slot = ws[i]
    if not slot.stopping then
      local win = slot.win
      if chunked and win < 2
         and (not (slot.ema and slot.ema > LONG_UNIT) or (left and left > #ws)) then
        win = 2
      end
      local r = win - slot.units
      if maxtasks and maxtasks - slot.sent < r then r = maxtasks - slot.sent end
      if r > 0 and (not best or slot.units < best.units) then best, room = slot, r end
    end
  end
  return best, room
end

local function send_entry(slot, e)
  local ch = slot.ch
  local job = e.job
  if job then
    if not slot.known[job.id] then
      ch:_put_raw(job.def)
      slot.known[job.id] = true
      job.known[slot] = true
    end
    local first = e.first
    local ok, _, msg
    ok = ch:_put_numbers("P", e.id, job.id, job.cs, job.items, first, e.count)
    if not ok then
      local items = tmove(job.items, first, first + e.count - 1, 1, { n = e.count })
      ok, _, msg = ch:_put({ 3, e.id, job.id, items, job.cs }, "items")
    end
    if not ok then
      return job:fail(first, e.count, errnew("SerializeError", msg))
    end
  else
    local fj = e.fjob
    if fj and not slot.known[fj.id] then
      ch:_put_raw(fj.def)
      slot.known[fj.id] = true
    end
    ch:_put_raw(e.payload)
  end
  e.worker = slot
  slot.tail = slot.tail + 1
  slot[slot.tail] = e
  slot.units = slot.units + e.units
  slot.sent = slot.sent + e.units
  if slot.tail == slot.head then
    e.start = now()
    slot.ch:_flush()  -- the worker is idle: no batching
  elseif job and e.count >= BIG_BATCH then
    slot.ch:_flush()  -- a batch worth a syscall of its own
  end
end

local function send_tasks(self)
  local q = self._q
  while q.head <= q.tail do
    local item = q[q.head]
    local job = item.job
    if (item.is_job and (item.failed or item.next > item.avail))
       or (job and job.failed) or item.settled then
      q[q.head] = nil
      q.head = q.head + 1
      if item.is_job then item.queued = false end
      if job and job.failed then self._busy = self._busy - item.count end
    else
      local j = job or (item.is_job and item) or nil
      local left = item.is_job and (item.avail - item.next + item.cs) // item.cs or nil
      local slot, room = pick(self, j ~= nil, left)
      if not slot then return end
      if item.is_job then
        -- one message per chunk; chunks of one item travel in batches
        local cs = item.cs
        local units = cs > 1 and 1 or min(room, max(1, slot.win // 2))
        local count = min(units * cs, item.avail - item.next + 1)
        local e = { id = new_id(), job = item, first = item.next, count = count,
                    units = (count + cs - 1) // cs }
        item.next = item.next + count
        send_entry(slot, e)
      else
        q[q.head] = nil
        q.head = q.head + 1
        if job then
          item.id = new_id()
          item.units = (item.count + job.cs - 1) // job.cs
        end
        send_entry(slot, item)
      end
    end
  end
end

local function flush(self)
  local ws = self._workers
  for i = 1, #ws do
    local slot = ws[i]
    local ok = slot.ch:_flush()
    local mode = ok == nil and "rw" or "r"
    if mode ~= slot.wmode then
      slot.wmode = mode
      poller_set(self, slot.fd, mode, "mod")
    end
  end
end

local function check_timeouts(self)
  local t = now()
  for _, slot in ipairs(self._workers) do
    local task = slot[slot.head]
    if task and task.timeout and not task.timed_out and t >= task.start + task.timeout then
      task.timed_out = true
      core.child_signal(slot.child, core.SIGKILL)
    end
  end
end

-- After close, once the work is done: workers end (EOF on their channel
-- after a stop message), so that join only waits for them to exit.
local function stop_idle(self)
  for _, slot in ipairs(self._workers) do
    if not slot.stopping then
      slot.stopping = true
      slot.ch:_put({ 0 })
      slot.ch:_flush()
    end
  end
end

-- One round of progress.  With epoll, one epoll_wait tells which channels
-- and sentinels have something; frames already read into a channel's
-- buffer are taken too (epoll cannot see them).
local ready_set = {}
local function pump_body(self)
  local ws = self._workers
  local poller = self._poller
  local n = poller and poller:_ready(ready_set) or -1
  local i = 1
  while i <= #ws do
    local slot = ws[i]
    local ended = false
    if n < 0 or ready_set[slot.fd] or slot.ch:_buffered() then
      ended = not drain(self, slot)
    end
    if not ended and (n < 0 or ready_set[slot.sentinel]) then
      ended = poll_fd(slot.sentinel, "r", 0)
    end
    if ended then
      drain(self, slot)
      worker_ended(self, slot)
    else
      i = i + 1
    end
  end
  if n > 0 then for k in pairs(ready_set) do ready_set[k] = nil end end
  if self._timeouts > 0 then check_timeouts(self) end
  send_tasks(self)
  flush(self)
  if self._busy == 0 then
    if self._state ~= "CLOSE" then sched.remove_source(self)
    else stop_idle(self) end
  end
end

function Pool:_pump()
  if self._pumping then return end
  if self._pid ~= getpid() then  -- inherited by an mp.fork child: not ours
    return sched.remove_source(self)
  end
  self._pumping = true
  local ok, err = pcall(pump_body, self)
  self._pumping = false
  if not ok then error(err, 0) end
end

function Pool:_wait_fds(fds, modes, n)
  if self._pid ~= getpid() then return n end
  local pfd = self._pollfd
  if pfd then
    n = n + 1
    fds[n], modes[n] = pfd, "r"
    return n
  end
  for _, slot in ipairs(self._workers) do
    n = n + 1
    fds[n], modes[n] = slot.fd, slot.wmode
    n = n + 1
    fds[n], modes[n] = slot.sentinel, "r"
  end
  return n
end

function Pool:_timer()
  if self._timeouts == 0 then return nil end
  local dl
  for _, slot in ipairs(self._workers) do
    local task = slot[slot.head]
    if task and task.timeout and not task.timed_out then
      local d = task.start + task.timeout
      if not dl or d < dl then dl = d end
    end
  end
  return dl
end

-- Waits for one result; spins briefly on its worker's channel first (a
-- blocking wake-up costs more than a short task's whole round trip).
function Pool:_await(r, deadline)
  local task = r._task
  local pred = function() return r._done end
  local spin = function()
    local slot = task and task.worker
    if not slot or slot.dead then return false end
    local budget = self._spin
    if budget <= 0 then
      self._spin = 5e-6
      return false
    end
    local ok, msg = slot.ch:_get(budget)
    if ok then
      self._spin = min(budget * 2, SPIN_MAX)
      on_message(self, slot, msg)
      self:_pump()
      return true
    end
    if ok == false then return false end  -- EOF: the pump will see it
    self._spin = budget / 2 < 2e-6 and 0 or budget / 2
    return false
  end
  return sched.wait_event(pred, deadline, spin)
end

function Pool:_cancel(r)
  local task = r._task
  if not task or task.worker or task.settled then return false end
  task.settled = true  -- left in the queue, skipped when its turn comes
  self._busy = self._busy - 1
  if task.timeout then self._timeouts = self._timeouts - 1 end
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

local function check_fn(fn, n, fname)
  if type(fn) == "function" then return end
  local mt = getmetatable(fn)
  if type(mt) == "table" and mt.__call then return end
  argerror(n, fname, "function expected, got " .. (fn == nil and "no value" or typename(fn)), 3)
end

local function encode(v, root)
  local ok, s, msg = dumps(v, root)
  if ok then return s end
  errors.raise(s, msg)
end

local function submit_task(self, task)
  self._busy = self._busy + 1
  if task.timeout then self._timeouts = self._timeouts + 1 end
  enqueue(self, task)
  sched.add_source(self)
end

-- A Lua function whose only upvalue is _ENV cannot change between calls:
-- its bytecode goes to each worker once (like a job's function), and its
-- tasks carry only the arguments.  Up to MAX_CACHED per pool.
local MAX_CACHED = 256
local getupvalue, getinfo = debug.getupvalue, debug.getinfo

local function fn_job(self, fn)
  local fj = self._fnjobs[fn]
  if fj ~= nil then return fj end
  fj = false
  if type(fn) == "function" and self._ncached < MAX_CACHED and getinfo(fn, "S").what ~= "C" then
    local i, plain = 1, true
    while true do
      local name = getupvalue(fn, i)
      if name == nil then break end
      if name ~= "_ENV" then plain = false break end
      i = i + 1
    end
    if plain then
      local id = new_id()
      local ok, def = dumps({ 1, id, fn, false })
      if ok then
        fj = { id = id, def = def }
        self._ncached = self._ncached + 1
      end
    end
  end
  self._fnjobs[fn] = fj
  return fj
end

local function apply_task(self, fn, args, opts)
  local id = new_id()
  local fj = fn_job(self, fn)
  local ok, payload, msg
  if fj then ok, payload, msg = dumps({ 5, id, fj.id, args })
  else ok, payload, msg = dumps({ 2, id, fn, args }) end
  if not ok then
    -- name the path from what the user passed: "args[2]..." or "fn..."
    local ok2, _, m2 = dumps(args, "args")
    if ok2 then ok2, _, m2 = dumps(fn, "fn") end
    errors.raise("SerializeError", ok2 and msg or m2)
  end
  local r = result.new(self, opts and opts.callback, opts and opts.error_callback)
  local task = { id = id, payload = payload, r = r, timeout = opts and opts.timeout, units = 1,
                 fjob = fj or nil }
  r._task = task
  submit_task(self, task)
  self:_pump()
  return r
end

function Pool:apply_async(fn, args, opts)
  check_running(self, "apply_async")
  check_fn(fn, 1, "apply_async")
  if args ~= nil and type(args) ~= "table" then
    argerror(2, "apply_async", "table expected, got " .. typename(args))
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      argerror(3, "apply_async", "table expected, got " .. typename(opts))
    end
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
-- A job is one function over many items, in chunks of `cs` items.  Its
-- items sit in job.items (the caller's list for map, a buffer fed lazily
-- for imap); job.next is the first not handed out yet, job.avail the last
-- available.  Workers receive the function once (job.def) and then
-- batches of items.

local Job = {}
Job.__index = Job

local function new_job(self, fn, star, cs)
  local id = new_id()
  return setmetatable({ id = id, pool = self, known = {}, cs = cs, items = {}, next = 1,
                        avail = 0, is_job = true, queued = false,
                        def = encode({ 1, id, fn, star }, "task") }, Job)
end

-- n more items (already stored in job.items) can be handed out.
function Job:add(n)
  local pool = self.pool
  self.avail = self.avail + n
  pool._busy = pool._busy + n
  if not self.queued and not self.failed then
    self.queued = true
    enqueue(pool, self)
  end
  sched.add_source(pool)
end

-- Tells the workers that know the function to drop it.
function Job:forget()
  for slot in pairs(self.known) do
    if not slot.dead then
      slot.ch:_put({ 4, self.id })
      slot.known[self.id] = nil
    end
  end
  self.known = {}
end

-- Stops handing out items (after a failure, or when nobody wants more).
function Job:stop()
  self.failed = true
  local left = self.avail - self.next + 1
  if left > 0 then self.pool._busy = self.pool._busy - left end
  self.next = self.avail + 1
  self:forget()
end

local function release(job, first, count)
  job.pool._busy = job.pool._busy - count
  if job.own then
    local items = job.items
    for i = first, first + count - 1 do items[i] = nil end
  end
end

-- Values of items first..first+count-1 (vals[1..count]); errs lists the
-- chunks that failed as {start (1-based in the batch), value, traceback}.
-- `packed`: the values are packed numbers still in that channel's buffer
-- (lpool.c take); a map unpacks them straight into its result list
-- (job.out), others get a table.
function Job:deliver(first, count, vals, errs, packed)
  release(self, first, count)
  if packed then
    if self.out then
      packed:_take(count, self.out, first)
      vals = nil
    else
      vals = packed:_take(count)
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

local function check_chunksize(cs, n, fname)
  if cs == nil then return nil end
  if math.type(cs) ~= "integer" then
    if type(cs) == "number" and math.tointeger(cs) then cs = math.tointeger(cs)
    else argerror(n, fname, "integer expected, got " .. typename(cs), 4) end
  end
  if cs < 1 then argerror(n, fname, "chunksize must be >= 1", 4) end
  return cs
end

-- items: a list (n or #) or an iterator function; returns a list and n.
local function collect(items, fname)
  if type(items) == "table" then
    return items, items.n or #items
  elseif type(items) == "function" then
    local list, n = {}, 0
    for v in items do n = n + 1; list[n] = v end
    return list, n
  end
  argerror(2, fname, "table or function expected, got "
    .. (items == nil and "no value" or typename(items)), 4)
end

local function map_async(self, fname, fn, items, opts, star)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local list, n = collect(items, fname)
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
    if left == 0 then
      job:forget()
      r:_resolve({ out, n = 1 })
    end
  end
  job.on_fail = function(_, _, err)
    if r._done then return end
    job:stop()
    r:_reject(err)
  end
  if n == 0 then
    r:_resolve({ new_list(0), n = 1 })
  else
    job:add(n)
    self:_pump()
    -- made once the first chunks are out (no answer is read before): the
    -- collector's work that a big allocation brings then overlaps theirs
    out = new_list(n)
    job.out = out
  end
  return r
end

local function map_opts(fname, chunksize)
  if chunksize ~= nil and type(chunksize) ~= "number" then
    argerror(3, fname, "number expected, got " .. typename(chunksize), 3)
  end
  return { chunksize = chunksize }
end

local function check_opts(opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(3, fname, "table expected, got " .. typename(opts), 3)
  end
  return opts
end

function Pool:map_async(fn, items, opts)
  return map_async(self, "map_async", fn, items, check_opts(opts, "map_async"), false)
end

function Pool:starmap_async(fn, items, opts)
  return map_async(self, "starmap_async", fn, items, check_opts(opts, "starmap_async"), true)
end

function Pool:map(fn, items, chunksize)
  return map_async(self, "map", fn, items, map_opts("map", chunksize), false):get()
end

function Pool:starmap(fn, items, chunksize)
  return map_async(self, "starmap", fn, items, map_opts("starmap", chunksize), true):get()
end

-- imap / imap_unordered: items are read lazily, at most `ahead` of them
-- beyond what the loop has consumed.
local function imap(self, fname, fn, items, chunksize, ordered)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local nextitem
  if type(items) == "table" then
    local i, n = 0, items.n or #items
    nextitem = function()
      if i >= n then return false end
      i = i + 1
      return true, items[i]
    end
  elseif type(items) == "function" then
    nextitem = function()
      local v = items()
      if v == nil then return false end
      return true, v
    end
  else
    argerror(2, fname, "table or function expected, got "
      .. (items == nil and "no value" or typename(items)))
  end
  local cs = check_chunksize(chunksize, 3, fname) or 1
  local job = new_job(self, fn, false, cs)
  job.own = true
  local ahead = max(1024, self._processes * cs * 8)
  local half = ahead // 2
  local fed, consumed, exhausted = 0, 0, false
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
        put(first + rel - 1, nil, make_task_error(e[2], e[3]))
        consumed = consumed + clen - 1  -- the rest of the chunk never comes
      else
        for k = rel, rel + clen - 1 do put(first + k - 1, vs[k]) end
      end
      rel = rel + clen
    end
  end
  job.on_fail = function(first, count, err)
    for rel = 1, count, cs do
      put(first + rel - 1, nil, err)
      consumed = consumed + min(cs, count - rel + 1) - 1
    end
  end
  local function feed()
    local n = 0
    while not exhausted and fed - consumed < ahead do
      local more, v = nextitem()
      if not more then exhausted = true break end
      fed, n = fed + 1, n + 1
      job.items[fed] = v
    end
    if n > 0 then
      job:add(n)
      self:_pump()
    end
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
        job:forget()
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
    if err then
      failed = err
      job:stop()
      error(err, 0)
    end
    if not exhausted and fed - consumed < half then feed() end
    return idx, v
  end
end

function Pool:imap(fn, items, chunksize)
  return imap(self, "imap", fn, items, chunksize, true)
end

function Pool:imap_unordered(fn, items, chunksize)
  return imap(self, "imap_unordered", fn, items, chunksize, false)
end

-- }------

function Pool:fileno()
  check_pool(self, "fileno")
  if not self._pollfd then error("pool:fileno() needs epoll (Linux)", 2) end
  return self._pollfd
end

function Pool:close()
  check_pool(self, "close")
  if self._state == "RUN" then
    self._state = "CLOSE"
    sched.add_source(self)  -- until the workers are gone
    self:_pump()
  end
end

local function stop_workers(self, sig)
  for _, slot in ipairs(self._workers) do
    if not slot.dead then core.child_signal(slot.child, sig) end
  end
end

function Pool:terminate()
  check_pool(self, "terminate")
  if self._state == "TERMINATE" then return end
  self._state = "TERMINATE"
  -- fail what is left, then end the workers at once
  local cancelled = errnew("Cancelled", "the pool was terminated")
  local q = self._q
  self._q = { head = 1, tail = 0 }
  for i = q.head, q.tail do
    local item = q[i]
    if item and not (item.job and item.job.failed) then abandon(self, item, cancelled) end
  end
  stop_workers(self, core.SIGKILL)
  for _, slot in ipairs({ unpack(self._workers) }) do
    while not poll_fd(slot.sentinel, "r", 5) do end
    for i = slot.head, slot.tail do
      local e = slot[i]
      slot[i] = nil
      if not (e.job and e.job.failed) then abandon(self, e, cancelled) end
    end
    slot.head, slot.tail, slot.units = 1, 0, 0
    worker_ended(self, slot)
  end
  sched.remove_source(self)
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
    sched.remove_source(self)
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
    for _, slot in ipairs(self._workers) do
      pcall(core.child_signal, slot.child, core.SIGTERM)
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

local POOL_OPTS = { processes = true, initializer = true, initargs = true,
                    maxtasksperchild = true }

local function positive_int(v, what)
  if v == nil then return nil end
  local i = math.tointeger(v)
  if not i then
    argerror(1, "Pool", ("'%s' must be an integer, got %s"):format(what, typename(v)), 4)
  end
  if i < 1 then argerror(1, "Pool", ("'%s' must be >= 1"):format(what), 4) end
  return i
end

local function new_pool(opts)
  local processes, init, initargs, maxtasks
  if type(opts) == "number" or opts == nil then
    processes = positive_int(opts, "processes")
  elseif type(opts) == "table" then
    for k in pairs(opts) do
      if not POOL_OPTS[k] then argerror(1, "Pool", ("unknown option '%s'"):format(tostring(k))) end
    end
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
  initargs = initargs or {}
  local self = setmetatable({
    _processes = processes or core.cpu_count(), _init = init,
    _initargs = { n = initargs.n or #initargs, unpack(initargs, 1, initargs.n or #initargs) },
    _maxtasks = maxtasks, _state = "RUN", _workers = {}, _q = { head = 1, tail = 0 },
    _busy = 0, _timeouts = 0, _spin = SPIN_MAX,
    _fnjobs = setmetatable({}, { __mode = "k" }), _ncached = 0, _pid = core.getpid(),
  }, Pool)
  local ok, p = core.pool_poller()
  if ok then
    self._poller = p
    self._pollfd = p:_fileno()
  end
  local ok2, err = pcall(start_workers, self, self._processes)
  if not ok2 then  -- the workers that did start must not outlive this call
    self:terminate()
    error(err, 0)
  end
  return self
end

-- }=====================================================================

return { Pool = Pool, task_error = task_error, exports = { Pool = new_pool } }

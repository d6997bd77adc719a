-- mp.Pool (lua/mproc/pool.lua): jobs, one function over many items:
-- map/starmap (batches of whole chunks, guided scheduling, packed numbers)
-- and imap/imap_unordered (input read a few chunks per worker ahead).
local core = require "mproc.core"
local idiv = require("mproc.compat").idiv
local sched = require "mproc.sched"
local result = require "mproc.result"
local poolargs = require "mproc.poolargs"

local new_list = core.pool_new_list
local make_task_error, check_fn = poolargs.make_task_error, poolargs.check_fn
local check_chunksize, collect_items = poolargs.check_chunksize, poolargs.collect_items
local max, min = math.max, math.min

local AHEAD = 8            -- imap: chunks read ahead per worker


local dispatch = require "mproc.pool.dispatch"

local new_id, encode, check_running = dispatch.new_id, dispatch.encode, dispatch.check_running
local drop_task, push_job = dispatch.drop_task, dispatch.push_job

local M = {}

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
  local cs, extra = idiv(n, w), n % w
  if extra > 0 then cs = cs + 1 end
  return max(cs, 1)
end

function M.map_async(self, fname, fn, items, opts, star)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local list, n = collect_items(items, fname)
  opts = opts or {}
  local cs = check_chunksize(opts.chunksize, 3, fname) or default_chunksize(self, n)
  local r = result.new(self, opts.callback, opts.error_callback)
  r._map = true
  local job = new_job(self, fn, star, cs)
  job.items = list
  job.out = new_list(n)
  poolargs.map_results(job, r, job.out, n)
  if n > 0 then push_job(self, job, 1, n) end
  return r
end

-- imap / imap_unordered: items are read lazily, at most AHEAD chunks per
-- worker beyond what the loop has consumed.  An error raised by the input
-- iterator comes after the items read before it.  With errors = "return"
-- a failed item yields i, nil, err and the loop goes on.
function M.imap(self, fname, fn, items, opts, ordered)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local nextitem, cs, ret_errors = poolargs.imap_args(fname, items, opts)
  local job = new_job(self, fn, false, cs)
  job.own = true
  local s = poolargs.imap_stream {
    ordered = ordered, ahead = self._processes * cs * AHEAD, nextitem = nextitem,
    ret_errors = ret_errors,
    store = function(i, v) job.items[i] = v end,
    push = function(from, count) push_job(self, job, from, count) end,
    wait = function(have) sched.wait_event(have, nil) end,
    stop = function() job:stop() end,
    at_end = function() job:stop() end,
  }
  -- a failed chunk fails each of its items
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
        for k = rel, rel + clen - 1 do s.put(first + k - 1, nil, err) end
      else
        for k = rel, rel + clen - 1 do s.put(first + k - 1, vs[k]) end
      end
      rel = rel + clen
    end
  end
  job.on_fail = s.fail
  return s.start()
end

return M

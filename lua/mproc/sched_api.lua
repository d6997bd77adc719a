-- Public names of the waiting point and the coroutine scheduler: mp.sleep,
-- mp.run, mp.spawn, mp.poll, and the functions that wait for many results
-- (mp.wait, mp.as_completed, mp.gather) and mp.progress.
local sched = require "mproc.sched"
local compat = require "mproc.compat"
local util = require "mproc.util"
local result = require "mproc.result"
local progress = require "mproc.progress"

local errors = require "mproc.errors"

local pack, unpack = compat.pack, compat.unpack

local function sleep(seconds)
  util.check_timeout(seconds, 1, "sleep")
  return sched.sleep(seconds)
end

local function check_fn(fn, fname)
  if type(fn) ~= "function" then
    util.argerror(1, fname, "function expected, got "
      .. (fn == nil and "no value" or util.typename(fn)), 3)
  end
end

-- The spawned tasks of the running mp.run that failed: an error nobody
-- joined is written to stderr when the run ends instead of vanishing.
local failed = nil

local function report_unjoined(list)
  for i = 1, #list do
    local r = list[i]
    if not r._retrieved then
      io.stderr:write("mp.run: error in a task that was never joined: ",
        r._tb and errors.error_text(r._err) .. "\n" .. r._tb
        or errors.error_text(r._err), "\n")
    end
  end
end

-- mp.run(fn, ...) -> fn's values, once fn and every task it spawned ended.
local function run(fn, ...)
  check_fn(fn, "run")
  if sched.in_run() then error("mp.run cannot be nested", 2) end
  local mine = {}
  failed = mine
  local res = pack(pcall(sched.run, fn, ...))
  failed = nil
  report_unjoined(mine)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

-- mp.spawn(fn, ...) -> an AsyncResult (t:join() waits for the task).
local function spawn(fn, ...)
  check_fn(fn, "spawn")
  if not sched.in_run() then error("mp.spawn must be called inside mp.run", 2) end
  local r = result.new(nil)
  local list = failed
  sched.spawn(fn, pack(...), function(ok, ...)
    if ok then return r:_resolve(pack(...)) end
    local err, tb = ...
    r:_reject(err)  -- join re-raises the task's own error
    -- a SIGINT ends mp.run with that error: no need to report it again
    local interrupt = errors.is_error(err, "Interrupted")
      or (type(err) == "string" and err:find("interrupted!", 1, true))
    if list and not interrupt and not errors.is_error(err, "Cancelled") then
      r._tb = tb
      list[#list + 1] = r
    end
  end)
  return r
end

-- mp.poll(): lets busy pools make progress and runs the callbacks that are
-- due, without blocking.  Returns the number of callbacks that ran.
local function poll()
  sched.pump()
  local before = sched.pending_callbacks()
  sched.dispatch()
  return before - sched.pending_callbacks()
end

return {
  exports = {
    sleep = sleep, run = run, spawn = spawn, poll = poll,
    wait = result.wait, as_completed = result.as_completed, gather = result.gather,
    progress = progress.progress, AsyncResult = result.AsyncResult,
  },
}

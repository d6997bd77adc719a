-- Public names of the waiting point and the coroutine scheduler: mp.sleep,
-- mp.run, mp.spawn, mp.poll, and the functions that wait for many results
-- (mp.wait, mp.as_completed, mp.gather) and mp.progress.
local sched = require "mproc.sched"
local util = require "mproc.util"
local result = require "mproc.result"
local progress = require "mproc.progress"

local pack = table.pack

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

-- mp.run(fn, ...) -> fn's values, once fn and every task it spawned ended.
local function run(fn, ...)
  check_fn(fn, "run")
  return sched.run(fn, ...)
end

-- mp.spawn(fn, ...) -> an AsyncResult (t:join() waits for the task).
local function spawn(fn, ...)
  check_fn(fn, "spawn")
  if not sched.in_run() then error("mp.spawn must be called inside mp.run", 2) end
  local r = result.new(nil)
  sched.spawn(fn, pack(...), function(ok, ...)
    if ok then r:_resolve(pack(...))
    else r:_reject((...)) end  -- join re-raises the task's own error
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

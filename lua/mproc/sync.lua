-- Synchronisation primitives (API.md "Synchronisation").  The objects and
-- their fast paths are C (src/lua/lock.c, cond.c, methods straight in the
-- metatables); this module adds what waits in Lua: `M.block`, the waiting
-- point for shared objects, and the methods that orchestrate several C
-- steps (Condition:wait, wait_for, Barrier:wait), plus the by-reference
-- transfer.
local core = require "mproc.core"
local compat = require "mproc.compat"
local codec = require "mproc.codec"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"

local check, raise = errors.check, errors.raise
local check_timeout = util.check_timeout
local pcall = compat.pcall  -- the waits in it may yield (mp.run)

local M = {}

-- A wait on a shared object blocks in C for one slice at a time (the
-- slice of sched, the one waiting point).
M.SLICE = sched.SLICE

-- Calls step(obj, slice, arg) through sched.wait_shared until it reports
-- something or the timeout (seconds, nil: forever) runs out.  A step
-- returns nothing when its slice ran out, `false, kind, message` on
-- failure (raised) and anything else when done.  Returns the step's
-- results, or false after the timeout.  A SIGINT raises Interrupted.
function M.block(step, obj, timeout, arg)
  return sched.wait_shared(function(s) return step(obj, s, arg) end,
                           sched.deadline(timeout))
end

-- The slow path of x:guard([timeout]): acquire or raise Timeout.
local function guard_slow(obj, timeout)
  if not obj:acquire(timeout) then
    raise("Timeout", ("could not acquire the %s within %g s"):format(
      util.typename(obj):gsub("^mproc%.", ""), timeout))
  end
  return obj:_guard()
end

-- The slow paths the C methods hand over to (src/lua/sync.c): a wait that
-- would block, or failed, and a guard that could not be taken at once.
local function slow_block(obj, step, timeout) return M.block(step, obj, timeout) end
for _, tname in ipairs { "mproc.Lock", "mproc.RLock", "mproc.Semaphore", "mproc.Event",
                         "mproc.Condition", "mproc.Barrier" } do
  local methods = require("mproc.handover")(tname)
  methods._block, methods._guard_slow = slow_block, guard_slow
  methods._fail = errors.method_fail
end

-- {=====================================================================
-- Condition
-- ======================================================================

local Cond = core.class("mproc.Condition")

-- wait([timeout]) -> true when notified, false on timeout.  Releases the
-- lock (every level of an RLock) while waiting and takes it back after.
function Cond.wait(self, timeout)
  check_timeout(timeout, 1, "wait")
  local ticket = self:_enter()         -- raises unless we hold the lock
  local lock = self:_lock()
  local depth = lock:_release_save()
  local ok, got = pcall(M.block, self._step, self, timeout, ticket)
  if not (ok and got) then
    local late = self:_leave(ticket)    -- a notification that came anyway
    if ok and late then got = true end
  end
  -- take the lock back whatever happened (as Python does), then report
  while not lock:acquire(sched.SLICE) do end
  lock:_restore(depth)
  if not ok then error(got, 0) end
  return got == true
end

-- wait_for(pred [, timeout]) -> the last value of pred()
function Cond.wait_for(self, pred, timeout)
  util.check_type(pred, "function", 1, "wait_for")
  check_timeout(timeout, 2, "wait_for")
  local result = pred()
  local deadline = sched.deadline(timeout)
  while not result do
    local left = sched.remaining(deadline)
    if left and left <= 0 then break end
    self:wait(left)
    result = pred()
  end
  return result
end

local function Condition(lock)
  if lock == nil then lock = core.RLock() end
  local c = core.Condition(lock)
  return c
end

-- }=====================================================================

-- {=====================================================================
-- Barrier
-- ======================================================================

local Bar = core.class("mproc.Barrier")

-- wait([timeout]) -> arrival index 1..parties.  The last to arrive runs
-- the action (an error there breaks the barrier and is re-raised).  A
-- timeout breaks the barrier, as in Python.
function Bar.wait(self, timeout)
  check_timeout(timeout, 1, "wait")
  local action, default = self:_info()
  if timeout == nil then timeout = default end
  local index, gen, last = check(self:_arrive(action == nil))
  if last then
    if action ~= nil then
      local ok, err = pcall(action)
      if not ok then
        self:abort()
        error(err, 0)
      end
      self:_pass()
    end
    return index
  end
  if not M.block(self._step, self, timeout, gen) then
    self:abort()
    raise("BrokenBarrier", ("barrier wait timed out after %g s; the barrier is broken")
      :format(timeout))
  end
  return index
end

-- }=====================================================================

-- {=====================================================================
-- By reference through the codec
-- ======================================================================

local function attach(tname)
  return function(handle)
    return check(core.sync_attach(tname, handle))
  end
end

for _, tname in ipairs { "mproc.Lock", "mproc.RLock", "mproc.Semaphore", "mproc.Event" } do
  codec.reftype(tname, attach(tname))
end

-- Condition: its own handle, then its lock's ("|" never occurs in one).
codec.reftype("mproc.Condition", function(handle)
  local h, ltname, lh = handle:match("^([^|]*)|([^|]*)|(.*)$")
  if not h then raise("SerializeError", "malformed Condition handle") end
  local lock = check(core.sync_attach(ltname, lh))
  return check(core.sync_attach("mproc.Condition", h, lock))
end, function(c, c_encode)
  local tname, h = c_encode(c)
  local lock = c:_lock()
  local ltname, lh = getmetatable(lock).__mproc_encode(lock)
  return tname, h .. "|" .. ltname .. "|" .. lh
end)

-- Barrier: its handle, then its action encoded by the codec.  functions:
-- whether the message this handle came in may carry functions (false
-- under a plain mp.loads); the action is one.
codec.reftype("mproc.Barrier", function(handle, functions)
  local h, act = handle:match("^([^%z]*)%z(.*)$")
  local b = check(core.sync_attach("mproc.Barrier", h or handle))
  if act and b:_info() == nil then
    b:_set_action(codec.loads(act, { functions = functions == true }))
  end
  return b
end, function(b)
  local tname, h = b:_encode()
  local action = b:_info()
  if action ~= nil then return tname, h .. "\0" .. codec.dumps(action) end
  return tname, h
end)

-- }=====================================================================

M.exports = {
  Lock = core.Lock,
  RLock = core.RLock,
  Semaphore = core.Semaphore,
  BoundedSemaphore = core.BoundedSemaphore,
  Event = core.Event,
  Condition = Condition,
  Barrier = core.Barrier,
}

return M

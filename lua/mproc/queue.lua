-- Queue, JoinableQueue, SimpleQueue: shared-memory rings (src/core/queue.c).
-- The methods are C functions (src/lua/queue.c) so the common put/get costs
-- no Lua frame; when a call would block, C hands over to the slow paths
-- below, methods of the classes added through core.class, which wait
-- through sched.wait_shared (short slices in C, so SIGINT gets through;
-- inside mp.run only the calling task waits).  Failures reach `fail` as
-- a status and are raised from there.
local core = require "mproc.core"
local math_type = require("mproc.compat").math_type
local codec = require "mproc.codec"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"

local raise, check = errors.raise, errors.check
local deadline_of, remaining = sched.deadline, sched.remaining

-- Waits until the queue may be ready for `what` ("get", "put", "join") or
-- the deadline passes, through the one waiting point (sched.wait_shared:
-- q:_wait blocks in C for one slice at a time).
local function block(q, what, deadline)
  return sched.wait_shared(function(s)
    local ok, ready, msg, errno = q:_wait(what, s)
    if not ok then return false, ready, msg, errno end
    if ready then return true end
  end, deadline)
end

-- The failures of the C methods come here as a status: raised as mp.Error.
-- pushed: how many items of a put_many went in before the queue was full.
local function fail(_, kind, msg, errno, pushed)
  if pushed then raise(kind, msg, { put = pushed }) end
  check(false, kind, msg, errno)
end

-- put/put_many that found the queue full: `frames` holds the encoded rest.
local function slow_put(q, frames, timeout, pushed)
  local deadline = deadline_of(timeout)
  local pos, n, done = 1
  while true do
    pos, n, done = check(q:_put_frames(frames, pos))
    pushed = pushed + n
    if done then return end
    if remaining(deadline) == 0 then
      q:_discard(frames, pos)
      raise("Full", "queue is full", { put = pushed })
    end
    block(q, "put", deadline)
  end
end

local function slow_get(q, timeout, max)
  local deadline = deadline_of(timeout)
  while true do
    local ok, v, msg, errno = q:_try_get(max)
    if ok then return v end
    if v then check(false, v, msg, errno) end
    if remaining(deadline) == 0 then raise("Empty", "queue is empty") end
    block(q, "get", deadline)
  end
end

local function slow_join(q, timeout)
  local deadline = deadline_of(timeout)
  while q:_unfinished() > 0 do
    if remaining(deadline) == 0 then return false end
    block(q, "join", deadline)
  end
  return true
end

-- The slow paths the C methods hand over to (src/lua/queue.c).  A SIGINT
-- anywhere in one (in a slice, or between two) raises Interrupted: the
-- whole loop is protected, not only the waits.
local interruptible = errors.interruptible
for _, tname in ipairs { "mproc.Queue", "mproc.JoinableQueue", "mproc.SimpleQueue" } do
  local methods = require("mproc.handover")(tname)
  methods._fail = fail
  methods._slow_put, methods._slow_get = interruptible(slow_put), interruptible(slow_get)
  methods._slow_join = interruptible(slow_join)
end

-- maxsize: nil or an integer; <= 0 means unbounded (as in Python).
local function check_opts(fname, maxsize, opts)
  if maxsize ~= nil and math_type(maxsize) ~= "integer" then
    if type(maxsize) == "number" then
      util.argerror(1, fname, "number has no integer representation", 2)
    end
    util.argerror(1, fname, "number expected, got " .. util.typename(maxsize), 2)
  end
  local ring
  if opts ~= nil then
    if type(opts) ~= "table" then
      util.argerror(2, fname, "table expected, got " .. util.typename(opts), 2)
    end
    ring = opts.ring_size
    if ring ~= nil and (math_type(ring) ~= "integer" or ring < 0) then
      util.argerror(2, fname, "ring_size must be a non-negative integer", 2)
    end
  end
  return ring
end

local function Queue(maxsize, opts)
  local ring = check_opts("Queue", maxsize, opts)
  return check(core.queue_new("Queue", maxsize, ring))
end

local function JoinableQueue(maxsize, opts)
  local ring = check_opts("JoinableQueue", maxsize, opts)
  return check(core.queue_new("JoinableQueue", maxsize, ring))
end

local function SimpleQueue()
  return check(core.queue_new("SimpleQueue"))
end

-- Queues travel by reference: the codec sends the ring's name and the
-- receiver attaches it.
local function attach(handle) return check(core.queue_attach(handle)) end
for _, tname in ipairs { "mproc.Queue", "mproc.JoinableQueue", "mproc.SimpleQueue" } do
  codec.reftype(tname, attach)
end

return {
  exports = { Queue = Queue, JoinableQueue = JoinableQueue, SimpleQueue = SimpleQueue },
}

-- mp.Pipe (API.md "Queues and pipes").  A Pipe end is a C userdata
-- ("mproc.Conn", src/lua/pipe.c) whose private methods never block; the
-- public methods below add the waiting, always through sched.wait_fd (the
-- one waiting point), and turn failures into mp.Error objects.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"

local Conn = core.class("mproc.Conn")
local check = errors.check
local wait_fd, deadline = sched.wait_fd, sched.deadline
local poll_fd = core.poll_fd
local argerror, typename = util.argerror, util.typename
local tointeger, mtype = compat.tointeger, compat.math_type

-- The C steps carry the public names, so that a bad `self` reads
-- "bad argument #1 to 'send' (mproc.Conn expected, got number)".
local send, send_bytes, flush = Conn._send, Conn._send_bytes, Conn._flush
local recv, pollfd = Conn._recv, Conn._pollfd

-- Raises the failure `false, kind, message [, errno]` of a C step.
local function fail(kind, message, err)
  return check(false, kind, message, err)
end

-- An integer argument (nil gives `default`).
local function intarg(v, n, fname, default)
  if v == nil then return default end
  local i = tointeger(v)
  if i then return i end
  argerror(n, fname, mtype(v) and "number has no integer representation"
    or ("number expected, got " .. typename(v)), 3)
end

-- Finishes a send: a C step returns `true, done, fd, again` (the shape of
-- both Conn bindings) and must wait for the socket unless done; `again`:
-- an older interrupted frame was still in the way and `retry` must be
-- called again.
local function finish(self, ok, a, b, c, retry, ...)
  while ok and not a do
    wait_fd(b, "w", nil)
    if c then ok, a, b, c = retry(self, ...) else ok, a, b, c = flush(self) end
  end
  if not ok then fail(a, b, c) end
end

function Conn:send(v)
  local ok, a, b, c = send(self, v)
  if ok and a then return end
  finish(self, ok, a, b, c, send, v)
end

-- offset: bytes of s to skip (0-based, as in Python); size: bytes to send.
function Conn:send_bytes(s, offset, size)
  if type(s) ~= "string" then
    argerror(1, "send_bytes", "string expected, got " .. (s == nil and "no value" or typename(s)))
  end
  local len = #s
  offset = intarg(offset, 2, "send_bytes", 0)
  if offset < 0 or offset > len then argerror(2, "send_bytes", "offset out of range") end
  size = intarg(size, 3, "send_bytes", len - offset)
  if size < 0 or size > len - offset then argerror(3, "send_bytes", "size out of range") end
  local ok, a, b, c = send_bytes(self, s, offset, size)
  if ok and a then return end
  finish(self, ok, a, b, c, send_bytes, s, offset, size)
end

local function receive(self, raw, maxlen)
  local ok, a, b, c = recv(self, raw, maxlen)
  while ok and not a do  -- nothing yet: b is the descriptor to wait for
    wait_fd(b, "r", nil)
    ok, a, b, c = recv(self, raw, maxlen)
  end
  if ok then return b end
  return fail(a, b, c)
end

function Conn:recv()
  return receive(self, false)
end

function Conn:recv_bytes(maxlen)
  maxlen = intarg(maxlen, 1, "recv_bytes", nil)
  if maxlen and maxlen < 0 then argerror(1, "recv_bytes", "maxlen must be >= 0") end
  return receive(self, true, maxlen)
end

-- Unlike every other timeout, poll's defaults to 0 (as in Python).
function Conn:poll(timeout)
  local fd = pollfd(self)
  if timeout == nil or timeout == 0 then return poll_fd(fd, "r", 0) end
  util.check_timeout(timeout, 1, "poll")
  return wait_fd(fd, "r", deadline(timeout))
end

local function Pipe(duplex)
  if duplex == nil then
    duplex = true
  elseif type(duplex) ~= "boolean" then
    argerror(1, "Pipe", "boolean expected, got " .. typename(duplex))
  end
  return check(core.pipe_new(duplex))
end

-- A Pipe end reaches another process by reference (docs/pipe.md, "How a
-- Pipe end travels"): a forked child that inherited it gets the very
-- object (the codec's id table) or a dup of the inherited descriptor; a
-- process that receives it through a pipe gets the descriptor that
-- travelled with the frame (SCM_RIGHTS, collected by _recv); one that
-- receives it through a queue or a pool claims the copy the sender
-- deposited with the descriptor broker (the tree's tracker process).
if core.codec_register_reftype then
  local attach, drop = core.pipe_attach, core.pipe_drop
  core.codec_register_reftype("Pipe", function(handle)
    local c, why = attach(handle)
    if c then return c end
    error(why, 0)
  end, drop)
end

return { Conn = Conn, exports = { Pipe = Pipe } }

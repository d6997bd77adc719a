-- Error objects (API.md "Conventions").  The C core returns runtime failures
-- as `false, kind, message [, errno]`; this module turns them into raised
-- mp.Error tables.  Programmer mistakes stay plain strings (argerror style).
local compat = require "mproc.compat"

local Error = {}
Error.__name = "mproc.Error"

local KINDS = {
  Empty = true, Full = true, Timeout = true, EOF = true, Closed = true,
  SerializeError = true, TaskError = true, WorkerLost = true,
  BrokenBarrier = true, Cancelled = true, AuthenticationError = true,
  RemoteError = true, OSError = true, CalledProcessError = true,
  Interrupted = true,
}

function Error.__tostring(e)
  return e.kind .. ": " .. e.message
end

-- Makes an error object; `fields` (optional) adds traceback, value, errno...
local function new(kind, message, fields)
  assert(KINDS[kind], "unknown error kind")
  local e = {}
  if fields then for k, v in pairs(fields) do e[k] = v end end
  e.kind, e.message = kind, message
  return setmetatable(e, Error)
end

local function raise(kind, message, fields)
  error(new(kind, message, fields), 0)
end

local function is_error(v, kind)
  return getmetatable(v) == Error and (kind == nil or v.kind == kind)
end

-- check(ok, ...): passes a success through (its values minus the status)
-- and raises the failure `false, kind, message [, errno]`.
local function fail(kind, message, err)
  raise(kind, message, err and { errno = err } or nil)
end

local function check(ok, ...)
  if ok then return ... end
  return fail(...)
end

-- The classes of the bindings get this as their `_fail` method (through
-- core.class): a C method hands a runtime failure over to it as
-- obj:_fail(kind, message [, errno]).
local function method_fail(_, kind, message, err)
  return fail(kind, message, err)
end

-- lua.c's SIGINT handler sets a hook that raises the string "interrupted!"
-- at the next call or return: for a blocking C wait, its return.  A wait
-- wrapped here reports that as an Interrupted error (API.md) instead.
local function pass(ok, ...)
  if ok then return ... end
  local e = ...
  if type(e) == "string" and e:find("interrupted!", 1, true) then
    raise("Interrupted", "interrupted by SIGINT while waiting")
  end
  error(e, 0)
end

local pcall = compat.pcall  -- a wait may yield its task (mp.run): Lua 5.1 needs the help
local function interruptible(fn)
  return function(...) return pass(pcall(fn, ...)) end
end
-- LuaJIT runs no hook when a C function returns: the SIGINT hook fires at
-- the next Lua instruction, which must still be inside the pcall.
if compat.luajit then
  local function settle(...) return ... end
  local function step(fn, ...) return settle(fn(...)) end
  interruptible = function(fn)
    return function(...) return pass(pcall(step, fn, ...)) end
  end
end

-- The text of any error value, for a traceback or a message.
local function error_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return ("(error object is a %s value)"):format(type(e))
end

-- An xpcall handler for the code mproc runs on a user's behalf (a child's
-- target, a pool task): the traceback, cut where mproc's own frames begin.
-- `level` (default 2, the raising function) is for handlers that call it.
local XPCALL = "\n[^\n]*%[C%]: in function 'xpcall'"
-- Lua 5.1: compat.xpcall passes the arguments by a tail call, just above it
local wrapped = compat.xpcall ~= xpcall
local WRAPPED = "\n[^\n]*%(tail call%): %?" .. XPCALL
local function traceback(e, level)
  local tb = debug.traceback(error_text(e), level or 2)
  local cut = (wrapped and tb:find(WRAPPED)) or tb:find(XPCALL)
  if cut then tb = tb:sub(1, cut - 1) end
  return tb
end

-- The xpcall handler for code run on a user's behalf whose error travels
-- (a pool task, a manager call): keeps the value and its traceback, {e, tb}.
local function catch(e)
  return { e, traceback(e, 3) }
end

return {
  Error = Error, new = new, raise = raise, is_error = is_error, check = check,
  interruptible = interruptible, error_text = error_text, traceback = traceback,
  catch = catch, method_fail = method_fail,
  exports = { Error = Error, is_error = is_error },
}

-- mproc.handover: core.class(tname) for the classes whose C methods hand
-- over to a Lua slow path (queues, locks and the other sync objects).
--
-- A C method whose call would block calls a Lua method of its class (a
-- slow path that waits, possibly yielding inside mp.run); one that failed
-- hands the failure to the class's `_fail` (src/lua/mproc.c,
-- mproc_handover).  Lua 5.3 and 5.4 make that call from C with lua_callk,
-- which may yield.  Lua 5.1 and LuaJIT cannot yield across a C call: there
-- the C method returns instead core.HANDOVER, the slow path, the object
-- and the arguments, and the wrapper put here around each C method makes
-- the call, a tail call in Lua.  Where core.HANDOVER is nil (5.3, 5.4) the
-- methods stay as they are.
local core = require "mproc.core"

local class = core.class
local HANDOVER = core.HANDOVER

if HANDOVER == nil then return class end

local getinfo, pcall, error, type, pairs = debug.getinfo, pcall, error, type, pairs
local tonumber, match = tonumber, string.match

-- A C method called through the wrapper (by pcall) has no name of its own
-- in an argument error ("bad argument #2 to '?'"), and its luaL_error has
-- no position: both as 5.4 gives them for a direct call.  A bad argument
-- #1 (self) keeps its number, as in 5.4 for q.put(x); the others are of a
-- method call, q:put(x), self not counted.
local function where()
  local level = 4               -- above where, rename and finish
  while true do
    local info = getinfo(level, "Sl")
    if info == nil then return "" end
    if info.what ~= "tail" then
      if info.currentline > 0 then return info.short_src .. ":" .. info.currentline .. ": " end
      return ""
    end
    level = level + 1
  end
end

local function rename(e, name)
  if type(e) ~= "string" or match(e, "^[^%s:]+:%d+: ") then return e end
  local n, rest = match(e, "^bad argument #(%d+) to '%?' (.*)$")
  if n ~= nil then
    n = tonumber(n)
    if n > 1 then n = n - 1 end
    e = "bad argument #" .. n .. " to '" .. name .. "' " .. rest
  end
  return where() .. e
end

local function call(fn, ...)
  return fn(...)
end

local function finish(name, ok, first, ...)
  if not ok then error(rename(first, name), 0) end
  if first == HANDOVER then return call(...) end
  return first, ...
end

local function wrap(name, cfn)
  return function(...)
    return finish(name, pcall(cfn, ...))
  end
end

-- The C methods that never hand over (src/lua/queue.c, lock.c, cond.c;
-- a failure they meet reaches `_fail` through mproc_raise_errno, a plain
-- call from C on every VM): left bare, so that they cost no Lua frame on
-- 5.1/LuaJIT either.  Every other C method is wrapped, so a method added
-- later is safe by default.
local BARE = {}
for name in ([[release close get_value set clear is_set notify notify_all reset abort
               qsize empty full task_done _release_save _restore _is_mine _guard _lock
               _enter _leave _step _arrive _pass _info _set_action _encode _put_frames
               _discard _try_get _wait _unfinished]]):gmatch("%S+") do
  BARE[name] = true
end

-- class(tname) -> methods, metatable, as core.class, the C methods that may
-- hand over wrapped (once: a wrapper is a Lua function).
return function(tname)
  local methods, mt = class(tname)
  for name, fn in pairs(methods) do
    if not BARE[name] and type(fn) == "function" and getinfo(fn, "S").what == "C" then
      methods[name] = wrap(name, fn)
    end
  end
  return methods, mt
end

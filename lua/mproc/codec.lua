-- The value codec (docs/values.md): mp.dumps, mp.loads, mp.register.
-- The work is done in C (src/lua/codec.c); this module checks arguments and
-- turns the C side's `false, "SerializeError", msg` into raised mp.Error.
local core = require "mproc.core"
local errors = require "mproc.errors"
local util = require "mproc.util"

local c_dumps, c_loads = core.codec_dumps, core.codec_loads
local raise, argerror, typename = errors.raise, util.argerror, util.typename

local M = {}

-- encode(v [, root]) -> string; raises SerializeError whose message names
-- the path of the offending value from `root` ("value" by default).
function M.encode(v, root)
  local ok, s, msg = c_dumps(v, root)
  if ok then return s end
  raise(s, msg)
end

-- decode(s [, nofuncs [, require]]) -> value; raises SerializeError.
-- require: a module met by name that is not loaded is required (a
-- process started with the spawn method rebuilds its target so).
function M.decode(s, nofuncs, req)
  local ok, v, msg = c_loads(s, nofuncs, req)
  if ok then return v end
  raise(v, msg)
end

-- mp.dumps(v) and mp.loads(s [, opts]) are C closures (no Lua call in
-- between: they are on every message's path); they raise SerializeError
-- through errors.raise and check their arguments like the wrappers here.
local dumps, loads = core.codec_functions(raise)

-- (LuaJIT's FFI cdata travels by name only: it may be registered too)
local IDENTITY = { table = true, ["function"] = true, userdata = true, thread = true, cdata = true }

local function register(name, value)
  if type(name) ~= "string" then
    argerror(1, "register", "string expected, got "
      .. (name == nil and "no value" or typename(name)))
  end
  if name == "" then argerror(1, "register", "name must not be empty") end
  if not IDENTITY[type(value)] then
    argerror(2, "register", "table, function or userdata expected, got "
      .. (value == nil and "no value" or typename(value)))
  end
  if M.before_register then M.before_register(name) end
  core.codec_register(name, value)
  return value
end

-- For the modules that define mproc objects: fn(handle) rebuilds an object
-- of `typename` sent by reference from another process; seen(handle), if
-- given, hears of a handle of an object this process knows already.
function M.register_reftype(name, fn, seen)
  core.codec_register_reftype(name, fn, seen)
end

-- The by-reference transfer of a class of the bindings, both directions in
-- one place: decode(handle, functions) rebuilds an object sent from another
-- process (functions: whether its message may carry functions); encode(obj)
-- -> typename, handle, when given, replaces the binding's own encoder (its
-- C one is passed as the second argument, to build on).
function M.reftype(tname, decode, encode)
  if encode then
    local _, mt = core.class(tname)
    local c_encode = mt.__mproc_encode
    mt.__mproc_encode = function(obj) return encode(obj, c_encode) end
  end
  core.codec_register_reftype(tname, decode)
end

-- pool.lua sets this: a name registered while a pool runs would be
-- unknown to its workers, forked before.
M.before_register = nil

M.dumps, M.loads, M.register = dumps, loads, register
M.exports = { dumps = dumps, loads = loads, register = register }
return M

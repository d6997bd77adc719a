-- Shared data (API.md "Shared memory"): Value, Array and SharedMemory.
-- The objects are C (src/lua/shared.c); this module adds argument idiom, the
-- runtime-error conversion of SharedMemory and the by-reference transfer.
local core = require "mproc.core"
local codec = require "mproc.codec"
local errors = require "mproc.errors"
local util = require "mproc.util"

local check = errors.check

local M = {}

-- SharedMemory{create = true, size = n [, name = s]} or {name = s}
local SHM_OPTS = { create = true, size = true, name = true }
local function SharedMemory(...)
  local opts = ...
  if type(opts) == "table" then util.check_opts(opts, SHM_OPTS, "SharedMemory", 1) end
  local s = check(core.SharedMemory(...))
  return s
end

-- Runtime failures of the C methods come back as a status, raised here.
for _, tname in ipairs { "mproc.Value", "mproc.Array", "mproc.SharedMemory" } do
  core.class(tname)._fail = errors.method_fail
end

local function attach(tname)
  return function(handle)
    return check(core.shared_attach(tname, handle))
  end
end
codec.reftype("mproc.Value", attach("mproc.Value"))
codec.reftype("mproc.Array", attach("mproc.Array"))

-- In this process (or a fork child of it) the same name gives the same
-- object; elsewhere the segment is attached by name.
local by_name = setmetatable({}, { __mode = "v" })
codec.reftype("mproc.SharedMemory", function(name)
  local s = by_name[name]
  if s and not s:_closed() then return s end
  return check(core.SharedMemory({ name = name }))
end, function(s, c_encode)
  local tname, name = c_encode(s)
  by_name[name] = s
  return tname, name
end)

M.exports = {
  Value = core.Value,
  Array = core.Array,
  SharedMemory = SharedMemory,
}

return M

-- Managers (lua/mproc/manager.lua): the objects a manager's server owns.
local errors = require "mproc.errors"
local compat = require "mproc.compat"

local raise = errors.raise
local math_type, tmove = compat.math_type, compat.move

local M = {}

M.BLOCK = "\0mproc-would-block"  -- what a parked method returns
local BLOCK = M.BLOCK

-- {=====================================================================
-- Server-side objects.  Plain Lua; methods return BLOCK when they would
-- block, and `_expire[method]` gives the answer when the wait timed out.
-- Their metatables are module fields so they travel by name.
-- ======================================================================

local function class(typeid, methods)
  methods._typeid = typeid
  methods.__index = methods
  methods.__name = "mproc.manager." .. typeid
  methods._expire = methods._expire or {}
  methods._timeout_arg = methods._timeout_arg or {}
  return methods
end

local SDict = class("dict", {})
function SDict:__getitem(k) return self.t[k] end
function SDict:__setitem(k, v)
  if k == nil then error("dict key must not be nil", 0) end
  if self.t[k] == nil and v ~= nil then self.n = self.n + 1
  elseif self.t[k] ~= nil and v == nil then self.n = self.n - 1 end
  self.t[k] = v
end
function SDict:get(k, default)
  local v = self.t[k]
  if v == nil then return default end
  return v
end
function SDict:len() return self.n end
function SDict:items()
  local out, i = {}, 0
  for k, v in pairs(self.t) do i = i + 1; out[i] = { k, v } end
  out.n = i
  return out
end
function SDict:keys()
  local out, i = {}, 0
  for k in pairs(self.t) do i = i + 1; out[i] = k end
  out.n = i
  return out
end
function SDict:values()
  local out, i = {}, 0
  for _, v in pairs(self.t) do i = i + 1; out[i] = v end
  out.n = i
  return out
end
function SDict:copy()
  local out = {}
  for k, v in pairs(self.t) do out[k] = v end
  return out
end
function SDict:pop(k, default)
  local v = self.t[k]
  if v == nil then return default end
  self:__setitem(k, nil)
  return v
end
function SDict:setdefault(k, default)
  if self.t[k] == nil then self:__setitem(k, default) end
  return self.t[k]
end
function SDict:update(t)
  for k, v in pairs(t) do self:__setitem(k, v) end
end
function SDict:clear() self.t, self.n = {}, 0 end
function SDict:has(k) return self.t[k] ~= nil end
M._SDict = SDict

local SList = class("list", {})
local function list_index(self, i, extra)
  if math_type(i) ~= "integer" then error("list index must be an integer", 0) end
  if i < 0 then i = self.n + 1 + i end
  if i < 1 or i > self.n + (extra or 0) then error("list index out of range", 0) end
  return i
end
function SList:__getitem(i)
  if math_type(i) ~= "integer" then return nil end
  if i < 0 then i = self.n + 1 + i end
  return self.t[i]
end
function SList:__setitem(i, v)
  i = list_index(self, i, 1)
  self.t[i] = v
  if i > self.n then self.n = i end
end
function SList:len() return self.n end
function SList:append(v) self.n = self.n + 1; self.t[self.n] = v end
function SList:extend(list)
  for i = 1, list.n or #list do self:append(list[i]) end
end
function SList:insert(i, v)
  i = list_index(self, i, 1)
  tmove(self.t, i, self.n, i + 1)
  self.t[i] = v
  self.n = self.n + 1
end
function SList:pop(i)
  if self.n == 0 then error("pop from empty list", 0) end
  i = list_index(self, i or self.n)
  local v = self.t[i]
  tmove(self.t, i + 1, self.n + 1, i)
  self.n = self.n - 1
  return v
end
function SList:index(v)
  for i = 1, self.n do if self.t[i] == v then return i end end
  return nil
end
function SList:remove(v)
  local i = self:index(v)
  if not i then error("list.remove(x): x not in list", 0) end
  self:pop(i)
end
function SList:count(v)
  local c = 0
  for i = 1, self.n do if self.t[i] == v then c = c + 1 end end
  return c
end
function SList:sort() table.sort(self.t) end
function SList:clear() self.t, self.n = {}, 0 end
function SList:totable() return tmove(self.t, 1, self.n, 1, { n = self.n }) end
M._SList = SList

local SNamespace = class("Namespace", {})
function SNamespace:__getitem(k) return self.t[k] end
function SNamespace:__setitem(k, v) self.t[k] = v end
function SNamespace:totable()
  local out = {}
  for k, v in pairs(self.t) do out[k] = v end
  return out
end
M._SNamespace = SNamespace

local SQueue = class("Queue", { _timeout_arg = { get = 1, put = 2 } })
function SQueue:qsize() return self.tail - self.head end
function SQueue:empty() return self.tail == self.head end
function SQueue:full() return self.maxsize > 0 and self:qsize() >= self.maxsize end
function SQueue:put(v)
  if self:full() then return BLOCK end
  self.items[self.tail] = v
  self.tail = self.tail + 1
  self.unfinished = self.unfinished + 1
end
function SQueue:get()
  if self.head == self.tail then return BLOCK end
  local v = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  return v
end
function SQueue:put_nowait(v)
  if self:full() then raise("Full", "queue is full") end
  return SQueue.put(self, v)
end
function SQueue:get_nowait()
  if self:empty() then raise("Empty", "queue is empty") end
  return SQueue.get(self)
end
function SQueue:task_done()
  if self.unfinished <= 0 then error("task_done() called too many times", 0) end
  self.unfinished = self.unfinished - 1
end
function SQueue:join()
  if self.unfinished > 0 then return BLOCK end
  return true
end
SQueue._timeout_arg.join = 1
SQueue._expire.get = function() raise("Empty", "queue is empty") end
SQueue._expire.put = function() raise("Full", "queue is full") end
SQueue._expire.join = function() return false end
M._SQueue = SQueue

local SLock = class("Lock", { _timeout_arg = { acquire = 1 } })
function SLock:acquire()
  if self.locked then return BLOCK end
  self.locked = true
  return true
end
function SLock:release()
  if not self.locked then error("release unlocked lock", 0) end
  self.locked = false
end
SLock._expire.acquire = function() return false end
M._SLock = SLock

local SEvent = class("Event", { _timeout_arg = { wait = 1 } })
function SEvent:set() self.flag = true end
function SEvent:clear() self.flag = false end
function SEvent:is_set() return self.flag end
function SEvent:wait()
  if not self.flag then return BLOCK end
  return true
end
SEvent._expire.wait = function() return false end
M._SEvent = SEvent

local INT_TYPES = {
  int8 = true, int16 = true, int32 = true, int64 = true, uint8 = true, uint16 = true,
  uint32 = true, uint64 = true, b = true, B = true, h = true, H = true, i = true,
  I = true, l = true, L = true, q = true, Q = true,
}
local FLOAT_TYPES = { float = true, double = true, f = true, d = true }

local SValue = class("Value", {})
local function value_conv(self, x)
  if self.kind == "bool" then return not not x end
  if type(x) ~= "number" then error("number expected, got " .. type(x), 0) end
  if self.kind == "int" then
    local i = compat.tointeger(x)
    if not i then error("integer expected", 0) end
    return i
  end
  return x + 0.0
end
function SValue:get() return self.v end
function SValue:set(x) self.v = value_conv(self, x) end
function SValue:add(n)
  self.v = value_conv(self, self.v + n)
  return self.v
end
function SValue:cas(old, new)
  if self.v ~= old then return false end
  self.v = value_conv(self, new)
  return true
end
M._SValue = SValue

-- Constructors of the built-in types, by typeid.
local TYPES = {
  dict = function(t)
    local d = setmetatable({ t = {}, n = 0 }, SDict)
    if t ~= nil then d:update(t) end
    return d
  end,
  list = function(t)
    local l = setmetatable({ t = {}, n = 0 }, SList)
    if t ~= nil then l:extend(t) end
    return l
  end,
  Namespace = function(t)
    local ns = setmetatable({ t = {} }, SNamespace)
    if t ~= nil then for k, v in pairs(t) do ns.t[k] = v end end
    return ns
  end,
  Queue = function(maxsize)
    return setmetatable({ items = {}, head = 1, tail = 1, maxsize = maxsize or 0,
                          unfinished = 0 }, SQueue)
  end,
  Lock = function() return setmetatable({ locked = false }, SLock) end,
  Event = function() return setmetatable({ flag = false }, SEvent) end,
  Value = function(typ, init)
    local kind = (typ == "bool" or typ == "?") and "bool" or INT_TYPES[typ] and "int"
      or FLOAT_TYPES[typ] and "float"
    if not kind then error(("unknown Value type '%s'"):format(tostring(typ)), 0) end
    local v = setmetatable({ kind = kind, typ = typ }, SValue)
    v.v = value_conv(v, init == nil and (kind == "bool" and false or 0) or init)
    return v
  end,
}
TYPES.JoinableQueue = TYPES.Queue
M._TYPES = TYPES

-- }=====================================================================

return M

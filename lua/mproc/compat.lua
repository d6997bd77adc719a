-- What Lua 5.1, LuaJIT 2.1 and Lua 5.3 lack of 5.4 (issue 18, API.md "Lua
-- versions"), in one place.  Where the VM has a function, the entry IS that
-- function (same behaviour, same speed); otherwise a replacement that gives
-- the 5.4 result for the values mproc passes.  Nothing here sets a global or
-- changes the standard library: modules take local aliases.
--
-- Before 5.3 every number is a float: an integral one within 2^53 counts as
-- an integer (math_type), as lua-compat-5.3 does.
local G = _G
local floor = math.floor
local select, type, tonumber, error = select, type, tonumber, error
local co_running, co_create, co_resume, co_yield, co_status =
  coroutine.running, coroutine.create, coroutine.resume, coroutine.yield, coroutine.status

local M = {}

M.luajit = type(rawget(G, "jit")) == "table"
-- Lua 5.1 proper (not LuaJIT): no yield across pcall, no xpcall arguments
local puc51 = _VERSION == "Lua 5.1" and not M.luajit

-- {=====================================================================
-- Tables
-- ======================================================================

M.unpack = table.unpack or rawget(G, "unpack")
local unpack = M.unpack

M.pack = table.pack or function(...)
  return { n = select("#", ...), ... }
end
local pack = M.pack

-- table.move(a1, f, e, t [, a2]) of 5.3: overlapping ranges of one table
-- are copied in the order that keeps the source intact.
M.move = table.move or function(a1, f, e, t, a2)
  a2 = a2 or a1
  if e >= f then
    if t > e or t <= f or a1 ~= a2 then
      for i = 0, e - f do a2[t + i] = a1[f + i] end
    else
      for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
    end
  end
  return a2
end

-- }=====================================================================

-- {=====================================================================
-- Numbers
-- ======================================================================

local EXACT = 2 ^ 53  -- beyond it a double does not hold every integer

M.math_type = math.type or function(x)
  if type(x) ~= "number" then return nil end
  if x == floor(x) and x >= -EXACT and x <= EXACT then return "integer" end
  return "float"
end
local math_type = M.math_type

M.tointeger = math.tointeger or function(x)
  if type(x) == "string" then x = tonumber(x) end
  if math_type(x) == "integer" then return x end
  return nil
end

-- a // b: the operator itself where the VM has it (compiled from a string,
-- so this file parses everywhere), else floor(a / b).
M.idiv = math.type and load("return function(a, b) return a // b end")()
  or function(a, b) return floor(a / b) end

-- }=====================================================================

-- {=====================================================================
-- Strings: string.pack/unpack for the big-endian formats mproc uses
-- (">I4", ">s4", ">s4s4"...)
-- ======================================================================

local char, byte, sub = string.char, string.byte, string.sub

local function be4(n)
  if n < 0 or n >= 2 ^ 32 or n ~= floor(n) then
    error("bad argument to 'pack' (integer overflow)", 3)
  end
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function items(fmt)
  if sub(fmt, 1, 1) ~= ">" then error("compat: only big-endian formats are supported", 3) end
  local list = {}
  for code in fmt:sub(2):gmatch("%a%d*") do
    if code ~= "I4" and code ~= "s4" then
      error("compat: format '" .. code .. "' not supported", 3)
    end
    list[#list + 1] = code
  end
  return list
end

M.spack = string.pack or function(fmt, ...)
  local list, out = items(fmt), {}
  for i = 1, #list do
    local v = select(i, ...)
    if list[i] == "I4" then out[i] = be4(v)
    else out[i] = be4(#v) .. v end
  end
  return table.concat(out)
end

M.sunpack = string.unpack or function(fmt, s, pos)
  local list, out = items(fmt), {}
  pos = pos or 1
  for i = 1, #list do
    if pos + 3 > #s then error("bad argument #2 to 'unpack' (data string too short)", 2) end
    local a, b, c, d = byte(s, pos, pos + 3)
    local n = ((a * 256 + b) * 256 + c) * 256 + d
    pos = pos + 4
    if list[i] == "I4" then out[i] = n
    else
      if pos + n - 1 > #s then error("bad argument #2 to 'unpack' (data string too short)", 2) end
      out[i] = sub(s, pos, pos + n - 1)
      pos = pos + n
    end
  end
  out[#list + 1] = pos
  return unpack(out, 1, #list + 1)
end

-- Bitwise xor of two bytes in arithmetic (no ~ before 5.3).
local function bxor8(a, b)
  local r, bit = 0, 1
  for _ = 1, 8 do
    if a % 2 ~= b % 2 then r = r + bit end
    a, b, bit = (a - a % 2) / 2, (b - b % 2) / 2, bit * 2
  end
  return r
end
M.bxor8 = bxor8

-- FNV-1a, 64 bits, of s as 16 hex digits, the same on every VM: the
-- integer operators where the VM has them; before 5.3 the hash in two
-- 32-bit halves (every step exact in a double).
M.fnv1a64 = math.type and load([[
  local byte = string.byte
  return function(s)
    local h = -3750763034362895579   -- 0xcbf29ce484222325
    for i = 1, #s do h = (h ~ byte(s, i)) * 1099511628211 end
    return ("%016x"):format(h)
  end]])() or function(s)
  local hi, lo = 0xcbf29ce4, 0x84222325
  for i = 1, #s do
    local low = lo % 256
    lo = lo - low + bxor8(low, byte(s, i))
    -- times 2^40 + 435, modulo 2^64
    local m = lo * 435
    local carry = floor(m / 4294967296)
    hi = (hi * 435 + carry + (lo % 16777216) * 256) % 4294967296
    lo = m % 4294967296
  end
  return ("%08x%08x"):format(hi, lo)
end

-- }=====================================================================

-- {=====================================================================
-- Calls and coroutines
-- ======================================================================

-- Lua 5.1 cannot yield across pcall.  There a protected call made inside a
-- coroutine runs in a coroutine of its own whose yields are passed on to
-- the caller's, so a wait inside mp.run still suspends the task; `outer`
-- maps such a helper coroutine to its caller's, for M.running.
local outer = setmetatable({}, { __mode = "k" })

local function relay(co, ok, ...)
  if not ok then return false, ... end
  if co_status(co) == "dead" then return true, ... end
  return relay(co, co_resume(co, co_yield(...)))
end

M.pcall = pcall
if puc51 then
  M.pcall = function(f, ...)
    local caller = co_running()
    if caller == nil then return pcall(f, ...) end
    local fn = f
    if type(fn) ~= "function" then fn = function(...) return f(...) end end  -- callable or not
    local co = co_create(fn)
    outer[co] = caller
    return relay(co, co_resume(co, ...))
  end
end

-- xpcall(f, handler, ...): 5.1 passes no arguments to f.
M.xpcall = xpcall
if puc51 then
  M.xpcall = function(f, handler, ...)
    if select("#", ...) == 0 then return xpcall(f, handler) end
    local args = pack(...)
    return xpcall(function() return f(unpack(args, 1, args.n)) end, handler)
  end
end

-- The running coroutine (nil in the main thread before 5.2; a protected
-- call's helper coroutine counts as its caller's).
M.running = co_running
if puc51 then
  M.running = function()
    local co = co_running()
    while outer[co] do co = outer[co] end
    return co
  end
end

-- coroutine.close (5.4): before it a suspended coroutine has no pending
-- to-be-closed variables to run: it is only dropped, and the result is
-- true (a dead coroutine's error is not kept there).
M.coclose = coroutine.close or function(co)
  local st = co_status(co)
  if st == "running" or st == "normal" then error("cannot close a " .. st .. " coroutine", 2) end
  return true
end

-- load(chunk [, name [, mode [, env]]]) of 5.2+.
M.load = load
if puc51 then
  local loadstring, setfenv = rawget(G, "loadstring"), rawget(G, "setfenv")
  M.load = function(chunk, name, mode, env)
    local f, err
    if type(chunk) == "string" then
      local binary = byte(chunk, 1) == 27
      if mode and not mode:find(binary and "b" or "t", 1, true) then
        return nil, ("attempt to load a %s chunk (mode is '%s')")
          :format(binary and "binary" or "text", mode)
      end
      f, err = loadstring(chunk, name)
    else
      f, err = load(chunk, name)
    end
    if f and env ~= nil then setfenv(f, env) end
    return f, err
  end
end

-- }=====================================================================

-- {=====================================================================
-- The interpreter and its modules
-- ======================================================================

local version = _VERSION:match("%d+%.%d+")
-- the usual command of this VM, and the variables a fresh one reads its
-- package.path and cpath from (5.1 and LuaJIT: no versioned names)
M.interpreter = M.luajit and "luajit" or "lua" .. version
if version == "5.1" then
  M.PATH_VAR, M.CPATH_VAR = "LUA_PATH", "LUA_CPATH"
else
  local v = version:gsub("%.", "_")
  M.PATH_VAR, M.CPATH_VAR = "LUA_PATH_" .. v, "LUA_CPATH_" .. v
end

-- package.searchpath (5.2+, LuaJIT 2.1): the first file of the path
-- template list that can be opened, or nil and the names tried.
M.searchpath = package.searchpath or function(name, path, sep, rep)
  sep, rep = sep or ".", rep or "/"
  if sep ~= "" then name = name:gsub("%" .. sep, (rep:gsub("%%", "%%%%"))) end
  local tried = {}
  for template in path:gmatch("[^;]+") do
    local file = template:gsub("%?", (name:gsub("%%", "%%%%")))
    local fh = io.open(file, "r")
    if fh then fh:close(); return file end
    tried[#tried + 1] = "\n\tno file '" .. file .. "'"
  end
  return nil, table.concat(tried)
end

-- }=====================================================================

-- {=====================================================================
-- Finalizers
-- ======================================================================

-- Lua 5.1 and LuaJIT ignore __gc in a table's metatable.  gc(t) gives t a
-- hidden userdata whose finalizer calls the __gc of t's metatable when t
-- is collected; on 5.2+ it does nothing (setmetatable registered it).
-- Call it after setmetatable.
local newproxy = rawget(G, "newproxy")
local SENTINEL = {}  -- the hidden key

M.gc = function(t) return t end
if newproxy then
  M.gc = function(t)
    local p = newproxy(true)
    getmetatable(p).__gc = function()
      local mt = getmetatable(t)
      local fin = type(mt) == "table" and rawget(mt, "__gc")
      if fin then fin(t) end
    end
    rawset(t, SENTINEL, p)
    return t
  end
end

-- }=====================================================================

-- os.execute(cmd) -> true when the command exited 0: 5.2+ say true, 5.1
-- and LuaJIT give the wait status (0).
function M.succeeded(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- The fields are reached through __index: a traceback of 5.4 names a
-- function after a field of a loaded module when it finds one, and
-- `xpcall` must stay `xpcall` there (errors.traceback cuts at it).
return setmetatable({}, { __index = M })

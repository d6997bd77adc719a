-- Argument checking for the Lua wrappers, with the exact text that
-- luaL_argerror gives C functions: "bad argument #n to 'name' (...)".
local math_type = require("mproc.compat").math_type

local M = {}

local function argerror(n, fname, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), (level or 2) + 1)
end
M.argerror = argerror

local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end
M.typename = typename

-- Errors at the caller of the function that called check_*.
function M.check_type(v, want, n, fname, optional)
  if (optional and v == nil) or type(v) == want then return v end
  argerror(n, fname, ("%s expected, got %s"):format(want,
    v == nil and "no value" or typename(v)), 3)
end

-- A timeout: nil (forever) or a number >= 0.
function M.check_timeout(v, n, fname, level)
  if v == nil then return nil end
  level = 3 + (level or 0)
  if type(v) ~= "number" then
    argerror(n, fname, "number expected, got " .. typename(v), level)
  end
  if v ~= v or v < 0 then argerror(n, fname, "timeout must be >= 0", level) end
  return v
end

-- {=====================================================================
-- Option tables
-- ======================================================================

-- Edit distance (a swap of two neighbours is one edit), capped at 3:
-- enough to tell a typo from another word.
local function distance(a, b)
  local la, lb = #a, #b
  if math.abs(la - lb) > 2 then return 3 end
  local prev2, prev = nil, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca == b:byte(j) and 0 or 1))
      if prev2 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d = math.min(d, prev2[j - 2] + 1)
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[lb]
end

-- The allowed name closest to `k`, when `k` looks like a typo of it.
local function near(k, allowed)
  local squash = k:lower():gsub("[_%-]", "")
  local best, bd
  for name in pairs(allowed) do
    if type(name) == "string" then
      local d = name:gsub("_", "") == squash and 0 or distance(k, name)
      local limit = #name <= 4 and 1 or 2
      if d <= limit and (bd == nil or d < bd or (d == bd and name < best)) then
        best, bd = name, d
      end
    end
  end
  return best
end
M.near = near

-- check_opts(opts, allowed, fname, n [, level]) -> opts, or {} for nil.
-- `allowed` is a set of option names.  A key outside it raises
-- "bad argument #n to 'fname' (unknown option 'k'; did you mean 'x'?)" at
-- the caller of the function that called check_opts (`level` more up).
function M.check_opts(opts, allowed, fname, n, level)
  level = 3 + (level or 0)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(n, fname, "table expected, got " .. typename(opts), level)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local msg = ("unknown option '%s'"):format(tostring(k))
      local hint = type(k) == "string" and near(k, allowed)
      if hint then msg = msg .. ("; did you mean '%s'?"):format(hint) end
      argerror(n, fname, msg, level)
    end
  end
  return opts
end

-- The option `key` of opts checked as a number (strings are refused, as
-- "12" is a typo for 12 in an options table): nil when absent.  `int`
-- asks for an integer, `min` for a lower bound.
function M.opt_number(opts, key, fname, n, int, min, level)
  local v = opts[key]
  if v == nil then return nil end
  level = 3 + (level or 0)
  local want = int and "an integer" or "a number"
  if type(v) ~= "number" or (int and math_type(v) ~= "integer") or v ~= v then
    argerror(n, fname, ("'%s' must be %s, got %s"):format(key, want,
      type(v) == "number" and tostring(v) or typename(v)), level)
  end
  if min and v < min then
    argerror(n, fname, ("'%s' must be >= %s, got %s"):format(key, tostring(min), tostring(v)),
      level)
  end
  return v
end

-- The option `key` checked as a boolean (nil when absent).
function M.opt_boolean(opts, key, fname, n, level)
  local v = opts[key]
  if v ~= nil and type(v) ~= "boolean" then
    argerror(n, fname, ("'%s' must be a boolean, got %s"):format(key, typename(v)),
      3 + (level or 0))
  end
  return v
end

-- }=====================================================================

-- Marks the calling object as closed: methods raise "attempt to use a closed X".
function M.closed_error(what)
  error("attempt to use a closed " .. what, 3)
end

return M

-- Argument checking for the Lua wrappers, with the exact text that
-- luaL_argerror gives C functions: "bad argument #n to 'name' (...)".
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
function M.check_timeout(v, n, fname)
  if v == nil then return nil end
  if type(v) ~= "number" then
    argerror(n, fname, "number expected, got " .. typename(v), 3)
  end
  if v ~= v or v < 0 then argerror(n, fname, "timeout must be >= 0", 3) end
  return v
end

-- An options table: a table whose keys are all in `allowed` (a set).  A
-- typo is a programmer error, never silently ignored.  `level` as in
-- argerror, counted from the function that calls check_opts (default: its
-- caller's caller sees the error).
function M.check_opts(opts, allowed, fname, n, level)
  level = level or 3
  if type(opts) ~= "table" then
    argerror(n, fname, "table expected, got " .. typename(opts), level)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      argerror(n, fname, ("unknown option '%s'"):format(tostring(k)), level)
    end
  end
  return opts
end

-- Marks the calling object as closed: methods raise "attempt to use a closed X".
function M.closed_error(what)
  error("attempt to use a closed " .. what, 3)
end

return M

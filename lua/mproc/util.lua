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

-- Marks the calling object as closed: methods raise "attempt to use a closed X".
function M.closed_error(what)
  error("attempt to use a closed " .. what, 3)
end

return M

-- Small timing helpers for bench/cases/*.lua.
local core = require "mproc.core"
local M = {}

-- Runs fn(n) with n growing until it takes at least `min` seconds; returns
-- seconds per iteration (the best of `reps` runs).
function M.per_op(fn, min, reps)
  min, reps = min or 0.3, reps or 3
  local n = 1
  while true do
    local t0 = core.now(); fn(n); local dt = core.now() - t0
    if dt >= min / 4 then break end
    n = n * 4
  end
  local best = math.huge
  for _ = 1, reps do
    local t0 = core.now(); fn(n); local dt = (core.now() - t0) / n
    if dt < best then best = dt end
  end
  return best
end

-- The interpreter and build of this run (bench/run.sh sets them; a case
-- that starts another Lua starts the same one).
M.LUA = os.getenv("MPROC_LUA") or "lua5.4"
M.BUILD = os.getenv("MPROC_BUILD") or "build"

-- `<close>` is Lua 5.4 syntax: a case measuring it compiles that part from
-- a string, on 5.4 only (nil elsewhere).
function M.compile54(src, ...)
  if _VERSION ~= "Lua 5.4" then return nil end
  return assert(load(src))(...)
end

-- Prints one result line for bench/run.sh.
function M.report(metric, value, unit, target)
  io.write(metric, "\t", ("%.9g"):format(value), "\t", unit,
    target and ("\t" .. target) or "", "\n")
  io.stdout:flush()
end

return M

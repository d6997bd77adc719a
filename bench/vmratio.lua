-- Joins a case's lines from Lua 5.4, LuaJIT and Python (bench/vms.sh).
local case, f54, fjit, fpy = ...

local lines = require "lines"
local load, fmt = lines.load, lines.fmt

-- "how many times slower a is than b": seconds grow, rates shrink; a ratio
-- metric ("x") or a share ("%") has no direction and gets none.
local function slower(a, b, unit)
  if not (a and b) or b == 0 or a == 0 or unit == "x" or unit == "%" then return "-" end
  return ("%.2f"):format(unit == "s" and a / b or b / a)
end

local a, order = load(f54)
local j, jorder = load(fjit)
local p = load(fpy)
for _, m in ipairs(jorder) do
  if not a[m] then order[#order + 1] = m end
end
for _, m in ipairs(order) do
  local unit = (a[m] or j[m]).unit
  local va, vj, vp = a[m] and a[m].value, j[m] and j[m].value, p[m] and p[m].value
  print(("%-44s %12s %12s %12s %8s %8s"):format(case .. "/" .. m, fmt(va, unit), fmt(vj, unit),
    fmt(vp, unit), slower(vj, vp, unit), slower(vj, va, unit)))
end

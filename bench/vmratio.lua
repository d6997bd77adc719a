-- Joins a case's lines from Lua 5.4, LuaJIT and Python (bench/vms.sh).
local case, f54, fjit, fpy = ...

local function load(path)
  local t, order = {}, {}
  for line in io.lines(path) do
    local m, v, unit = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)")
    if m then
      t[m] = { value = tonumber(v), unit = unit }
      order[#order + 1] = m
    end
  end
  return t, order
end

local function fmt(v, unit)
  if not v then return "-" end
  if unit == "s" then
    if v < 1e-3 then return ("%.2f us"):format(v * 1e6) end
    if v < 1 then return ("%.3f ms"):format(v * 1e3) end
    return ("%.3f s"):format(v)
  end
  if unit == "x" then return ("%.2f x"):format(v) end
  if v >= 1e6 then return ("%.2fM/s"):format(v / 1e6) end
  if v >= 1e3 then return ("%.1fk/s"):format(v / 1e3) end
  return ("%.1f/s"):format(v)
end

-- "how many times slower a is than b": seconds grow, rates shrink; a ratio
-- metric ("x") has no direction and gets none.
local function slower(a, b, unit)
  if not (a and b) or b == 0 or a == 0 or unit == "x" then return "-" end
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

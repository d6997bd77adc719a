-- Joins the lines of a Lua and a Python bench run by metric and prints ratios.
local case, lfile, pfile = ...

local function load(path)
  local t, order = {}, {}
  for line in io.lines(path) do
    local m, v, unit, target = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t?([^\t]*)")
    if m then
      t[m] = { value = tonumber(v), unit = unit, target = target ~= "" and target or nil }
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
  if unit == "x" then return ("%.2f x"):format(v) end     -- a ratio to an anchor
  if v >= 1e6 then return ("%.2fM %s"):format(v / 1e6, unit) end
  if v >= 1e3 then return ("%.1fk %s"):format(v / 1e3, unit) end
  return ("%.1f %s"):format(v, unit)
end

-- A target is for the ratio ("<=0.2") or, with "value", for mproc's own
-- figure ("value>=1.9", e.g. a speedup over serial Lua).
local function judge(target, ratio, value)
  local what, op, n = target:match("^(%a*)([<>]=)([%d.]+)$")
  local x = what == "value" and value or ratio
  if not op or x == nil then return target end
  n = tonumber(n)
  local ok = (op == "<=" and x <= n) or (op == ">=" and x >= n)
  return target .. (ok and "  met" or "  MISSED")
end

local l, order = load(lfile)
local p = load(pfile)
for _, m in ipairs(order) do
  local a, b = l[m], p[m]
  local ratio, verdict = "-", ""
  if b and b.value and b.value > 0 then
    local r = a.value / b.value
    ratio = ("%.3f"):format(r)
    if a.target then verdict = judge(a.target, r, a.value) end
  elseif a.target then
    verdict = judge(a.target, nil, a.value)
  end
  print(("%-40s %14s %14s %8s  %s"):format(case .. "/" .. m, fmt(a.value, a.unit),
    fmt(b and b.value, a.unit), ratio, verdict))
end

-- Joins the lines of a Lua and a Python bench run by metric and prints ratios.
local case, lfile, pfile = ...

local lines = require "lines"
local load, fmt = lines.load, lines.fmt

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

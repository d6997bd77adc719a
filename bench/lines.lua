-- What bench/ratio.lua and bench/vmratio.lua share: a case's result lines
-- ("metric<TAB>value<TAB>unit[<TAB>target]") and how a figure is printed.
local M = {}

-- metric -> {value, unit, target}, and the metrics in their order.  A
-- metric found several times (bench/vms.sh with BENCH_RUNS > 1 appends the
-- runs) counts its median: one run's figure on this noisy VM moves by 10-30%.
function M.load(path)
  local t, order, all = {}, {}, {}
  for line in io.lines(path) do
    local m, v, unit, target = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t?([^\t]*)")
    if m and tonumber(v) then
      if not t[m] then
        t[m] = { unit = unit, target = target ~= "" and target or nil }
        order[#order + 1] = m
        all[m] = {}
      end
      all[m][#all[m] + 1] = tonumber(v)
    end
  end
  for m, vs in pairs(all) do
    table.sort(vs)
    local n = #vs
    t[m].value = n % 2 == 1 and vs[(n + 1) / 2] or (vs[n / 2] + vs[n / 2 + 1]) / 2
    t[m].runs = n
  end
  return t, order
end

function M.fmt(v, unit)
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

return M

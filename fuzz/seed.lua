-- Writes a few valid encodings into fuzz/corpus/, the seeds of make fuzz
-- (run from the repo root after make build: lua5.4 fuzz/seed.lua).
package.cpath = "./build/?.so;" .. package.cpath
local core = require "mproc.core"
local cyc = {}; cyc.self = cyc; cyc[1] = cyc
local shared = { 1, 2 }
local mt = { __index = { x = 1 } }
local values = {
  0, 1, -1, 127, 128, -32, -33, 300, -300, 70000, -70000, 2 ^ 40 | 0,
  math.mininteger, math.maxinteger, 1.5, -0.0, 0 / 0, math.huge, -math.huge,
  "", "a", ("x"):rep(63), ("y"):rep(64), ("z"):rep(300), ("w"):rep(70000),
  true, false, {}, { 1, 2, 3 }, { a = 1, b = { c = "d" } },
  { 1, 2, nil, 4, k = "v", [1.5] = true, [false] = 0 },
  cyc, { shared, shared, { shared } }, setmetatable({ 1 }, mt),
  { setmetatable({}, mt), setmetatable({}, mt) },
  string, math.sqrt, _G, { print, string.format },
  (function() local t = {} for i = 1, 300 do t["k" .. i] = i end return t end)(),
  (function() local t = {} for i = 1, 1000 do t[i] = { id = i } end return t end)(),
  { id = 1, name = "x", tags = { "a", "b" }, score = 1.5 },
}
os.execute("mkdir -p fuzz/corpus")
for i, v in ipairs(values) do
  local ok, s = core.codec_dumps(v)
  assert(ok, s)
  local f = assert(io.open(("fuzz/corpus/seed-%03d"):format(i), "wb"))
  f:write(s)
  f:close()
end
print(("wrote %d seeds"):format(#values))

-- Seeds of the function target (fuzz/fuzz_loads_fn.c): functions made
-- from the very chunks that target loads (same sources, same chunk name),
-- so their bytecode selects those chunks exactly.
local FN_CHUNKS = {   -- keep in step with CHUNKS in fuzz/fuzz_loads_fn.c
  "return function() return 1 end",
  "local a; return function() return a end",
  "local a, b; return function() return a, b end",
  "local a; return function() return a, tostring end",
  "local a, b, c, d, e; return function() local function g() return a, e end; "
    .. "return g, b, c, d end",
  "return 0",
}
local fn = {}
for i, src in ipairs(FN_CHUNKS) do
  local chunk = assert(load(src, "=fz", "t"))
  fn[i] = i < #FN_CHUNKS and chunk() or chunk
end
local function with_ups(f, ...)
  for i = 1, select("#", ...) do debug.setupvalue(f, i, (select(i, ...))) end
  return f
end
local function fresh(i) return assert(load(FN_CHUNKS[i], "=fz", "t"))() end
local outer = with_ups(fresh(5), "a", 2, { 3 }, true, 5.5)
local inner = outer()                       -- shares a and e with outer
core.codec_register("fz.f", fn[2])
local gcmt = {}
local gct = setmetatable({}, gcmt)
gcmt.__gc = fn[1]                           -- not marked: set after setmetatable
local fvalues = {
  fn[1], fn[2], fn[3], fn[4], fn[6],
  with_ups(fresh(2), { x = 1 }),
  with_ups(fresh(3), "s", fresh(1)),
  { outer, inner }, { inner, outer, inner },
  { f = fn[1], g = fn[1], [fn[3]] = true },
  gct, { gct, gct },
  { math.sqrt, string.format, fn[2], string, _G },
  (function() local c = fresh(2); debug.setupvalue(c, 1, c); return c end)(),
}
os.execute("mkdir -p fuzz/corpus-fn")
for i, v in ipairs(fvalues) do
  local ok, s = core.codec_dumps(v)
  assert(ok, s)
  local f = assert(io.open(("fuzz/corpus-fn/seed-%03d"):format(i), "wb"))
  f:write(s)
  f:close()
end
print(("wrote %d function seeds"):format(#fvalues))

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
  local ok, s = core.dumps(v)
  assert(ok, s)
  local f = assert(io.open(("fuzz/corpus/seed-%03d"):format(i), "wb"))
  f:write(s)
  f:close()
end
print(("wrote %d seeds"):format(#values))

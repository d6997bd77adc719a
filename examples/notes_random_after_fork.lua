-- Children are forked: each starts with a copy of the parent's random
-- generator.  Like Python's random module, mproc reseeds math.random in
-- every forked child (Process, Pool worker, mp.fork), so siblings draw
-- different numbers; a child that wants a reproducible sequence seeds it
-- itself.  (tutorial-notes.md, note 6)
local mp = require "mproc"
io.stdout:setvbuf("line")

local q = mp.Queue()
local function draw(seed)
  if seed then math.randomseed(seed) end
  q:put(math.random(1, 1000000))
end

for _, seed in ipairs { false, 42 } do
  local ps = {}
  for i = 1, 3 do ps[i] = mp.Process(draw, seed); ps[i]:start() end
  local seen, n = {}, 0
  for _ = 1, 3 do
    local v = q:get(5)
    if not seen[v] then seen[v] = true; n = n + 1 end
  end
  for _, p in ipairs(ps) do p:join() end
  local label = seed and "math.randomseed(42) in each" or "as forked"
  print(("%s: 3 children drew %d different number(s)"):format(label, n))
end

local pool <close> = mp.Pool(2)
local seen, n = {}, 0
for _, v in ipairs(pool:map(function() return math.random(1, 1 << 40) end, { 1, 2, 3, 4 }, 1)) do
  if not seen[v] then seen[v] = true; n = n + 1 end
end
print(("pool workers: 4 tasks drew %d different number(s)"):format(n))

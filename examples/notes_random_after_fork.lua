-- Children are forked: each starts with a copy of the parent's random
-- generator and draws the same "random" numbers, unless it reseeds.
-- (Python's random module reseeds after fork; Lua's math.random does not.)
-- (tutorial-notes.md, note 6)
local mp = require "mproc"
io.stdout:setvbuf("line")

local q = mp.Queue()
local function draw(reseed)
  if reseed then math.randomseed(os.time(), mp.getpid()) end
  q:put(math.random(1, 1000000))
end

for _, reseed in ipairs { false, true } do
  local ps = {}
  for i = 1, 3 do ps[i] = mp.Process(draw, reseed); ps[i]:start() end
  local seen, n = {}, 0
  for _ = 1, 3 do
    local v = q:get(5)
    if not seen[v] then seen[v] = true; n = n + 1 end
  end
  for _, p in ipairs(ps) do p:join() end
  local label = reseed and "reseeded" or "not reseeded"
  print(("%s: 3 children drew %d different number(s)"):format(label, n))
end

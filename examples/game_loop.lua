-- A LÖVE-style game loop on any Lua mproc runs on (written for LuaJIT:
-- no 5.4-only syntax).  The frame never waits for the pool: path searches
-- go to the workers with apply_async, and each frame takes what is ready
-- with one mp.poll() call, as love.update would.
--   luajit examples/game_loop.lua   (or lua5.1, lua5.3, lua5.4)
local mp = require "mproc"

local FRAME = 1 / 60      -- seconds per frame
local FRAMES = 90         -- 1.5 s of game

-- A deliberately slow search: the cost a frame cannot afford.
local function find_path(from, to)
  local steps, x = 0, from
  while x ~= to do
    x = x + (to > x and 1 or -1)
    for _ = 1, 20000 do steps = steps + 1 end
  end
  return { from = from, to = to, cost = steps }
end

local pool = mp.Pool(2)
local pending, arrived, worst = {}, 0, 0
-- the frame's own work, in CPU seconds (LÖVE has love.timer.getTime; a
-- frame that never blocks spends its time on the CPU)
local clock = os.clock

for frame = 1, FRAMES do
  local t0 = clock()
  -- love.update: a unit asks for a path every 5th frame
  if frame % 5 == 0 then
    pending[#pending + 1] = pool:apply_async(find_path, { frame, frame + 40 })
  end
  mp.poll()                -- callbacks of finished tasks; never blocks
  for i = #pending, 1, -1 do
    local r = pending[i]
    if r:ready() then
      local path = r:get()
      arrived = arrived + 1
      assert(path.cost > 0)
      table.remove(pending, i)
    end
  end
  -- love.draw would run here; the rest of the frame is idle time
  local spent = clock() - t0
  if spent > worst then worst = spent end
  if spent < FRAME then mp.sleep(FRAME - spent) end
end

-- the level ends: wait for what is still out
for _, r in ipairs(pending) do r:get(10); arrived = arrived + 1 end
pool:close()
pool:join()
print(("%d frames, %d paths, longest frame's work %.1f ms of CPU (budget %.1f ms)"):format(
  FRAMES, arrived, worst * 1000, FRAME * 1000))
print(worst < FRAME and "every frame's work fit its budget" or "a frame was late")

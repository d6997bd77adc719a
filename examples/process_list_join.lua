-- Start ten processes from a list, then join them one by one.
-- Seed: "自定义启动多进程" (p_list, [ap.join() for ap in p_list]).
local mp = require "mproc"
io.stdout:setvbuf("line")

local function func(i)
  mp.sleep(0.05 * (10 - i))        -- the last started ends first
  print("done " .. i)
end

local p_list = {}
for i = 1, 10 do
  local p = mp.Process(func, i)
  p_list[#p_list + 1] = p
  p:start()                         -- all run at the same time
end
for _, p in ipairs(p_list) do p:join() end  -- returns when the slowest ended
local ok = 0
for _, p in ipairs(p_list) do if p.exitcode == 0 then ok = ok + 1 end end
print(("all %d joined, %d with exit code 0"):format(#p_list, ok))

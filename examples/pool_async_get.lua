-- apply_async returns an AsyncResult; get() gives the task's value.
-- Seed: "获取apply_async的结果" in 002.
local mp = require "mproc"
io.stdout:setvbuf("line")

local function func(msg)
  print("msg: " .. msg)
  mp.sleep(0.3)
  print("end")
  return "done" .. msg
end

local pool = mp.Pool(4)
local result = {}
for i = 0, 2 do
  result[#result + 1] = pool:apply_async(func, { ("hello %d"):format(i) })
end
pool:close()
pool:join()
for _, res in ipairs(result) do
  print("::: " .. res:get())
end
print("Sub-process(es) done.")

-- get() right after submitting all tasks is just as good: it waits for
-- that one result while the others keep running.
local pool2 <close> = mp.Pool(3)
local rs = {}
for i = 1, 3 do rs[i] = pool2:apply_async(function(x) mp.sleep(0.2) return x * 2 end, { i }) end
for i = 1, 3 do print("get: " .. rs[i]:get(5)) end

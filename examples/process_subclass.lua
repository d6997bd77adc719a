-- A custom Process class: run() replaces the target; fields set before
-- start() reach the child.  Seeds: "2.1.4. 自定义 Process 类" (MyProcess with
-- loop, daemon, join in the loop) and "自定义进程" (super().__init__, run).
local mp = require "mproc"
io.stdout:setvbuf("line")

-- Python: class MyProcess(Process): def __init__(self, loop) ... def run(self)
local MyProcess = mp.Process:extend()
function MyProcess:init(loop)      -- called by MyProcess(loop)
  self.loop = loop
end
function MyProcess:run()
  for count = 0, self.loop - 1 do
    mp.sleep(0.05)                  -- the tutorial sleeps 1 s
    print(("Pid: %d LoopCount: %d"):format(self.pid, count))
  end
end

for i = 2, 4 do
  local p = MyProcess(i)
  p.daemon = true                   -- would be terminated if the parent ended first...
  p:start()
  p:join()                          -- ...but join waits, so every loop completes
end

-- The shorter form: no init, just run.
local Hint = mp.Process:extend()
function Hint.run() print(("为%s自定义提示信息"):format(mp.current_process().name)) end
local b = Hint()
b:start(); b:join()
print("Main process Ended!")

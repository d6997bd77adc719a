-- conn:poll(timeout): is there something to recv?  Seed: "管道" in 001.
-- Note: poll's default timeout is 0 (it answers at once), as in Python.
local mp = require "mproc"
io.stdout:setvbuf("line")

local function test(l_conn)
  print(("进程-%s开始测试"):format(mp.current_process().name))
  l_conn:send("这里是子进程")
  l_conn:send("这是第二条数据")
  mp.sleep(0.2)
  print(("进程-%s测试结束"):format(mp.current_process().name))
end

local l_conn, r_conn = mp.Pipe()
local p = mp.Process(test, l_conn)
print(r_conn:poll(0.1))     -- nothing sent yet: false after 0.1 s
p:start()
p:join()
print(r_conn:poll(0.1))     -- true at once
print(r_conn:recv())
print(r_conn:recv())
print(r_conn:poll())        -- false: empty, and l_conn is still open here
l_conn:close()
print(r_conn:poll())        -- true: a closed peer counts as readable...
local ok, err = pcall(r_conn.recv, r_conn)
print(ok, err.kind)         -- ...and recv raises EOF

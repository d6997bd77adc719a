-- One process sends A, B, C into a pipe, another receives them; the
-- receiver loops forever and is terminated.  Seed: "processes-communication
-- by Pipes" in 004.
local mp = require "mproc"
io.stdout:setvbuf("line")

local function sendmsg(conn)
  for _, value in ipairs { "A", "B", "C" } do
    print(("Send %s to Pipe"):format(value))
    conn:send(value)
    mp.sleep(math.random() * 0.1)
  end
end

local function recvmsg(conn)
  while true do
    print(("Recv %s from Pipe"):format(conn:recv()))
  end
end

local conn1, conn2 = mp.Pipe()
local ps = mp.Process(sendmsg, conn1)
local pr = mp.Process(recvmsg, conn2)
ps:start(); pr:start()
ps:join()
mp.sleep(0.1)
pr:terminate(); pr:join()
-- Once every sending end is closed, recv() raises EOF instead of waiting:
conn1:close()
local ok, err = pcall(conn2.recv, conn2)
print(ok, err.kind)               --> false  EOF

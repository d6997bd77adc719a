-- Manager proxy round trips (see manager.py): dict set and get through a
-- mp.Manager() server, and a remote BaseManager on 127.0.0.1.
local mp = require "mproc"
local bench = require "bench"

local m = mp.Manager()
local d = m:dict()
d.k = 0
bench.report("dict_set", bench.per_op(function(n) for i = 1, n do d.k = i end end), "s", "<=0.5")
bench.report("dict_get", bench.per_op(function(n)
  for _ = 1, n do local _ = d.k end
end), "s", "<=0.5")

local q = mp.BaseManager.types.Queue()
local srv = mp.BaseManager{ address = { "127.0.0.1", 0 }, authkey = "bench" }
srv:register("queue", function() return q end)
srv:start()
local c = mp.BaseManager{ address = srv.address, authkey = "bench" }
c:register("queue")
c:connect()
local rq = c:queue()
bench.report("tcp_queue_put_get", bench.per_op(function(n)
  for i = 1, n do rq:put(i); rq:get() end
end), "s", "<=0.5")
bench.report("connect_auth", bench.per_op(function(n)
  for _ = 1, n do
    local x = mp.BaseManager{ address = srv.address, authkey = "bench" }
    x:connect()
    x:shutdown()  -- a client: closes its connections only
  end
end, 0.2), "s")
srv:shutdown()
m:shutdown()

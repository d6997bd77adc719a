-- The part of cluster_spec.lua that needs Lua 5.4: `<close>` on a
-- cluster.Pool (a private redis-server on a Unix socket, local workers).
-- tools/run-specs.sh runs this file on 5.4 only.
local mp = require "mproc"
local support = require "support"

local have_redis = support.exec_status(os.execute("command -v redis-server >/dev/null 2>&1"))
  == true and pcall(require, "mproc.redis")

describe("mp.cluster.Pool", function()
  if not have_redis then
    it("needs redis-server and mproc.redis (hiredis)", function()
      pending("redis-server or mproc.redis (libhiredis-dev) is not installed")
    end)
    return
  end

  local dir, sock, server
  setup(function()
    local p = io.popen("mktemp -d /tmp/mproc-cluster.XXXXXX")
    dir = p:read("*l")
    p:close()
    sock = dir .. "/redis.sock"
    server = support.redis_server(sock, dir)
  end)

  teardown(function()
    server:terminate()
    server:wait(10)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("<close> closes, joins (the results are in) and shuts the pool", function()
    local pool, r
    do
      local p <close> = mp.cluster.Pool { url = "unix:" .. sock, queue = "q54", authkey = "k",
                                          processes = 1 }
      pool = p
      r = p:submit(function(x) return x + 1 end, 41)
    end
    assert.is_true(r:ready())
    assert.equal(42, r:get(0))
    assert.equal("TERMINATE", pool._state)
  end)

  it("<close> terminates when the block is left by an error", function()
    local r
    local ok = pcall(function()
      local p <close> = mp.cluster.Pool { url = "unix:" .. sock, queue = "q54b", authkey = "k" }
      r = p:submit(function() return 1 end)   -- no worker: it would wait forever
      error("leaving")
    end)
    assert.is_false(ok)
    assert.is_true(mp.is_error(select(2, pcall(r.get, r, 1)), "Cancelled"))
  end)
end)

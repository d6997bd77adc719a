-- The parts of manager_spec.lua that need Lua 5.4: `<close>` on a Manager
-- and on a Lock proxy's guard, and examples/distributed_master.lua (it uses
-- `<close>`).  tools/run-specs.sh runs this file on 5.4 only.
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local os, pcall = os, pcall

describe("mproc.Manager", function()
  it("closes with <close>", function()
    local d
    do
      local m3 <close> = mp.Manager()
      d = m3:dict()
      d.a = 1
    end
    assert.is_false(pcall(function() return d.a end))
  end)

  it("releases a Lock proxy's guard with <close>", function()
    local m <close> = mp.Manager()
    local lock = m:Lock()
    do
      local _ <close> = lock:guard(1)
      assert.is_false(lock:acquire(0))
    end
    assert.is_true(lock:acquire(0))
    lock:release()
  end)

  it("runs the distributed master and worker examples on loopback", function()
    local sp = mp.subprocess
    local env = {}
    for _, k in ipairs({ "PATH", "MPROC_SPEC_TOKEN", "LD_PRELOAD", "ASAN_OPTIONS",
                         "UBSAN_OPTIONS" }) do
      env[k] = os.getenv(k)
    end
    env.LUA_PATH = package.path
    env.LUA_CPATH = package.cpath
    env.RESULT_TIMEOUT = "20"
    local mport = 20000 + core.getpid() % 20000
    local master = sp.Popen(
      { support.LUA, "examples/distributed_master.lua", "127.0.0.1", mport, "abc" },
      { stdout = "pipe", env = env })
    core.sleep(0.5)
    local w = sp.run({ support.LUA, "examples/distributed_worker.lua", "127.0.0.1", mport, "abc" },
      { capture = true, env = env, timeout = 30 })
    local out = master:communicate(nil, 30)
    assert.equal(0, master.returncode)
    assert.equal(0, w.returncode, w.stderr)
    local n = 0
    for _ in out:gmatch("Result: %d+ %* %d+ = %d+") do n = n + 1 end
    assert.equal(10, n)
    local bad = sp.run(
      { support.LUA, "examples/distributed_worker.lua", "127.0.0.1", mport, "nope" },
      { capture = true, env = env, timeout = 30 })
    assert.is_not.equal(0, bad.returncode)
  end)
end)

-- The parts of process_spec.lua that need Lua 5.4 (`<close>` on a Process);
-- tools/run-specs.sh runs this file on 5.4 only.  Before 5.4 the same
-- cleanup is an explicit p:close() (docs/process.md).
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local os = os

local errmsg = support.errmsg

local function loop_forever()
  while true do mp.sleep(1) end
end

describe("mproc.Process", function()
  describe("<close>", function()
    it("joins a running process at the end of the scope", function()
      local p, pid
      local t0 = core.now()
      do
        local q <close> = mp.Process(function() mp.sleep(0.2) os.exit(4) end)
        q:start()
        p, pid = q, q.pid
      end
      assert.is_true(core.now() - t0 >= 0.18)
      assert.equal("attempt to use a closed process", errmsg(function() return p.exitcode end))
      assert.is_nil(support.proc_state(pid))
    end)

    it("terminates a running daemon process", function()
      local pid
      local t0 = core.now()
      do
        local q <close> = mp.Process { target = loop_forever, daemon = true }
        q:start()
        pid = q.pid
      end
      assert.is_true(core.now() - t0 < 5)
      assert.is_false(support.alive(pid))
    end)
  end)
end)

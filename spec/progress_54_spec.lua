-- The part of progress_spec.lua that needs Lua 5.4: `<close>` on a bar.
-- tools/run-specs.sh runs this file on 5.4 only.
local mp = require "mproc"
local support = require "support"

local sink = support.sink

describe("mp.progress", function()
  it("works with <close>: leaving the block closes the bar (its final line)", function()
    local out = sink()
    do
      local bar <close> = mp.progress { total = 1, stream = out, tty = false }
      bar:update()
    end
    assert.matches("100%% 1/1", out:text())
  end)
end)

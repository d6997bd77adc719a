-- The specs of pipe_spec.lua that use 5.4-only syntax (`<close>`).
local mp = require "mproc"

describe("mproc.Pipe", function()
  describe(":close()", function()
    it("happens at the end of a <close> scope", function()
      local keep, other
      do
        local a, b = mp.Pipe()
        local _ <close> = a
        local _ <close> = b
        keep, other = a, b
        b:send(1)
      end
      assert.is_true(keep.closed)
      assert.is_true(other.closed)
    end)
  end)
end)

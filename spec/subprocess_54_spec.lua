-- The part of subprocess_spec.lua that needs Lua 5.4: `<close>` on a
-- Popen.  tools/run-specs.sh runs this file on 5.4 only.
local mp = require "mproc"
local support = require "support"
local sp = mp.subprocess

local errmsg = support.errmsg

describe("mproc.subprocess.Popen", function()
  it("<close> closes the pipes and waits for the end", function()
    local p
    do
      local q <close> = sp.Popen({ "cat" }, { stdin = "pipe", stdout = "pipe" })
      p = q
      q.stdin:write("one\n", 5)
      assert.equal("one", q.stdout:readline(5))
    end
    assert.equal(0, p.returncode)   -- cat saw the end of its input
    assert.equal("attempt to use a closed stream", errmsg(p.stdin.write, p.stdin, "x"))
  end)

  it("<close> iterates lines and leaves no running child", function()
    local p
    do
      local q <close> = sp.Popen({ "printf", "a\\nb\\nc" }, { stdout = "pipe" })
      p = q
      local got = {}
      for l in q.stdout:lines(5) do got[#got + 1] = l end
      assert.same({ "a", "b", "c" }, got)
    end
    assert.equal(0, p.returncode)
  end)
end)

-- mp.progress: the manual form (a bar advanced by update) and option checks.
local mp = require "mproc"
local support = require "support"

local errmsg = support.errmsg

local sink = support.sink

describe("mp.progress", function()
  describe("manual form", function()
    it("counts updates (1 by default, or n) and ends with a final line on close", function()
      local out = sink()
      local bar = mp.progress { total = 10, label = "files", stream = out, tty = false,
        interval = 0 }
      assert.equal(0, bar.n)
      assert.equal(10, bar.total)
      bar:update()
      bar:update(4)
      assert.equal(5, bar.n)
      bar:close()
      local lines = {}
      for l in out:text():gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.matches("^files   0%% 0/10", lines[1])
      assert.matches("^files  10%% 1/10", lines[2])
      assert.matches("^files  50%% 5/10", lines[3])
      assert.matches("^files  50%% 5/10 .* eta", lines[#lines])
      assert.equal(4, #lines)
    end)

    it("redraws one line in place on a terminal", function()
      local out = sink()
      local bar = mp.progress { total = 2, stream = out, tty = true, interval = 0 }
      bar:update(2)
      bar:close()
      local s = out:text()
      assert.matches("^\r", s)
      assert.matches("%[##############################%] 100%% 2/2", s)
      assert.equal(1, select(2, s:gsub("\n", "")))   -- only the final newline
      assert.matches("\n$", s)
    end)

    it("works without a total (count and rate only)", function()
      local out = sink()
      local bar = mp.progress { stream = out, tty = false, interval = 0 }
      bar:update(3)
      bar:close()
      assert.matches("3 done", out:text(), 1, true)
    end)

    it("draws at most every `interval` seconds, and always at close", function()
      local out = sink()
      local bar = mp.progress { total = 1000, stream = out, tty = false, interval = 60 }
      for _ = 1, 1000 do bar:update() end
      bar:close()
      local _, n = out:text():gsub("\n", "")
      assert.equal(2, n)   -- the first draw and the final one
    end)

    -- <close> on a bar: progress_54_spec.lua
    it("close is idempotent; update after close raises", function()
      local out = sink()
      local bar = mp.progress { total = 1, stream = out, tty = false }
      bar:close()
      bar:close()
      assert.matches("attempt to use a closed progress bar",
        errmsg(function() bar:update() end), 1, true)
    end)

    it("rejects a bad update count", function()
      local bar = mp.progress { total = 1, stream = sink(), tty = false }
      assert.equal("bad argument #1 to 'update' (integer >= 0 expected, got string)",
        errmsg(bar.update, bar, "1"))
      assert.equal("bad argument #1 to 'update' (integer >= 0 expected, got -1)",
        errmsg(bar.update, bar, -1))
      assert.equal("bad argument #1 to 'update' (integer >= 0 expected, got number)",
        errmsg(bar.update, bar, 1.5))
      assert.equal("bad argument #1 to 'update' (progress bar expected)",
        errmsg(bar.update, {}))
      bar:close()
    end)
  end)

  describe("options", function()
    it("an unknown key raises an error naming it (manual and iterator forms)", function()
      assert.equal("bad argument #1 to 'progress' (unknown option 'totl')",
        errmsg(mp.progress, { totl = 3 }))
      local it = function() return nil end
      assert.equal("bad argument #2 to 'progress' (unknown option 'lable')",
        errmsg(mp.progress, it, { lable = "x" }))
    end)

    it("checks total, label and interval", function()
      assert.equal("bad argument #1 to 'progress' ('total' must be an integer, got number)",
        errmsg(mp.progress, { total = 1.5 }))
      assert.equal("bad argument #1 to 'progress' ('total' must be >= 0)",
        errmsg(mp.progress, { total = -1 }))
      assert.equal("bad argument #1 to 'progress' ('label' must be a string, got number)",
        errmsg(mp.progress, { label = 1 }))
      assert.equal("bad argument #1 to 'progress' ('interval' must be a number >= 0)",
        errmsg(mp.progress, { interval = "fast" }))
    end)

    it("the iterator form keeps working", function()
      local out = sink()
      local items, got = { "a", "b", "c" }, {}
      local i = 0
      local function iter() i = i + 1 if items[i] then return i, items[i] end end
      for k, v in mp.progress(iter, { total = 3, stream = out, tty = false, interval = 0 }) do
        got[k] = v
      end
      assert.same(items, got)
      assert.matches("100%% 3/3", out:text())
    end)
  end)
end)

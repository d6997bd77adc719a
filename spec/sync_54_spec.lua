-- The specs of sync_spec.lua that use 5.4-only syntax (`<close>`); the
-- :close() forms of the same guards are there (every VM).
local mp = require "mproc"
local support = require "support"

describe("mproc.Lock", function()
  describe(":guard()", function()
    it("holds the lock for a <close> scope", function()
      local l = mp.Lock()
      do
        local _ <close> = l:guard()
        assert.is_false(l:acquire(0))
      end
      assert.is_true(l:acquire(0))
      l:release()
    end)

    it("releases when the scope ends with an error", function()
      local l = mp.Lock()
      local ok = pcall(function()
        local _ <close> = l:guard()
        error("boom")
      end)
      assert.is_false(ok)
      assert.is_true(l:acquire(0))
      l:release()
    end)

    it("raises when the lock was released inside the scope", function()
      local l = mp.Lock()
      assert.has_error(function()
        local _ <close> = l:guard()
        l:release()
      end, "cannot release un-acquired lock")
    end)
  end)
  describe(":close()", function()
    it("is what <close> does", function()
      local keep
      do
        local l <close> = mp.Lock()
        keep = l
      end
      assert.has_error(function() keep:acquire() end, "attempt to use a closed lock")
    end)
  end)
end)

describe("mproc.RLock", function()
  describe(":guard()", function()
    it("nests", function()
      local r = mp.RLock()
      do
        local _ <close> = r:guard()
        do
          local _ <close> = r:guard()
        end
        assert.equal(0, support.in_child(function() return r:acquire(0) == false end))
      end
      assert.equal(0, support.in_child(function() return r:acquire(0) == true end))
    end)
  end)
end)

describe("mproc.Semaphore", function()
  describe(":guard()", function()
    it("holds one unit for a <close> scope", function()
      local s = mp.Semaphore(1)
      do
        local _ <close> = s:guard()
        assert.equal(0, s:get_value())
      end
      assert.equal(1, s:get_value())
    end)
  end)
end)

describe("mproc.Condition", function()
  it("guards its lock for a <close> scope", function()
    local l = mp.Lock()
    local c = mp.Condition(l)
    do
      local _ <close> = c:guard()
      assert.is_false(l:acquire(0))
    end
    assert.is_true(l:acquire(0))
    l:release()
  end)
end)

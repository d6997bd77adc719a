-- The specs of sched_spec.lua that use 5.4-only syntax (`<close>` in a
-- task); sched_spec.lua has the same cases without it (every VM).
local mp = require "mproc"
local support = require "support"

-- pids of the processes whose argv is exactly `argv`
local pids_of = support.pids_of

describe("mproc coroutines", function()
  describe("mp.run() ending early (issue 13)", function()
    it("closes the unfinished tasks when the main task raises", function()
      local closed, never = {}, false
      local late
      local dt, ok, err = support.elapsed(function()
        return mp.run(function()
          mp.spawn(function()
            local _ <close> = setmetatable({},
              { __close = function() closed[#closed + 1] = "a" end })
            mp.subprocess.run({ "sleep", "30.0413" })
            never = true
          end)
          mp.spawn(function()
            local _ <close> = setmetatable({},
              { __close = function() closed[#closed + 1] = "b" end })
            mp.sleep(30)
          end)
          late = mp.spawn(function() mp.sleep(30) end)
          mp.sleep(0.3)
          error("boom", 0)
        end)
      end)
      assert.is_false(ok)
      assert.equal("boom", err)
      assert.is_true(dt < 5, "took " .. dt)
      assert.same({ "b", "a" }, closed)   -- newest first
      assert.is_false(never)
      assert.same({}, pids_of({ "sleep", "30.0413" }))   -- killed and reaped
      assert.is_true(late:ready())
      assert.is_true(mp.is_error(select(2, pcall(late.join, late)), "Cancelled"))
    end)

    it("closes the tasks on SIGINT and leaves no program running", function()
      local out, code = support.sigint_script([=[
        local mp = require "mproc"
        local ok, e = pcall(mp.run, function()
          mp.spawn(function()
            local _ <close> = setmetatable({}, { __close = function() print("closed") end })
            mp.subprocess.run({ "sleep", "30.0417" })
          end)
          mp.spawn(function()
            mp.sleep(0.2)
            io.write("ready\n"); io.stdout:flush()
          end)
          mp.sleep(30)
        end)
        print(ok, mp.is_error(e, "Interrupted"))
      ]=], { "sleep", "30.0417" })
      assert.equal("closed\nfalse\ttrue\n", out)
      assert.equal(0, code)
      assert.same({}, pids_of({ "sleep", "30.0417" }))
    end)
  end)
end)

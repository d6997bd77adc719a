-- The specs of sched_spec.lua that use 5.4-only syntax (`<close>` in a
-- task); sched_spec.lua has the same cases without it (every VM).
local mp = require "mproc"
local support = require "support"

-- pids of the processes whose argv is exactly `argv`
local function pids_of(argv)
  local want, found = table.concat(argv, "\0") .. "\0", {}
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") and support.read_file("/proc/" .. pid .. "/cmdline") == want then
      found[#found + 1] = pid
    end
  end
  p:close()
  return found
end

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
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write([=[
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
      ]=])
      f:close()
      local cmd = ("LUA_PATH=%q LUA_CPATH=%q exec %s %s"):format(
        package.path, package.cpath, support.LUA, script)
      local p = mp.subprocess.Popen({ "sh", "-c", cmd }, { stdout = "pipe" })
      finally(function() support.close(p) end)
      assert.equal("ready", p.stdout:readline(10))
      assert.is_true(support.wait_until(function()
        return #pids_of({ "sleep", "30.0417" }) == 1 and support.proc_state(p.pid) == "S"
      end, 10))
      p:send_signal(2)
      local out = p.stdout:read(nil, 10)
      os.remove(script)
      assert.equal("closed\nfalse\ttrue\n", out)
      assert.equal(0, p:wait(10))
      assert.same({}, pids_of({ "sleep", "30.0417" }))
    end)
  end)
end)

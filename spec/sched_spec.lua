local mp = require "mproc"
local support = require "support"
local compat = require "mproc.compat"
local core = require "mproc.core"
local sched = require "mproc.sched"

local csleep = core.sleep

local errmsg = support.errmsg

describe("mproc coroutines", function()
  describe("mp.run()", function()
    it("returns the main function's values", function()
      assert.same({ 1, nil, 3, n = 3 }, compat.pack(mp.run(function(a) return a, nil, 3 end, 1)))
    end)

    it("waits for the spawned tasks", function()
      local done = false
      mp.run(function() mp.spawn(function() mp.sleep(0.05); done = true end) end)
      assert.is_true(done)
    end)

    it("propagates the main function's error", function()
      assert.equal("oops", errmsg(mp.run, function() error("oops", 0) end))
    end)

    it("cannot be nested and checks its argument", function()
      assert.equal("bad argument #1 to 'run' (function expected, got number)", errmsg(mp.run, 1))
      mp.run(function()
        assert.equal("mp.run cannot be nested", errmsg(mp.run, function() end))
      end)
    end)
  end)

  describe("mp.spawn()", function()
    it("must be called inside mp.run", function()
      assert.equal("mp.spawn must be called inside mp.run", errmsg(mp.spawn, function() end))
    end)

    it("join() returns the task's values or raises its error", function()
      mp.run(function()
        local t = mp.spawn(function(x) return x * 2 end, 21)
        assert.equal(42, t:join())
        local bad = mp.spawn(function() error("task failed", 0) end)
        -- plain Lua 5.1 cannot yield across pcall: a pcall around a wait
        -- inside mp.run is compat.pcall there (the same pcall elsewhere)
        local ok, e = compat.pcall(bad.join, bad)
        assert.is_false(ok)
        assert.equal("task failed", e)
      end)
    end)
  end)

  describe("mp.sleep()", function()
    it("suspends only the calling task", function()
      local t0 = core.now()
      mp.run(function()
        local a = mp.spawn(function() mp.sleep(0.2) end)
        local b = mp.spawn(function() mp.sleep(0.2) end)
        a:join(); b:join()
      end)
      local dt = core.now() - t0
      assert.is_true(dt >= 0.18 and dt < 0.39, "took " .. dt)
    end)

    it("rejects a bad duration", function()
      assert.equal("bad argument #1 to 'sleep' (timeout must be >= 0)", errmsg(mp.sleep, -1))
    end)
  end)

  describe("blocking calls inside mp.run", function()
    it("a task blocked on a pipe lets another make progress", function()
      local a, b = mp.Pipe()
      local steps = 0
      local got = mp.run(function()
        local reader = mp.spawn(function() return a:recv() end)
        for _ = 1, 5 do steps = steps + 1; mp.sleep(0.01) end
        b:send("hello")
        return reader:join()
      end)
      assert.equal("hello", got)
      assert.equal(5, steps)
      a:close(); b:close()
    end)

    it("a task blocked on a queue lets another make progress", function()
      local q = mp.Queue()
      local steps = 0
      local got = mp.run(function()
        local getter = mp.spawn(function() return q:get(5) end)
        for _ = 1, 5 do steps = steps + 1; mp.sleep(0.01) end
        q:put("item")
        return getter:join()
      end)
      assert.equal("item", got)
      assert.equal(5, steps)
      q:close()
    end)

    it("a task blocked on a lock or an event lets another make progress", function()
      local lock, ev = mp.Lock(), mp.Event()
      local ticks = 0
      mp.run(function()
        assert.is_true(lock:acquire(1))
        local l = mp.spawn(function() return lock:acquire(5) end)
        local e = mp.spawn(function() return ev:wait(5) end)
        for _ = 1, 5 do ticks = ticks + 1; mp.sleep(0.01) end
        lock:release()
        ev:set()
        assert.is_true(l:join())
        assert.is_true(e:join())
      end)
      assert.equal(5, ticks)
      lock:release()
    end)

    it("a task joining a process lets another make progress", function()
      local p = mp.Process(function() csleep(0.2) end)
      p:start()
      local ticks = 0
      mp.run(function()
        local j = mp.spawn(function() return p:join(5) end)
        while not j:ready() do ticks = ticks + 1; mp.sleep(0.01) end
        assert.is_true(j:join())
      end)
      assert.is_true(ticks >= 5)
      p:close()
    end)

    it("1000 tasks each awaiting a pool result", function()
      local pool = mp.Pool(2)
      finally(function() support.close(pool) end)
      local total = mp.run(function()
        local ts = {}
        for i = 1, 1000 do
          ts[i] = mp.spawn(function()
            return pool:apply_async(function(x) return x end, { i }):get(30)
          end)
        end
        local s = 0
        for i = 1, 1000 do s = s + ts[i]:join() end
        return s
      end)
      assert.equal(500500, total)
    end)

    it("pool:apply inside a task does not block the others", function()
      local pool = mp.Pool(1)
      finally(function() support.close(pool) end)
      local ticks = 0
      mp.run(function()
        local t = mp.spawn(function() return pool:apply(function() csleep(0.2) return 7 end) end)
        while not t:ready() do ticks = ticks + 1; mp.sleep(0.01) end
        assert.equal(7, t:join())
      end)
      assert.is_true(ticks >= 5)
    end)
  end)

  describe("sched.wait_until()", function()
    it("polls a condition inside mp.run without blocking others", function()
      local flag, ticks = false, 0
      mp.run(function()
        local t = mp.spawn(function() return sched.wait_until(function() return flag end, nil) end)
        for _ = 1, 5 do ticks = ticks + 1; mp.sleep(0.01) end
        flag = true
        assert.is_true(t:join())
      end)
      assert.equal(5, ticks)
    end)

    it("returns false at the deadline, outside mp.run too", function()
      local t0 = core.now()
      assert.is_false(sched.wait_until(function() return false end, core.now() + 0.1))
      assert.is_true(core.now() - t0 >= 0.09)
      assert.is_true(sched.wait_until(function() return false end, nil, function() return true end))
    end)
  end)

  describe("mp.poll()", function()
    it("delivers results to callbacks without blocking", function()
      local pool = mp.Pool(1)
      finally(function() support.close(pool) end)
      local got
      pool:apply_async(function() return 5 end, {}, { callback = function(v) got = v end })
      local deadline = core.now() + 10
      while got == nil and core.now() < deadline do
        mp.poll()
        csleep(0.001)
      end
      assert.equal(5, got)
    end)
  end)

  describe("mp.progress()", function()
    it("wraps an iterator and reports to a stream", function()
      local lines = {}
      local stream = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end,
                       flush = function() end }
      local pool = mp.Pool(2)
      finally(function() support.close(pool) end)
      local n = 0
      for _, v in mp.progress(pool:imap(function(x) return x end, { 1, 2, 3 }),
                              { total = 3, label = "work", stream = stream, tty = false }) do
        n = n + v
      end
      assert.equal(6, n)
      assert.matches("work .*3/3", lines[#lines])
    end)

    it("checks its arguments", function()
      assert.equal("bad argument #1 to 'progress' (function expected, got number)",
        errmsg(mp.progress, 1))
      assert.equal("bad argument #2 to 'progress' ('total' must be an integer, got string)",
        errmsg(mp.progress, function() end, { total = "x" }))
    end)
  end)

  describe("mp.run() ending early (issue 13)", function()
    -- pids of the processes whose argv is exactly `argv`
    local pids_of = support.pids_of

    it("ends the unfinished tasks when the main task raises", function()
      local never = false
      local late
      local dt, ok, err = support.elapsed(function()
        return mp.run(function()
          mp.spawn(function()
            mp.subprocess.run({ "sleep", "30.0413" })
            never = true
          end)
          mp.spawn(function() mp.sleep(30) end)
          late = mp.spawn(function() mp.sleep(30) end)
          mp.sleep(0.3)
          error("boom", 0)
        end)
      end)
      assert.is_false(ok)
      assert.equal("boom", err)
      assert.is_true(dt < 5, "took " .. dt)
      assert.is_false(never)
      assert.same({}, pids_of({ "sleep", "30.0413" }))   -- killed and reaped
      assert.is_true(late:ready())
      assert.is_true(mp.is_error(select(2, pcall(late.join, late)), "Cancelled"))
    end)

    it("ends the tasks on SIGINT and leaves no program running", function()
      local out, code = support.sigint_script([=[
        local mp = require "mproc"
        local ok, e = pcall(mp.run, function()
          mp.spawn(function() mp.subprocess.run({ "sleep", "30.0419" }) end)
          mp.spawn(function()
            mp.sleep(0.2)
            io.write("ready\n"); io.stdout:flush()
          end)
          mp.sleep(30)
        end)
        print(ok, mp.is_error(e, "Interrupted"))
      ]=], { "sleep", "30.0419" })
      assert.equal("false\ttrue\n", out)
      assert.equal(0, code)
      assert.same({}, pids_of({ "sleep", "30.0419" }))
    end)

    it("reports a task error nobody joined on stderr", function()
      local out = support.run_script([[
        local mp = require "mproc"
        mp.run(function()
          mp.spawn(function() error("lost error", 0) end)
          local joined = mp.spawn(function() error("seen error", 0) end)
          require("mproc.compat").pcall(joined.join, joined)  -- 5.1: a yield-safe pcall
          local checked = mp.spawn(function() error("checked error", 0) end)
          mp.wait({ checked })
          assert(checked:successful() == false)
          mp.spawn(function() return 1 end)
        end)
        print("end")
      ]])
      assert.matches(
        "^mp.run: error in a task that was never joined: lost error\nstack traceback:\n", out)
      assert.not_matches("seen error", out)
      assert.not_matches("checked error", out)
      assert.matches("\nend\n$", out)
    end)
  end)

  -- The one binding of the core's poller (src/lua/poll.c), under the pool's
  -- fileno() and the manager server.
  describe("core.poll_new", function()
    it("adds, reports ready members, changes interest and removes", function()
      local a, b = mp.Pipe()
      local made, p = core.poll_new()
      assert.is_true(made)
      assert.equal("mproc.Poller", tostring(p))
      assert.is_true(p:_ctl("add", a:fileno()))
      local ok, list = p:_wait(0)
      assert.is_true(ok)
      assert.same({}, list)
      local t = {}
      assert.equal(0, p:_ready(t))
      b:send("x")
      assert.same({ a:fileno() }, select(2, p:_wait(5)))
      assert.equal(1, p:_ready(t))
      assert.same({ [a:fileno()] = true }, t)
      local pfd = p:_fileno()
      if pfd then assert.is_true(core.poll_fd(pfd, "r", 0)) end
      assert.is_true(p:_ctl("mod", a:fileno(), "w"))   -- writable: still ready
      assert.same({ a:fileno() }, select(2, p:_wait(0)))
      assert.is_true(p:_ctl("del", a:fileno()))
      assert.same({}, select(2, p:_wait(0)))
      assert.is_true(p:_ctl("del", a:fileno()))         -- not there: no error
      p:_close()
      a:close(); b:close()
    end)

    it("returns a failure status for a second add, raises for bad arguments", function()
      local a, b = mp.Pipe()
      local p = select(2, core.poll_new())
      assert.is_true(p:_ctl("add", a:fileno()))
      local ok, kind, _, errno = p:_ctl("add", a:fileno())
      assert.is_false(ok)
      assert.equal("OSError", kind)
      assert.is_number(errno)
      assert.matches("invalid option 'put'", errmsg(p._ctl, p, "put", a:fileno()))
      assert.matches("mode must be", errmsg(p._ctl, p, "add", b:fileno(), "x"))
      assert.matches("table expected", errmsg(p._ready, p, 1))
      p:_close()
      a:close(); b:close()
    end)

    it("raises a clear error when used closed, and closes twice", function()
      local p = select(2, core.poll_new())
      do
        local q = select(2, core.poll_new())
        assert.is_number(q:_fileno() or 0)
        q:_close()
      end
      p:_close()
      p:_close()
      assert.equal("mproc.Poller (closed)", tostring(p))
      for _, call in ipairs({
        function() return p:_ctl("add", 0) end, function() return p:_ready({}) end,
        function() return p:_wait(0) end, function() return p:_fileno() end,
      }) do
        assert.equal("attempt to use a closed poller", errmsg(call))
      end
      assert.matches("mproc.Poller expected", errmsg(p._wait, {}))
    end)
  end)
end)

local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

-- Tasks reach these as upvalues, not through busted's _ENV (a table full of
-- busted's state that the codec would otherwise copy).
local error, os, tostring = error, os, tostring
local csleep, getpid, kill, SIGKILL = core.sleep, core.getpid, core.kill, core.SIGKILL

local errmsg = support.errmsg
local compat = require "mproc.compat"
local math_type, pack = compat.math_type, compat.pack
local PUC51 = _VERSION == "Lua 5.1" and not compat.luajit

local function square(x) return x * x end
local function add(a, b) return a + b end
local function spin_forever() while true do csleep(0.01) end end

local pools = {}
local function Pool(...)
  local p = mp.Pool(...)
  pools[#pools + 1] = p
  return p
end

after_each(function()
  for _, p in ipairs(pools) do pcall(p.terminate, p) end
  pools = {}
end)

describe("mproc.Pool", function()
  describe("mp.Pool()", function()
    it("starts the requested number of workers", function()
      local pool = Pool(3)
      local pids = {}
      for _ = 1, 30 do pids[pool:apply(getpid)] = true end
      local n = 0
      for pid in pairs(pids) do
        n = n + 1
        assert.not_equal(getpid(), pid)
      end
      assert.is_true(n >= 1 and n <= 3)
    end)

    it("defaults processes to mp.cpu_count()", function()
      local pool = Pool()
      assert.matches("processes=" .. mp.cpu_count(), tostring(pool))
    end)

    it("rejects bad arguments", function()
      assert.equal("bad argument #1 to 'Pool' (number or table expected, got string)",
        errmsg(mp.Pool, "x"))
      assert.equal("bad argument #1 to 'Pool' ('processes' must be >= 1)", errmsg(mp.Pool, 0))
      assert.equal("bad argument #1 to 'Pool' (unknown option 'foo')", errmsg(mp.Pool, { foo = 1 }))
      assert.equal("bad argument #1 to 'Pool' ('initializer' must be a function, got number)",
        errmsg(mp.Pool, { initializer = 1 }))
    end)

    it("can only be used by the process that created it", function()
      local pool = Pool(1)
      local code = support.in_child(function()
        local ok, err = pcall(pool.apply, pool, square, 2)
        return not ok and err:find("a pool can only be used by the process that created it",
          1, true) ~= nil
      end, 10)
      assert.equal(0, code)
      assert.equal(4, pool:apply(square, 2))
    end)

    it("is left alone by an mp.fork child that waits while it is busy", function()
      local pool = Pool(1)
      local r = pool:apply_async(function() csleep(0.2) return "mine" end)
      local pid = mp.fork()
      if pid == 0 then
        pcall(mp.sleep, 0.3)  -- a wait that would pump the inherited pool
        core.exit(0)
      end
      csleep(0.4)  -- the parent does not look meanwhile: the answer waits
      assert.equal(0, mp.waitpid(pid, 10))
      assert.equal("mine", r:get(10))
    end)

    it("runs the initializer once in each worker", function()
      local pool = Pool { processes = 2, initializer = function(v) _G.POOL_INIT = v end,
                          initargs = { "ready" } }
      assert.equal("ready", pool:apply(function() return _G.POOL_INIT end))
    end)

    it("maxtasksperchild counts a chunk as one task", function()
      local pool = Pool { processes = 1, maxtasksperchild = 1 }
      local pids = pool:map(function() return getpid() end, { 1, 2, 3, 4 }, 2)
      assert.equal(pids[1], pids[2])
      assert.not_equal(pids[2], pids[3])
      assert.equal(pids[3], pids[4])
    end)

    it("replaces a worker after maxtasksperchild tasks", function()
      local pool = Pool { processes = 1, maxtasksperchild = 2 }
      local pids = {}
      for i = 1, 6 do pids[i] = pool:apply(getpid) end
      assert.equal(pids[1], pids[2])
      assert.not_equal(pids[2], pids[3])
      assert.equal(pids[3], pids[4])
      assert.not_equal(pids[4], pids[5])
    end)
    it("raises OSError when a fork fails, and leaves no worker behind", function()
      local out = support.run_script([[
        local core = require "mproc.core"
        local mp = require "mproc"
        local fork, calls, pids = core.process_fork, 0, {}
        core.process_fork = function(...)
          calls = calls + 1
          if calls == 3 then
            return false, "OSError", "fork: Resource temporarily unavailable", 11
          end
          local ok, pid, child = fork(...)
          if ok and pid ~= 0 then pids[#pids + 1] = pid end
          return ok, pid, child
        end
        local ok, err = pcall(mp.get_context("fork").Pool, 4)   -- about fork itself
        print(ok, mp.is_error(err, "OSError"), err.message)
        for _, pid in ipairs(pids) do
          print(pid, core.kill(pid, 0) and "alive" or "gone")
        end
      ]])
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal("false\ttrue\tfork: Resource temporarily unavailable", lines[1], out)
      assert.equal(3, #lines, out)  -- the two workers forked before the failure
      assert.matches("^%d+\tgone$", lines[2])
      assert.matches("^%d+\tgone$", lines[3])
    end)
  end)

  describe(":apply()", function()
    it("returns every value, nil included", function()
      local pool = Pool(2)
      local r = pack(pool:apply(function(a) return a, nil, "x" end, 1))
      assert.same({ 1, nil, "x", n = 3 }, r)
    end)

    it("runs closures with upvalues", function()
      local pool = Pool(1)
      local k = 10
      assert.equal(15, pool:apply(function(x) return x + k end, 5))
    end)

    it("raises TaskError with the worker's traceback; the worker lives on", function()
      local pool = Pool(1)
      local pid = pool:apply(getpid)
      local err = errmsg(pool.apply, pool, function() error("boom") end)
      assert.is_true(mp.is_error(err, "TaskError"))
      assert.matches("boom", err.message)
      assert.matches("boom", err.value)
      assert.matches("stack traceback", err.traceback)
      assert.equal(pid, pool:apply(getpid))
    end)

    it("keeps a table error value", function()
      local pool = Pool(1)
      local err = errmsg(pool.apply, pool, function() error({ code = 7 }) end)
      assert.equal(7, err.value.code)
    end)

    it("raises SerializeError at the caller for an unsendable argument", function()
      local pool = Pool(1)
      local err = errmsg(pool.apply, pool, print, coroutine.create(function() end))
      assert.is_true(mp.is_error(err, "SerializeError"))
      assert.equal("args[1]: cannot send a coroutine", err.message)
    end)

    it("raises SerializeError for an unsendable result", function()
      local pool = Pool(1)
      local err = errmsg(pool.apply, pool, function() return coroutine.create(function() end) end)
      assert.is_true(mp.is_error(err, "SerializeError"))
    end)

    it("fails the task with SerializeError when the worker cannot receive it", function()
      local pool = Pool(1)
      pool:apply(square, 1)
      -- a C function of a module loaded after the worker started: sent by
      -- name, unknown there
      package.loaded.late_module = { iter = string.gmatch("a", "a") }
      finally(function() package.loaded.late_module = nil end)
      local err = errmsg(pool.apply, pool, function(f) return f end,
        package.loaded.late_module.iter)
      assert.is_true(mp.is_error(err, "SerializeError"))
      assert.matches("cannot receive the task", err.message)
      assert.equal(4, pool:apply(square, 2))
    end)

    it("rejects a non-function", function()
      local pool = Pool(1)
      assert.equal("bad argument #1 to 'apply' (function expected, got number)",
        errmsg(pool.apply, pool, 1))
    end)
  end)

  describe(":apply_async()", function()
    it("returns an AsyncResult", function()
      local pool = Pool(2)
      local r = pool:apply_async(add, { 1, 2 })
      assert.equal(3, r:get(10))
      assert.is_true(r:ready())
      assert.is_true(r:successful())
    end)

    it("runs callback in the parent", function()
      local pool = Pool(2)
      local got
      local r = pool:apply_async(add, { 2, 3 }, { callback = function(v) got = v end })
      r:wait(10)
      assert.equal(5, got)
    end)

    it("runs error_callback with the error", function()
      local pool = Pool(2)
      local got
      local r = pool:apply_async(function() error("bad") end, {},
        { error_callback = function(e) got = e end })
      assert.is_false(r:wait(10) and r:successful())
      assert.is_true(mp.is_error(got, "TaskError"))
    end)

    it("fails a task past its timeout with Timeout and replaces the worker", function()
      local pool = Pool(1)
      local pid = pool:apply(getpid)
      local t0 = core.now()
      local r = pool:apply_async(spin_forever, {}, { timeout = 0.2 })
      local err = errmsg(r.get, r, 10)
      assert.is_true(mp.is_error(err, "Timeout"))
      local dt = core.now() - t0
      assert.is_true(dt >= 0.18 and dt < 3, "took " .. dt)
      local pid2 = pool:apply(getpid)
      assert.not_equal(pid, pid2)
      assert.is_false(support.alive(pid))
    end)

    it("rejects bad options", function()
      local pool = Pool(1)
      assert.equal("bad argument #2 to 'apply_async' (table expected, got number)",
        errmsg(pool.apply_async, pool, add, 1))
      assert.equal("bad argument #3 to 'apply_async' ('callback' must be a function, got number)",
        errmsg(pool.apply_async, pool, add, {}, { callback = 1 }))
      assert.equal("bad argument #3 to 'apply_async' (timeout must be >= 0)",
        errmsg(pool.apply_async, pool, add, {}, { timeout = -1 }))
    end)
  end)

  describe(":submit()", function()
    it("takes the arguments directly", function()
      local pool = Pool(1)
      assert.equal(7, pool:submit(add, 3, 4):get(10))
    end)
  end)

  describe("worker death", function()
    it("fails the running task with WorkerLost; every other task completes", function()
      local pool = Pool(2)
      local rs = {}
      for i = 1, 20 do
        if i == 7 then
          rs[i] = pool:apply_async(function() csleep(0.05); kill(getpid(), SIGKILL) end)
        else
          rs[i] = pool:apply_async(function(x) csleep(0.01) return x end, { i })
        end
      end
      for i = 1, 20 do
        if i == 7 then
          local err = errmsg(rs[i].get, rs[i], 10)
          assert.is_true(mp.is_error(err, "WorkerLost"))
          assert.equal(-9, err.exitcode)
        else
          assert.equal(i, rs[i]:get(10))
        end
      end
    end)

    it("reports os.exit in a task as WorkerLost with the exit code", function()
      local pool = Pool(1)
      local err = errmsg(pool.apply, pool, function() os.exit(3) end)
      assert.is_true(mp.is_error(err, "WorkerLost"))
      assert.equal(3, err.exitcode)
      assert.equal(4, pool:apply(add, 2, 2))
    end)

    it("reports a crash in C (SIGSEGV) as WorkerLost", function()
      local pool = Pool(1)
      local err = errmsg(pool.apply, pool, function() kill(getpid(), core.SIGSEGV or 11) end)
      assert.is_true(mp.is_error(err, "WorkerLost"))
      assert.equal(-11, err.exitcode)
      assert.equal(1, pool:apply(square, 1))
    end)

    it("fails a map whose chunk was lost, and the pool goes on", function()
      local pool = Pool(2)
      local err = errmsg(pool.map, pool, function(x)
        if x == 5 then kill(getpid(), SIGKILL) end
        return x
      end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 2)
      assert.is_true(mp.is_error(err, "WorkerLost"))
      assert.same({ 1, 4, n = 2 }, pool:map(square, { 1, 2 }))
    end)

    it("survives a worker killed from outside while idle", function()
      local pool = Pool(1)
      local pid = pool:apply(getpid)
      kill(pid, SIGKILL)
      assert.is_true(support.wait_until(function() return not support.alive(pid) end, 5))
      assert.equal(9, pool:apply(square, 3))
    end)
  end)

  describe(":map()", function()
    it("returns the first values in order, with n", function()
      local pool = Pool(2)
      local r = pool:map(square, { 1, 2, 3, 4, 5, 6, 7 })
      assert.same({ 1, 4, 9, 16, 25, 36, 49, n = 7 }, r)
    end)

    it("keeps integer and float subtypes, -0.0, NaN and the extremes", function()
      -- all-number chunks travel packed (src/lua/pool.c); the values must not change
      local pool = Pool(2)
      -- the extremes: 64-bit integers on 5.3+; 5.1 and LuaJIT have doubles only,
      -- whose integral range (exact) ends at 2^53
      local min, max = math.mininteger or -2 ^ 53, math.maxinteger or 2 ^ 53
      local items = { 1, 2.0, -0.0, 0 / 0, min, max, 1e308, -1.5 }
      local r = pool:map(function(x) return x end, items, 3)
      assert.equal(8, r.n)
      for i, v in ipairs(items) do
        if v ~= v then assert.is_true(r[i] ~= r[i])
        else
          assert.equal(math_type(v), math_type(r[i]))
          assert.equal(v, r[i])
          assert.equal(1 / v, 1 / r[i])  -- the sign of a zero
        end
      end
      assert.equal(-math.huge, 1 / r[3])
      local big = {}
      for i = 1, 5000 do big[i] = i end
      local sq = pool:map(square, big)
      assert.equal(5000, sq.n)
      for i = 1, 5000 do assert.equal(i * i, sq[i]) end
    end)

    it("mixes packed and unpacked chunks: strings, tables with a metatable", function()
      local pool = Pool(2)
      local r = pool:map(function(x) return x == 3 and "three" or x end, { 1, 2, 3, 4, 5, 6 }, 2)
      assert.same({ 1, 2, "three", 4, 5, 6, n = 6 }, r)
      local items = setmetatable({ 1, 2, 3 }, { __index = function(_, k)
        if math_type(k) == "integer" then return 0 end
      end })
      assert.same({ 1, 4, 9, n = 3 }, pool:map(square, items))
      local seen = {}
      for i, v in pool:imap(square, { 1, 2.5, 3 }, 2) do seen[i] = v end
      assert.same({ 1, 6.25, 9 }, seen)
      assert.equal("float", math_type(seen[2]))
    end)

    it("keeps nil results", function()
      local pool = Pool(2)
      local r = pool:map(function(x) if x % 2 == 0 then return x end end, { 1, 2, 3 }, 1)
      assert.equal(3, r.n)
      assert.is_nil(r[1]); assert.equal(2, r[2]); assert.is_nil(r[3])
    end)

    it("accepts an iterator function and an empty list", function()
      local pool = Pool(2)
      local i = 0
      local r = pool:map(square, function() i = i + 1; if i <= 3 then return i end end)
      assert.same({ 1, 4, 9, n = 3 }, r)
      assert.same({ n = 0 }, pool:map(square, {}))
    end)

    it("raises TaskError when an item fails", function()
      local pool = Pool(2)
      local err = errmsg(pool.map, pool, function(x) if x == 3 then error("three") end
        return x end, { 1, 2, 3, 4 }, 1)
      assert.is_true(mp.is_error(err, "TaskError"))
      assert.matches("three", err.message)
    end)

    it("raises SerializeError for an unsendable item", function()
      local pool = Pool(2)
      local err = errmsg(pool.map, pool, square, { 1, coroutine.create(function() end) }, 1)
      assert.is_true(mp.is_error(err, "SerializeError"))
      assert.matches("cannot send a coroutine", err.message)
      local seen = 0
      local co = coroutine.create(function() end)
      local ok, e2 = pcall(function()
        for _ in pool:imap(square, { 1, 2, co }) do seen = seen + 1 end
      end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e2, "SerializeError"))
      assert.equal(4, pool:apply(square, 2))
    end)

    it("rejects a bad chunksize", function()
      local pool = Pool(1)
      assert.equal("bad argument #3 to 'map' (chunksize must be >= 1)",
        errmsg(pool.map, pool, square, { 1 }, 0))
      assert.equal("bad argument #2 to 'map' (table or function expected, got number)",
        errmsg(pool.map, pool, square, 1))
    end)

    it("passes a Queue and a Lock by reference", function()
      local pool = Pool(2)
      local q, lock = mp.Queue(), mp.Lock()
      pool:map(function(n)
        lock:acquire()
        q:put(n * 10)
        lock:release()
      end, { 1, 2, 3 }, 1)
      local got = 0
      for _ = 1, 3 do got = got + q:get(5) end
      assert.equal(60, got)
      pool:close()
      assert.is_true(pool:join(10))  -- the workers let go of their handles
      q:close(); lock:close()
    end)

    it("passes mproc objects by reference", function()
      local pool = Pool(2)
      local v = mp.Value("int64", 0)
      pool:map(function(n) v:add(n) end, { 1, 2, 3, 4 }, 1)
      assert.equal(10, v.value)
      pool:close()
      assert.is_true(pool:join(10))  -- the workers let go of their handles
      v:close()
    end)
  end)

  describe(":map_async()", function()
    it("calls callback with the list", function()
      local pool = Pool(2)
      local got
      local r = pool:map_async(square, { 2, 3 }, { callback = function(l) got = l end })
      assert.same({ 4, 9, n = 2 }, r:get(10))
      assert.same({ 4, 9, n = 2 }, got)
    end)

    it("rejects options that are not a table", function()
      local pool = Pool(1)
      assert.equal("bad argument #3 to 'map_async' (table expected, got number)",
        errmsg(pool.map_async, pool, square, { 1 }, 5))
      assert.equal("bad argument #3 to 'starmap_async' (table expected, got string)",
        errmsg(pool.starmap_async, pool, add, { { 1, 2 } }, "x"))
      local line, ok, e = debug.getinfo(1, "l").currentline + 1, pcall(function()
        pool:map_async(square, { 1 }, 5) end)
      assert.is_false(ok)
      assert.matches("^spec/pool_spec%.lua:" .. line .. ": ", e)  -- blames the caller
    end)
  end)

  describe(":starmap()", function()
    it("unpacks each argument list", function()
      local pool = Pool(2)
      assert.same({ 3, 7, n = 2 }, pool:starmap(add, { { 1, 2 }, { 3, 4 } }))
      assert.same({ 3, n = 1 }, pool:starmap_async(add, { { 1, 2 } }):get(10))
    end)
  end)

  describe(":imap()", function()
    it("runs inside mp.run, other tasks going on while it waits", function()
      local pool = Pool(2)
      local got, ticks, seen = {}, 0, nil
      mp.run(function()
        mp.spawn(function()
          for _ = 1, 3 do mp.sleep(0.02); ticks = ticks + 1 end
        end)
        local f = function(x) csleep(0.05) return x * 2 end
        if PUC51 then
          -- plain Lua 5.1 cannot yield from an iterator that a generic for
          -- calls: the iterator is called directly there (docs/pool.md)
          local nxt = pool:imap(f, { 1, 2, 3, 4 })
          local i, v = nxt()
          while i do got[i] = v; i, v = nxt() end
        else
          for i, v in pool:imap(f, { 1, 2, 3, 4 }) do got[i] = v end
        end
        seen = ticks  -- the loop took >= 0.1 s: the other task ran meanwhile
      end)
      assert.same({ 2, 4, 6, 8 }, got)
      assert.is_true(seen >= 1)
      assert.equal(3, ticks)
    end)

    it("yields index and value in order", function()
      local pool = Pool(2)
      local got = {}
      for i, v in pool:imap(square, { 1, 2, 3, 4 }) do got[#got + 1] = i .. "=" .. v end
      assert.same({ "1=1", "2=4", "3=9", "4=16" }, got)
    end)

    it("consumes an endless iterator lazily", function()
      local pool = Pool(2)
      local produced = 0
      local function gen() produced = produced + 1; return produced end
      local sum = 0
      for i, v in pool:imap(square, gen) do
        sum = sum + v
        if i == 10 then break end
      end
      assert.equal(385, sum)
      assert.is_true(produced < 10000)
    end)

    it("raises the task's error at its position", function()
      local pool = Pool(2)
      local seen = 0
      local ok, err = pcall(function()
        for _ in pool:imap(function(x) if x == 3 then error("x3") end return x end,
                           { 1, 2, 3, 4 }) do
          seen = seen + 1
        end
      end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(err, "TaskError"))
      assert.equal(2, seen)
    end)
  end)

  describe(":imap_unordered()", function()
    it("yields every input index once", function()
      local pool = Pool(2)
      local seen, n = {}, 0
      for i, v in pool:imap_unordered(square, { 5, 6, 7, 8, 9 }, 2) do
        assert.is_nil(seen[i])
        seen[i] = v
        n = n + 1
      end
      assert.equal(5, n)
      assert.same({ 25, 36, 49, 64, 81 }, seen)
    end)
  end)

  describe(":close() and :join()", function()
    it("join before close raises", function()
      local pool = Pool(1)
      assert.equal("pool is still running", errmsg(pool.join, pool))
    end)

    it("finishes the queued work, then the workers end", function()
      local pool = Pool(2)
      local rs = {}
      for i = 1, 10 do rs[i] = pool:apply_async(function(x) csleep(0.01) return x end, { i }) end
      pool:close()
      assert.equal("pool is not running", errmsg(pool.apply, pool, square, 1))
      assert.is_true(pool:join(10))
      for i = 1, 10 do assert.equal(i, rs[i]:get(0)) end
    end)
  end)

  describe(":terminate()", function()
    it("is what a pool that is collected unclosed gets (on 5.1 and LuaJIT too)", function()
      local pool = mp.Pool(2)
      local pids = {}
      for i, w in ipairs(pool._workers) do pids[i] = w.pid end
      assert.equal(2, #pids)
      pool:apply(getpid)      -- (a spawned worker has attached the rings)
      local tasks, results = pool._board:_names()
      pool = nil  -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      for _, pid in ipairs(pids) do
        assert.is_true(support.wait_until(function() return not support.alive(pid) end, 10))
      end
      -- its rings too, whatever the start method (a spawned worker maps
      -- them by name until it has died)
      for _, name in ipairs { tasks, results } do
        assert.is_nil(io.open("/dev/shm/" .. name:gsub("^/", "")), name)
      end
    end)

    it("stops at once and fails what was pending", function()
      local pool = Pool(1)
      local pid = pool:apply(getpid)
      local r = pool:apply_async(spin_forever)
      local t0 = core.now()
      pool:terminate()
      assert.is_true(core.now() - t0 < 3)
      assert.is_true(mp.is_error(errmsg(r.get, r, 1), "Cancelled"))
      assert.is_false(support.alive(pid))
      assert.is_true(pool:join(1))
    end)

    it("leaves no process when the parent gets SIGTERM or SIGINT", function()
      for _, sig in ipairs { core.SIGTERM, core.SIGINT } do
        local path = os.tmpname()
        local pid = mp.fork()
        if pid == 0 then
          local pool = mp.Pool(2)
          local f = io.open(path, "w")
          for _, w in ipairs(pool._workers) do f:write(w.pid, "\n") end
          f:close()
          pool:apply_async(spin_forever):get(30)
          core.exit(0)
        end
        local pids
        assert.is_true(support.wait_until(function()
          local f = io.open(path)
          local s = f and f:read("*a")
          if f then f:close() end
          pids = {}
          for w in (s or ""):gmatch("%d+") do pids[#pids + 1] = tonumber(w) end
          return #pids == 2
        end, 10))
        os.remove(path)
        kill(pid, sig)
        assert.is_not_nil(mp.waitpid(pid, 10))
        for _, w in ipairs(pids) do
          assert.is_true(support.wait_until(function() return not support.alive(w) end, 3))
        end
      end
    end)
  end)

  describe(":fileno()", function()
    it("drives a pool from a luv event loop", function()
      local has_luv, uv = pcall(require, "luv")
      if not has_luv then return pending("lua-luv is not installed") end
      local pool = Pool(2)
      local got, n = {}, 0
      for i = 1, 10 do
        pool:apply_async(square, { i }, { callback = function(v) got[i] = v; n = n + 1 end })
      end
      local poll = uv.new_poll(pool:fileno())
      local timer = uv.new_timer()
      poll:start("r", function()
        mp.poll()
        if n == 10 then poll:stop(); timer:stop() end
      end)
      timer:start(10000, 0, function() poll:stop() end)  -- safety net
      mp.poll()  -- results that came before the loop started
      if n < 10 then uv.run() end
      poll:close(); timer:close()
      uv.run("nowait")
      assert.equal(10, n)
      for i = 1, 10 do assert.equal(i * i, got[i]) end
    end)

    it("is readable when a result is waiting, and mp.poll() delivers it", function()
      local pool = Pool(1)
      local got
      pool:apply_async(square, { 6 }, { callback = function(v) got = v end })
      local fd = pool:fileno()
      local deadline = core.now() + 10
      while got == nil and core.now() < deadline do
        core.poll_fd(fd, "r", 0.5)
        mp.poll()
      end
      assert.equal(36, got)
    end)
  end)
end)

local mp = require "mproc"
local support = require "support"
local core = require "mproc.core"
local pack = require("mproc.compat").pack
local PUC51 = _VERSION == "Lua 5.1" and not require("mproc.compat").luajit

local error = error
local csleep = core.sleep

local errmsg = support.errmsg

local function nap(s, v) csleep(s) return v end
local function fail(msg) error(msg) end

local pool
before_each(function() pool = mp.Pool(2) end)
after_each(function() pool:terminate() end)

describe("mproc.AsyncResult", function()
  describe(":get()", function()
    it("returns every value", function()
      local r = pool:apply_async(function() return 1, nil, 3 end)
      assert.same({ 1, nil, 3, n = 3 }, pack(r:get(10)))
    end)

    it("raises Timeout when the wait runs out; the task goes on", function()
      local r = pool:apply_async(nap, { 0.3, "late" })
      local t0 = core.now()
      local err = errmsg(r.get, r, 0.1)
      local dt = core.now() - t0
      assert.is_true(mp.is_error(err, "Timeout"))
      assert.is_true(dt >= 0.09 and dt < 1.5, "took " .. dt)
      assert.equal("late", r:get(10))
    end)

    it("raises TaskError", function()
      local r = pool:apply_async(fail, { "bad" })
      assert.is_true(mp.is_error(errmsg(r.get, r, 10), "TaskError"))
    end)

    it("rejects a bad timeout", function()
      local r = pool:apply_async(nap, { 0, 1 })
      assert.equal("bad argument #1 to 'get' (timeout must be >= 0)", errmsg(r.get, r, -1))
      assert.equal("bad argument #1 to 'get' (number expected, got string)", errmsg(r.get, r, "x"))
      r:get(10)
    end)
  end)

  describe(":wait()", function()
    it("returns false on timeout, true when ready", function()
      local r = pool:apply_async(nap, { 0.2, 1 })
      assert.is_false(r:wait(0.01))
      assert.is_false(r:ready())
      assert.is_true(r:wait(10))
      assert.is_true(r:ready())
    end)
  end)

  describe(":successful()", function()
    it("raises when not ready", function()
      local r = pool:apply_async(nap, { 0.2, 1 })
      assert.equal("result is not ready", errmsg(r.successful, r))
      r:wait(10)
      assert.is_true(r:successful())
      local f = pool:apply_async(fail, { "x" })
      f:wait(10)
      assert.is_false(f:successful())
    end)
  end)

  describe(":cancel()", function()
    it("cancels a task that has not started", function()
      local p1 = mp.Pool(1)
      local busy = {}
      for i = 1, 4 do busy[i] = p1:apply_async(nap, { 0.1, i }) end
      local r = p1:apply_async(nap, { 0, "never" })
      assert.is_true(r:cancel())
      assert.is_true(r:cancelled())
      assert.is_true(mp.is_error(errmsg(r.get, r, 1), "Cancelled"))
      for i = 1, 4 do assert.equal(i, busy[i]:get(10)) end
      assert.is_false(busy[1]:cancel())
      assert.is_false(busy[1]:cancelled())
      p1:terminate()
    end)
  end)

  describe(":add_done_callback()", function()
    it("runs fn(r) once the result is done, before get returns", function()
      local seen
      local r = pool:apply_async(nap, { 0.05, 5 })
      r:add_done_callback(function(x) seen = x end)
      assert.equal(5, r:get(10))
      assert.equal(r, seen)
    end)

    it("added after completion, runs at the next dispatch point", function()
      local r = pool:apply_async(nap, { 0, 1 })
      r:get(10)
      local ran = false
      r:add_done_callback(function() ran = true end)
      assert.is_false(ran)
      mp.poll()
      assert.is_true(ran)
    end)

    it("rejects a non-function", function()
      local r = pool:apply_async(nap, { 0, 1 })
      assert.equal("bad argument #1 to 'add_done_callback' (function expected, got number)",
        errmsg(r.add_done_callback, r, 1))
      r:get(10)
    end)
  end)

  describe("callbacks", function()
    it("run in completion order, never re-entered", function()
      local order, depth, maxdepth = {}, 0, 0
      local rs = {}
      for i, d in ipairs { 0.3, 0.1, 0.2 } do
        rs[i] = pool:apply_async(nap, { d, i }, { callback = function(v)
          depth = depth + 1
          maxdepth = math.max(maxdepth, depth)
          order[#order + 1] = v
          rs[1]:wait(10)  -- waiting inside a callback does not run callbacks
          depth = depth - 1
        end })
      end
      local p1 = mp.Pool(1)
      for i = 1, 3 do rs[i]:wait(10) end
      p1:terminate()
      assert.equal(1, maxdepth)
      assert.equal(3, #order)
    end)

    it("an error in a callback reaches the waiting caller and breaks nothing", function()
      local r1 = pool:apply_async(nap, { 0, 1 },
        { callback = function() error("cb failed", 0) end })
      local ran = false
      local r2 = pool:apply_async(nap, { 0.05, 2 }, { callback = function() ran = true end })
      local ok, err = pcall(function() r1:get(10); r2:get(10) end)
      if not ok then assert.equal("cb failed", err) end
      assert.equal(2, r2:get(10))
      assert.is_true(ran)
      assert.equal(1, r1:get(10))
    end)
  end)
end)

describe("mp.wait()", function()
  it("ALL_COMPLETED waits for all", function()
    local rs = { pool:apply_async(nap, { 0.05, 1 }), pool:apply_async(nap, { 0.1, 2 }) }
    local done, pending = mp.wait(rs, { timeout = 10 })
    assert.equal(2, #done)
    assert.equal(0, #pending)
  end)

  it("FIRST_COMPLETED returns as soon as one is done", function()
    local rs = { pool:apply_async(nap, { 0.5, 1 }), pool:apply_async(nap, { 0, 2 }) }
    local done, pending = mp.wait(rs, { timeout = 10, return_when = "FIRST_COMPLETED" })
    assert.equal(1, #done)
    assert.equal(rs[2], done[1])
    assert.equal(1, #pending)
  end)

  it("FIRST_EXCEPTION returns at the first failure", function()
    local rs = { pool:apply_async(nap, { 0.5, 1 }), pool:apply_async(fail, { "x" }) }
    local done, pending = mp.wait(rs, { timeout = 10, return_when = "FIRST_EXCEPTION" })
    assert.equal(1, #done)
    assert.equal(1, #pending)
  end)

  it("returns what is done when the timeout runs out", function()
    local rs = { pool:apply_async(nap, { 0.5, 1 }) }
    local done, pending = mp.wait(rs, { timeout = 0.05 })
    assert.equal(0, #done)
    assert.equal(1, #pending)
  end)

  it("rejects bad arguments", function()
    assert.equal("bad argument #1 to 'wait' (table expected, got number)", errmsg(mp.wait, 1))
    assert.equal("bad argument #2 to 'wait' (return_when must be ALL_COMPLETED, "
      .. "FIRST_COMPLETED or FIRST_EXCEPTION)", errmsg(mp.wait, {}, { return_when = "x" }))
    assert.equal("bad argument #1 to 'wait' (AsyncResult, Process, Pipe end or Popen expected "
      .. "at index 1, got number)", errmsg(mp.wait, { 1 }))
  end)
end)

describe("mp.as_completed()", function()
  it("yields results in completion order", function()
    local rs = { pool:apply_async(nap, { 0.3, 1 }), pool:apply_async(nap, { 0.05, 2 }) }
    local got = {}
    for r in mp.as_completed(rs, 10) do got[#got + 1] = r:get() end
    assert.same({ 2, 1 }, got)
  end)

  it("raises Timeout when the time runs out", function()
    local rs = { pool:apply_async(nap, { 0.5, 1 }) }
    local err = errmsg(function() for _ in mp.as_completed(rs, 0.05) do end end)
    assert.is_true(mp.is_error(err, "Timeout"))
  end)
end)

describe("mp.gather()", function()
  it("returns each first value, with n", function()
    local g = mp.gather(pool:apply_async(nap, { 0, 1 }), pool:apply_async(nap, { 0, nil }),
      pool:apply_async(nap, { 0, 3 }))
    assert.same({ 1, nil, 3, n = 3 }, g)
  end)

  it("raises the first error", function()
    local err = errmsg(mp.gather, pool:apply_async(nap, { 0, 1 }), pool:apply_async(fail, { "g" }))
    assert.is_true(mp.is_error(err, "TaskError"))
  end)

  it("rejects a non-result", function()
    assert.equal("bad argument #2 to 'gather' (AsyncResult expected, got number)",
      errmsg(mp.gather, pool:apply_async(nap, { 0, 1 }), 2))
  end)
end)

describe("Timeout.where (issue 13)", function()
  it("is \"wait\" when get's own wait ran out", function()
    local r = pool:apply_async(nap, { 0.3, "late" })
    local err = errmsg(r.get, r, 0.05)
    assert.is_true(mp.is_error(err, "Timeout"))
    assert.equal("wait", err.where)
    err = errmsg(function() for _ in mp.as_completed({ r }, 0.01) do end end)
    assert.equal("wait", err.where)
    assert.equal("late", r:get(10))
  end)
end)

describe("mp.wait() and mp.as_completed() on other objects (issue 13)", function()
  local function sleeper(s)
    local p = mp.Process(function() csleep(s) end)
    p:start()
    return p
  end

  it("wait for Processes, Pipe ends and Popen objects with results", function()
    local a, b = mp.Pipe()
    local p = sleeper(1)
    local sp = mp.subprocess.Popen({ "sleep", "0.2" })
    local r = pool:apply_async(nap, { 0.6, 1 })
    local t0 = core.now()
    local done, pending = mp.wait({ p, a, sp, r },
      { return_when = "FIRST_COMPLETED", timeout = 10 })
    assert.same({ sp }, done)
    assert.same({ p, a, r }, pending)
    assert.is_true(core.now() - t0 >= 0.15, "too early")
    b:send("x")
    done = mp.wait({ p, a }, { return_when = "FIRST_COMPLETED", timeout = 10 })
    assert.same({ a }, done)        -- readable now: a Pipe end is ready while data waits
    done, pending = mp.wait({ p, a, sp, r }, { timeout = 10 })
    assert.equal(4, #done)
    assert.same({}, pending)
    assert.equal(0, p.exitcode)
    assert.equal(0, sp.returncode)
    assert.equal("x", a:recv())
    local _, left = mp.wait({ a }, { timeout = 0.05 })   -- nothing to read: pending
    assert.same({ a }, left)
    b:close()
    done = mp.wait({ a }, { timeout = 10 })              -- a closed peer counts as ready
    assert.same({ a }, done)
    a:close()
  end)

  it("as_completed yields them as they end, inside mp.run too", function()
    local got = {}
    mp.run(function()
      local a, b = mp.Pipe()
      local p = mp.Process(function() csleep(0.3) end)
      p:start()
      local sp = mp.subprocess.Popen({ "sleep", "1.0" })   -- well after p on a busy machine
      local t = mp.spawn(function() mp.sleep(0.15); b:send("hi") end)
      local ticks = 0
      mp.spawn(function()   -- the scheduler runs other tasks meanwhile
        for _ = 1, 5 do mp.sleep(0.02); ticks = ticks + 1 end
      end)
      local function see(x)
        got[#got + 1] = x == sp and "popen" or x == p and "process" or x == a and "pipe" or "task"
        if x == a then assert.equal("hi", a:recv()) end
      end
      if PUC51 then
        -- Lua 5.1 cannot yield from an iterator that a generic for calls:
        -- the iterator is called directly there
        local nxt = mp.as_completed({ sp, p, a, t }, 10)
        local x = nxt()
        while x ~= nil do see(x); x = nxt() end
      else
        for x in mp.as_completed({ sp, p, a, t }, 10) do see(x) end
      end
      assert.equal(5, ticks)
      a:close(); b:close()
    end)
    -- the task ends right after its send, so either order of those two
    assert.is_true(got[1] == "task" or got[1] == "pipe")
    assert.is_true(got[2] == "task" or got[2] == "pipe")
    assert.same({ "process", "popen" }, { got[3], got[4] })
  end)

  it("a Popen without a pidfd is polled", function()
    local sp = mp.subprocess.Popen({ "sleep", "0.1" })
    local ud = sp._ud
    sp._ud = setmetatable({ _waitfd = function() return nil end },
      { __index = function(_, k) return function(_, ...) return ud[k](ud, ...) end end })
    local done = mp.wait({ sp }, { timeout = 10 })
    assert.same({ sp }, done)
    sp._ud = ud
    assert.equal(0, sp.returncode)
  end)

  it("check their arguments", function()
    assert.equal("bad argument #1 to 'wait' (AsyncResult, Process, Pipe end or Popen expected "
      .. "at index 2, got number)", errmsg(mp.wait, { pool:apply_async(nap, { 0, 1 }), 5 }))
    assert.equal("bad argument #1 to 'as_completed' (Process at index 1 is not started)",
      errmsg(mp.as_completed, { mp.Process(function() end) }))
    assert.equal("bad argument #2 to 'wait' (unknown option 'timout'; did you mean 'timeout'?)",
      errmsg(mp.wait, {}, { timout = 1 }))
    assert.equal("bad argument #2 to 'wait' (table expected, got number)", errmsg(mp.wait, {}, 1))
  end)
end)

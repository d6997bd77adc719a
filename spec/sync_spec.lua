local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local SIGINT, SIGTERM, SIGKILL = 2, core.SIGTERM, core.SIGKILL

-- Seconds fn took, then its results.
local function timed(fn, ...)
  local t0 = core.now()
  local r = table.pack(fn(...))
  return core.now() - t0, table.unpack(r, 1, r.n)
end

local error_of = support.errmsg

local shm_of = support.shm_of

local in_children, all_zero = support.in_children, support.all_zero

-- Lock and RLock alike: only the holder may release.
local function released_by_other(l)
  l:acquire()
  assert.equal(0, support.in_child(function()
    local ok, e = pcall(l.release, l)
    return not ok and e:find("cannot release a lock held by another process", 1, true) ~= nil
  end))
  l:release()
end

describe("mproc.Lock", function()
  describe(":acquire()", function()
    it("takes a free lock and refuses a held one", function()
      local l = mp.Lock()
      assert.is_true(l:acquire())
      assert.is_false(l:acquire(0))
      l:release()
      assert.is_true(l:acquire(0))
      l:release()
    end)

    it("is not recursive: the holder waits until its timeout", function()
      local l = mp.Lock()
      l:acquire()
      local dt, ok = timed(l.acquire, l, 0.2)
      assert.is_false(ok)
      assert.is_true(dt >= 0.18 and dt < 1.5)
      l:release()
    end)

    it("times out while another process holds it", function()
      local l, e = mp.Lock(), mp.Event()
      local p = mp.Process(function()
        l:acquire(); e:set(); core.sleep(0.6); l:release()
      end)
      p:start()
      assert.is_true(e:wait(10))
      local dt, ok = timed(l.acquire, l, 0.2)
      assert.is_false(ok)
      assert.is_true(dt >= 0.18 and dt < 1.5)
      assert.is_true(l:acquire(10))   -- released by the child
      l:release()
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)

    it("gives exact counts under contention (4 processes x 10000)", function()
      local l = mp.Lock()
      local v = mp.Value("int64", 0, { lock = false })
      all_zero(in_children(4, function()
        for _ = 1, 10000 do
          l:acquire()
          v.value = v.value + 1
          l:release()
        end
      end))
      assert.equal(40000, v.value)
    end)

    it("recovers from a holder killed while holding it (owner_died)", function()
      local l, e = mp.Lock(), mp.Event()
      local p = mp.Process(function() l:acquire(); e:set(); core.sleep(30) end)
      p:start()
      assert.is_true(e:wait(10))
      assert.is_false(l:acquire(0))
      p:kill()
      assert.is_true(p:join(10))
      local dt, ok = timed(l.acquire, l, 5)
      assert.is_true(ok)
      assert.is_true(dt < 1)
      assert.is_true(l.owner_died)
      l:release()
      assert.is_true(l:acquire(1))
      assert.is_false(l.owner_died)
      l:release()
    end)

    it("returns to Lua on SIGINT while waiting", function()
      local out = support.run_script([[
        local mp = require "mproc"
        local core = require "mproc.core"
        local l = mp.Lock()
        l:acquire()
        local me = mp.getpid()
        local pid = mp.fork()
        if pid == 0 then core.sleep(0.3); core.kill(me, 2); core.exit(0) end
        local ok, e = pcall(l.acquire, l, 20)
        mp.waitpid(pid, 5)
        print("result", ok, e)
      ]])
      assert.equal("result\tfalse\tInterrupted: interrupted by SIGINT while waiting\n", out)
      assert.is_number(SIGINT)
    end)

    it("checks its arguments", function()
      local l = mp.Lock()
      assert.has_error(function() l:acquire("x") end,
        "bad argument #1 to 'acquire' (number expected, got string)")
      assert.has_error(function() l:acquire(-1) end,
        "bad argument #1 to 'acquire' (timeout must be >= 0)")
      assert.has_error(function() l.acquire(42) end,
        "bad argument #1 to 'acquire' (mproc.Lock expected, got number)")
      assert.has_error(function() l.release(mp.RLock()) end,
        "bad argument #1 to 'release' (mproc.Lock expected, got mproc.RLock)")
    end)
  end)

  describe(":release()", function()
    it("raises when the lock is not held", function()
      local l = mp.Lock()
      assert.has_error(function() l:release() end, "cannot release un-acquired lock")
    end)

    it("raises when another process holds it", function() released_by_other(mp.Lock()) end)
  end)

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

    it("raises Timeout when it cannot acquire in time", function()
      local l = mp.Lock()
      l:acquire()
      local dt, e = timed(error_of, function() local _ <close> = l:guard(0.2) end)
      assert.is_true(mp.is_error(e, "Timeout"))
      assert.equal("could not acquire the Lock within 0.2 s", e.message)
      assert.is_true(dt >= 0.18 and dt < 1.5)
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
    it("makes every method raise", function()
      local l = mp.Lock()
      l:close()
      l:close()   -- twice is fine
      assert.has_error(function() l:acquire() end, "attempt to use a closed lock")
      assert.has_error(function() l:release() end, "attempt to use a closed lock")
      assert.has_error(function() l:guard() end, "attempt to use a closed lock")
    end)

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
  describe(":acquire()", function()
    it("is recursive for its holder", function()
      local r = mp.RLock()
      assert.is_true(r:acquire())
      assert.is_true(r:acquire(0))
      r:release()
      r:release()
      assert.has_error(function() r:release() end, "cannot release un-acquired lock")
    end)

    it("excludes other processes until fully released", function()
      local r = mp.RLock()
      r:acquire(); r:acquire()
      r:release()
      assert.equal(0, support.in_child(function() return r:acquire(0) == false end))
      r:release()
      assert.equal(0, support.in_child(function() return r:acquire(0) == true end))
    end)

    it("recovers from a holder killed while holding it (owner_died)", function()
      local r, e = mp.RLock(), mp.Event()
      local p = mp.Process(function() r:acquire(); r:acquire(); e:set(); core.sleep(30) end)
      p:start()
      assert.is_true(e:wait(10))
      p:kill()
      assert.is_true(p:join(10))
      assert.is_true(r:acquire(1))
      assert.is_true(r.owner_died)
      r:release()
      assert.has_error(function() r:release() end, "cannot release un-acquired lock")
    end)
  end)

  describe(":release()", function()
    it("raises when another process holds it", function() released_by_other(mp.RLock()) end)
  end)

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
  describe(":acquire()", function()
    it("counts down to zero, then waits until its timeout", function()
      local s = mp.Semaphore(2)
      assert.is_true(s:acquire())
      assert.is_true(s:acquire(0))
      assert.equal(0, s:get_value())
      local dt, ok = timed(s.acquire, s, 0.2)
      assert.is_false(ok)
      assert.is_true(dt >= 0.18 and dt < 1.5)
      s:release(2)
      assert.equal(2, s:get_value())
    end)

    it("defaults to 1", function()
      local s = mp.Semaphore()
      assert.is_true(s:acquire(0))
      assert.is_false(s:acquire(0))
    end)

    it("never lets a third process into a Semaphore(2)", function()
      local s = mp.Semaphore(2)
      local cur = mp.Value("int32", 0, { lock = false })
      local max = mp.Value("int32", 0, { lock = false })
      all_zero(in_children(4, function()
        for _ = 1, 60 do
          assert(s:acquire(30))
          local n = cur:add(1)
          local m = max.value
          while n > m and not max:cas(m, n) do m = max.value end
          core.sleep(0.001)
          cur:add(-1)
          s:release()
        end
      end))
      assert.equal(0, cur.value)
      assert.equal(2, max.value)
    end)

    it("wakes a waiter in another process on release", function()
      local s = mp.Semaphore(0)
      local p = mp.Process(function() core.sleep(0.2); s:release() end)
      p:start()
      local dt, ok = timed(s.acquire, s, 10)
      assert.is_true(ok)
      assert.is_true(dt < 5)
      assert.is_true(p:join(10))
    end)
  end)

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

  it("checks its arguments", function()
    assert.has_error(function() mp.Semaphore(-1) end,
      "bad argument #1 to 'Semaphore' (initial value must be >= 0)")
    assert.has_error(function() mp.Semaphore("x") end,
      "bad argument #1 to 'Semaphore' (number expected, got string)")
    local s = mp.Semaphore()
    assert.has_error(function() s:release(0) end, "bad argument #1 to 'release' (n must be >= 1)")
    s:close()
    assert.has_error(function() s:acquire() end, "attempt to use a closed semaphore")
  end)
end)

describe("mproc.BoundedSemaphore", function()
  describe(":release()", function()
    it("raises on release above the initial value", function()
      local s = mp.BoundedSemaphore(2)
      assert.has_error(function() s:release() end, "semaphore or lock released too many times")
      s:acquire()
      s:release()
      assert.equal(2, s:get_value())
    end)
  end)
end)

describe("mproc.Event", function()
  describe(":wait()", function()
    it("returns false after the timeout when not set", function()
      local e = mp.Event()
      assert.is_false(e:is_set())
      assert.is_false(e:wait(0))
      local dt, ok = timed(e.wait, e, 0.2)
      assert.is_false(ok)
      assert.is_true(dt >= 0.18 and dt < 1.5)
    end)

    it("returns true at once when set, until cleared", function()
      local e = mp.Event()
      e:set()
      e:set()
      assert.is_true(e:is_set())
      assert.is_true(e:wait())
      e:clear()
      assert.is_false(e:wait(0))
    end)

    it("is woken by another process", function()
      local e, back = mp.Event(), mp.Event()
      local p = mp.Process(function()
        if not e:wait(10) then os.exit(3) end
        back:set()
      end)
      p:start()
      core.sleep(0.1)
      e:set()
      assert.is_true(back:wait(10))
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)
  end)

  it("checks its arguments", function()
    local e = mp.Event()
    assert.has_error(function() e:wait(-0.5) end,
      "bad argument #1 to 'wait' (timeout must be >= 0)")
    e:close()
    assert.has_error(function() e:set() end, "attempt to use a closed event")
  end)
end)

describe("mproc.Condition", function()
  describe(":wait()", function()
    it("needs the lock", function()
      local c = mp.Condition()
      assert.has_error(function() c:wait(0.1) end, "cannot wait on un-acquired lock")
      assert.has_error(function() c:notify() end, "cannot notify on un-acquired lock")
      assert.has_error(function() c:notify_all() end, "cannot notify on un-acquired lock")
    end)

    it("returns false after the timeout, holding the lock again", function()
      local c = mp.Condition()
      c:acquire()
      c:acquire()   -- an RLock: wait releases every level
      local dt, ok = timed(c.wait, c, 0.2)
      assert.is_false(ok)
      assert.is_true(dt >= 0.18 and dt < 1.5)
      c:release()
      assert.equal(0, support.in_child(function() return c:acquire(0) == false end))
      c:release()
    end)

    it("is woken by notify from another process", function()
      local c, ready = mp.Condition(mp.Lock()), mp.Event()
      local p = mp.Process(function()
        c:acquire()
        ready:set()
        local ok = c:wait(10)
        c:release()
        os.exit(ok and 0 or 3)
      end)
      p:start()
      assert.is_true(ready:wait(10))
      c:acquire()     -- the child waits (it released the lock)
      c:notify()
      c:release()
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)
  end)

  describe(":wait_for()", function()
    it("works for a producer and consumers in other processes", function()
      local c = mp.Condition()
      local items = mp.Array("int64", 200, { lock = false })
      local n = mp.Value("int32", 0, { lock = false })
      local taken = mp.Value("int32", 0, { lock = false })
      local sum = mp.Value("int64", 0, { lock = false })
      local consumers = {}
      for i = 1, 2 do
        consumers[i] = mp.Process(function()
          while true do
            c:acquire()
            local ok = c:wait_for(function() return taken.value < n.value or n.value < 0 end, 20)
            if not ok or (n.value < 0 and taken.value >= -n.value) then c:release(); break end
            taken.value = taken.value + 1
            sum:add(items[taken.value])
            c:notify_all()    -- the producer waits for everything taken
            c:release()
          end
        end)
        consumers[i]:start()
      end
      for i = 1, 200 do
        c:acquire()
        items[i] = i
        n.value = i
        c:notify()
        c:release()
      end
      c:acquire()
      local dt, all = timed(c.wait_for, c, function() return taken.value == 200 end, 20)
      assert.is_true(all)
      assert.is_true(dt < 10)
      n.value = -200      -- done
      c:notify_all()
      c:release()
      for i = 1, 2 do
        assert.is_true(consumers[i]:join(20))
        assert.equal(0, consumers[i].exitcode)
      end
      assert.equal(200 * 201 // 2, sum.value)
    end)

    it("returns the predicate's last value after the timeout", function()
      local c = mp.Condition()
      c:acquire()
      local dt, r = timed(c.wait_for, c, function() return false end, 0.2)
      assert.is_false(r)
      assert.is_true(dt >= 0.18 and dt < 1.5)
      assert.equal(7, c:wait_for(function() return 7 end, 0))
      c:release()
    end)

    it("checks its arguments", function()
      local c = mp.Condition()
      assert.has_error(function() c:wait_for(1) end,
        "bad argument #1 to 'wait_for' (function expected, got number)")
    end)
  end)

  it("recovers from a holder of its lock killed while holding it (owner_died)", function()
    local c, e = mp.Condition(mp.Lock()), mp.Event()
    local p = mp.Process(function() c:acquire(); e:set(); core.sleep(30) end)
    p:start()
    assert.is_true(e:wait(10))
    p:kill()
    assert.is_true(p:join(10))
    local dt, ok = timed(c.acquire, c, 5)
    assert.is_true(ok)
    assert.is_true(dt < 1)
    assert.is_true(c.owner_died)
    c:release()
  end)

  it("uses the lock it was given", function()
    local l = mp.Lock()
    local c = mp.Condition(l)
    c:acquire()
    assert.is_false(l:acquire(0))
    c:release()
    do
      local _ <close> = c:guard()
      assert.is_false(l:acquire(0))
    end
    assert.is_true(l:acquire(0))
    l:release()
    assert.is_false(c.owner_died)
    assert.has_error(function() mp.Condition(42) end,
      "bad argument #1 to 'Condition' (mproc.Lock or mproc.RLock expected, got number)")
  end)
end)

describe("mproc.Barrier", function()
  describe(":wait()", function()
    it("releases all parties together and runs the action once", function()
      local runs = mp.Value("int32", 0, { lock = false })
      local b = mp.Barrier(3, function() runs:add(1) end)
      local seen = mp.Array("int32", 3, { lock = false })
      assert.equal(3, b.parties)
      local ps = {}
      for i = 1, 2 do
        ps[i] = mp.Process(function()
          local idx = b:wait(20)
          seen[idx] = seen[idx] + 1
        end)
        ps[i]:start()
      end
      assert.is_true(support.wait_until(function() return b.n_waiting == 2 end, 10))
      local idx = b:wait(20)
      seen[idx] = seen[idx] + 1
      for i = 1, 2 do
        assert.is_true(ps[i]:join(20))
        assert.equal(0, ps[i].exitcode)
      end
      assert.same({ 1, 1, 1 }, seen:totable())
      assert.equal(1, runs.value)
      assert.equal(0, b.n_waiting)
      assert.is_false(b.broken)
    end)

    it("breaks on timeout (BrokenBarrier) and works again after reset", function()
      local b = mp.Barrier(2)
      local dt, e = timed(error_of, b.wait, b, 0.2)
      assert.is_true(mp.is_error(e, "BrokenBarrier"))
      assert.is_true(dt >= 0.18 and dt < 1.5)
      assert.is_true(b.broken)
      local e2 = error_of(b.wait, b, 1)
      assert.is_true(mp.is_error(e2, "BrokenBarrier"))
      assert.equal("barrier is broken", e2.message)
      b:reset()
      assert.is_false(b.broken)
      local p = mp.Process(function() b:wait(10) end)
      p:start()
      assert.is_number(b:wait(10))
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)

    it("uses the default timeout given at creation", function()
      local b = mp.Barrier(2, nil, 0.2)
      local dt, e = timed(error_of, b.wait, b)
      assert.is_true(mp.is_error(e, "BrokenBarrier"))
      assert.is_true(dt >= 0.18 and dt < 1.5)
    end)

    it("raises BrokenBarrier in waiters when aborted", function()
      local b = mp.Barrier(3)
      local p = mp.Process(function()
        local ok, e = pcall(b.wait, b, 20)
        os.exit((not ok and mp.is_error(e, "BrokenBarrier")) and 0 or 3)
      end)
      p:start()
      assert.is_true(support.wait_until(function() return b.n_waiting == 1 end, 10))
      b:abort()
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
      assert.is_true(b.broken)
    end)

    it("breaks the barrier when the action raises, and re-raises", function()
      local b = mp.Barrier(1, function() error("bad action", 0) end)
      assert.has_error(function() b:wait(1) end, "bad action")
      assert.is_true(b.broken)
    end)

    it("hands a reset to its waiters as BrokenBarrier", function()
      local b = mp.Barrier(2)
      local p = mp.Process(function()
        local ok, e = pcall(b.wait, b, 20)
        os.exit((not ok and mp.is_error(e, "BrokenBarrier")) and 0 or 3)
      end)
      p:start()
      assert.is_true(support.wait_until(function() return b.n_waiting == 1 end, 10))
      b:reset()
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
      assert.is_false(b.broken)
    end)
  end)

  it("checks its arguments", function()
    assert.has_error(function() mp.Barrier(0) end,
      "bad argument #1 to 'Barrier' (parties must be >= 1)")
    assert.has_error(function() mp.Barrier(2, 5) end,
      "bad argument #2 to 'Barrier' (function expected, got number)")
    local b = mp.Barrier(2)
    b:close()
    assert.has_error(function() b:reset() end, "attempt to use a closed barrier")
  end)
end)

describe("mproc sync objects by reference", function()
  it("decode to the very same object in this process", function()
    for _, o in ipairs({ mp.Lock(), mp.RLock(), mp.Semaphore(3), mp.Event(),
                         mp.Condition(), mp.Barrier(2) }) do
      assert.equal(o, mp.loads(mp.dumps(o)))
    end
  end)

  it("reach a process started before they were made, through a pipe", function()
    local a, b = mp.Pipe()
    local p = mp.Process(function(conn)
      local lock, ev, cond, bar, sem = conn:recv(), conn:recv(), conn:recv(), conn:recv(),
        conn:recv()
      assert(lock:acquire(5))
      ev:set()
      cond:acquire(); cond:notify(); cond:release()
      assert(bar:wait(10))
      sem:release()
      lock:release()
    end, b)
    p:start()
    local lock, ev, cond = mp.Lock(), mp.Event(), mp.Condition()
    local acted = mp.Value("int32", 0, { lock = false })
    local bar, sem = mp.Barrier(2, function() acted:add(1) end), mp.Semaphore(0)
    for _, o in ipairs({ lock, ev, cond, bar, sem }) do a:send(o) end
    assert.is_true(ev:wait(10))
    assert.is_number(bar:wait(10))
    assert.is_true(sem:acquire(10))
    assert.is_true(lock:acquire(10))
    lock:release()
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    assert.equal(1, acted.value)
    a:close(); b:close()
  end)
end)

describe("mproc sync segments", function()
  it("are unlinked by a process killed with SIGTERM", function()
    local r, w = mp.Pipe(false)
    local p = mp.Process(function(conn)
      local keep = { mp.Lock(), mp.Event(), mp.SharedMemory{ create = true, size = 64 } }
      conn:send(#shm_of(mp.getpid()))
      core.sleep(30)
      return keep
    end, w)
    p:start()
    assert.is_true(r:poll(10))
    assert.equal(2, r:recv())
    local pid = p.pid
    p:terminate()
    assert.is_true(p:join(10))
    assert.equal(-SIGTERM, p.exitcode)
    assert.same({}, shm_of(pid))
    r:close(); w:close()
    assert.equal(SIGKILL, 9)
  end)

  it("are unlinked when a script dies of an uncaught error", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local l, s = mp.Lock(), mp.SharedMemory{ create = true, size = 10 }
      print("pid", mp.getpid(), l, s.name)
      error("boom")
    ]])
    local pid = out:match("pid\t(%d+)")
    assert.is_string(pid)
    assert.matches("boom", out)
    assert.same({}, shm_of(pid))
  end)

  it("leave nothing behind once collected", function()
    collectgarbage()
    collectgarbage()
    assert.same({}, shm_of(mp.getpid()))
  end)
end)

-- Issue 12: a waiter SIGKILLed in the middle of a wait must leave nothing
-- that blocks the others (no pthread condvar in shared memory).  Every
-- blocking call below has a timeout, so a stuck object fails the spec.
describe("mproc sync objects with a waiter SIGKILLed mid-wait", function()
  -- Starts two processes running wait(i) after setting `ready`; kills the
  -- first once both are asleep, returns the second.
  local function two_waiters(wait)
    local ready = mp.Semaphore(0)
    local ps = {}
    for i = 1, 2 do
      ps[i] = mp.Process(function() ready:release(); os.exit(wait(i) and 0 or 3) end)
      ps[i]:start()
    end
    assert.is_true(ready:acquire(10) and ready:acquire(10))
    core.sleep(0.3)                     -- both asleep in the wait
    ps[1]:kill()
    assert.is_true(ps[1]:join(10))
    assert.equal(-SIGKILL, ps[1].exitcode)
    return ps[2]
  end

  local function ends_well(p)
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
  end

  it("Semaphore: a release reaches the live waiter, later ones work", function()
    local s = mp.Semaphore(0)
    local p = two_waiters(function() return s:acquire(30) end)
    s:release()
    ends_well(p)
    s:release()
    assert.is_true(s:acquire(5))
    assert.is_false(s:acquire(0))
    s:release()
    assert.equal(0, support.in_child(function() return s:acquire(5) end, 20))
    assert.equal(0, s:get_value())
  end)

  it("Event: set wakes the live waiter, clear and wait still work", function()
    local e = mp.Event()
    local p = two_waiters(function() return e:wait(30) end)
    e:set()
    ends_well(p)
    e:clear()
    assert.is_false(e:wait(0.05))
    e:set()
    assert.is_true(e:wait(5))
  end)

  it("Condition: notify reaches the live waiter, notify_all the next ones", function()
    local c = mp.Condition(mp.Lock())
    local p = two_waiters(function()
      c:acquire()
      local ok = c:wait(30)
      c:release()
      return ok
    end)
    assert.is_true(c:acquire(5))      -- the killed waiter held no lock
    c:notify()
    c:release()
    ends_well(p)
    local q = two_waiters(function()
      c:acquire()
      local ok = c:wait(30)
      c:release()
      return ok
    end)
    assert.is_true(c:acquire(5))
    c:notify_all()
    c:release()
    ends_well(q)
    assert.is_true(c:acquire(5))
    assert.is_false(c:wait(0.05))
    c:release()
  end)

  it("Barrier: the others still pass (the dead party had arrived)", function()
    local b = mp.Barrier(3)
    local p = two_waiters(function() return b:wait(30) ~= nil end)
    assert.equal(2, b.n_waiting)       -- the dead party stays counted
    assert.is_number(b:wait(10))
    ends_well(p)
    local q = mp.Process(function() b:wait(10) end)
    q:start()
    local r = mp.Process(function() b:wait(10) end)
    r:start()
    assert.is_number(b:wait(10))
    ends_well(q)
    ends_well(r)
    assert.is_false(b.broken)
  end)
end)

-- issue 12 item 2: the held robust mutex was unmapped while still on
-- glibc's list, and the next lock call crashed (SIGSEGV)
describe("a Lock closed or collected while held", function()
  it("does not crash the process later, and is released", function()
    assert.equal(0, support.in_child(function()
      local l = mp.Lock()
      local q = mp.Queue()
      l:acquire()
      l:close()
      q:put(1)
      assert(q:get(5) == 1)
      local m = mp.Lock()
      assert(m:acquire(1))
      m:release()
      q:close()
    end, 20))
  end)

  it("a script that raised holding it goes on, and others get the lock", function()
    assert.equal(0, support.in_child(function()
      local r, w = mp.Pipe(false)
      local r2, w2 = mp.Pipe(false)
      local p = mp.Process(function()
        local mine = r:recv()             -- its own handle on the lock
        pcall(function() mine:acquire(); error("boom") end)
        mine = nil                        -- luacheck: ignore 311
        collectgarbage(); collectgarbage()
        for _ = 1, 50 do
          local x = mp.RLock(); x:acquire(); x:acquire(); x:release(); x:release()
        end
        w2:send("alive")
      end)
      p:start()
      -- made after the fork: the child attaches it, not its parent's copy
      local shared = mp.Lock()
      w:send(shared)
      assert(r2:recv() == "alive")
      assert(p:join(10) and p.exitcode == 0)
      assert(shared:acquire(5), "the collected holder released it")
      shared:release()
    end, 30))
  end)

  it("an RLock closed at depth 2 is released at every level", function()
    assert.equal(0, support.in_child(function()
      local l = mp.RLock()
      local ev = mp.Event()
      local p = mp.Process(function()
        ev:wait(10)
        local ok = l:acquire(5)
        os.exit(ok and 0 or 3)
      end)
      p:start()
      local mine = mp.Queue()
      mine:put(l)
      local again = mine:get(5)
      assert(rawequal(again, l))
      l:acquire(); l:acquire()
      l:close()
      ev:set()
      assert(p:join(10))
      assert(p.exitcode == 0, "exit " .. tostring(p.exitcode))
      mine:close()
    end, 30))
  end)
end)

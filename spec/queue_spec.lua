-- Specs of mp.Queue, mp.JoinableQueue and mp.SimpleQueue.  Other processes
-- are fresh lua5.4 interpreters that attach the queue by its name (the
-- handle the codec sends), so these specs also cover "attach from an
-- unrelated process".
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local function now() return core.now() end

-- {======================================================================
-- Child interpreters
-- ======================================================================

local PRELUDE = [[
local core = require "mproc.core"
local mp = require "mproc"
local function attach(h) local ok, q = core.queue_attach(h); assert(ok, q); return q end
]]

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Starts `src` (with PRELUDE) in the background; `...` become its `arg`.
-- Returns {pid, out}: out collects its stdout and stderr.
local function spawn(src, ...)
  local path, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(PRELUDE, src)
  f:close()
  local args = {}
  for i, a in ipairs { ... } do args[i] = shell_quote(tostring(a)) end
  local cmd = ("LUA_PATH=%s LUA_CPATH=%s exec %s %s %s >%s 2>&1")
    :format(shell_quote(package.path), shell_quote(package.cpath), support.LUA, path,
      table.concat(args, " "), out)
  local p = assert(io.popen("sh -c " .. shell_quote(cmd) .. " & echo $!"))
  local pid = tonumber(p:read("*l"))
  p:close()
  return { pid = pid, out = out, script = path }
end

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local st = f:read("*a"):match("^%d+ %b() (%S)")
  f:close()
  return st ~= "Z" and st ~= "X"
end

-- Waits for the child to end; returns its output.
local function finish(child, timeout)
  local deadline = now() + (timeout or 60)
  while alive(child.pid) and now() < deadline do core.sleep(0.01) end
  if alive(child.pid) then os.execute("kill -9 " .. child.pid) end
  -- gone, not just a zombie: a zombie still counts as a queue holder
  deadline = now() + 5
  while io.open("/proc/" .. child.pid .. "/stat") and now() < deadline do core.sleep(0.01) end
  local f = io.open(child.out)
  local s = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(child.out)
  os.remove(child.script)
  return s
end

local function kill9(child) os.execute("kill -9 " .. child.pid .. " 2>/dev/null") end

local function handle(q)
  local _, h = getmetatable(q).__mproc_encode(q)
  return h
end

local function shm_entries(prefix) return #support.shm_names(prefix) end

-- Issue 12: a waiter SIGKILLed inside the wait must not wedge the queue.
-- Every step runs in a child with a deadline, so the spec fails (instead
-- of hanging) while the queue is stuck; killing the children then frees
-- the robust mutex so the parent's close still works (the parent itself
-- never waits on the queue).  glibc's condvar hung in about half the
-- runs: a few rounds each.
local function in_time(fn, timeout)
  local p = mp.Process(fn)
  p:start()
  local done = p:join(timeout or 15)
  if not done then p:kill(); p:join(5) end
  return done and p.exitcode == 0
end

local function survives(waiter, check, setup)
  for _ = 1, 4 do
    if setup then assert.is_true(in_time(setup), "setup") end
    local w1, w2 = mp.Process(waiter), mp.Process(waiter)
    w1:start(); w2:start()
    core.sleep(0.3)                     -- both asleep in the wait
    w1:kill()
    assert.is_true(w1:join(5))
    local ok = in_time(check)
    local wok = w2:join(15)
    if not wok then w2:kill(); w2:join(5) end
    assert.is_true(ok, "the others were stuck after a waiter died")
    assert.is_true(wok and w2.exitcode == 0, "the live waiter was stuck")
  end
end

-- }======================================================================

describe("mproc.Queue", function()
  describe("mp.Queue()", function()
    it("makes an unbounded queue by default and a bounded one with maxsize", function()
      local q = mp.Queue()
      local b = mp.Queue(2)
      finally(function() support.close(q, b) end)
      assert.is_false(q:full())
      b:put(1); b:put(2)
      assert.is_true(b:full())
      assert.equal(2, b:qsize())
      assert.equal("mproc.Queue", getmetatable(q).__name)
    end)

    it("treats maxsize <= 0 as unbounded", function()
      local q = mp.Queue(0)
      finally(function() support.close(q) end)
      for i = 1, 100 do q:put(i, 0) end
      assert.equal(100, q:qsize())
    end)

    it("rejects a bad maxsize", function()
      assert.has_error(function() mp.Queue("x") end,
        "bad argument #1 to 'Queue' (number expected, got string)")
      assert.has_error(function() mp.Queue(1.5) end,
        "bad argument #1 to 'Queue' (number has no integer representation)")
      assert.has_error(function() mp.Queue(1, { ring_size = -1 }) end,
        "bad argument #2 to 'Queue' (ring_size must be a non-negative integer)")
    end)
  end)

  describe(":put() and :get()", function()
    it("keeps order and copies every kind of value, nil included", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local vals = { 1, -0.5, "str\0bin", true, false, { 1, 2, x = { y = "z" } } }
      for i = 1, #vals do q:put(vals[i]) end
      q:put(nil)
      for i = 1, 5 do assert.equal(vals[i], q:get(1)) end
      assert.same(vals[6], q:get(1))
      assert.is_nil(q:get(1))
      assert.is_true(q:empty())
    end)

    it("raises Empty after the timeout", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local t0 = now()
      local ok, e = pcall(q.get, q, 0.2)
      local dt = now() - t0
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "Empty"))
      assert.equal("queue is empty", e.message)
      assert.is_true(dt >= 0.18, "not before 0.18 s")
      assert.is_true(dt < 1.5, "within 1.5 s")
    end)

    it("raises Empty at once with get_nowait or a 0 timeout", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local ok, e = pcall(q.get_nowait, q)
      assert.is_true(mp.is_error(e, "Empty") and not ok)
      ok, e = pcall(q.get, q, 0)
      assert.is_true(mp.is_error(e, "Empty") and not ok)
    end)

    it("raises Full after the timeout on a full queue", function()
      local q = mp.Queue(1)
      finally(function() support.close(q) end)
      q:put("a")
      local t0 = now()
      local ok, e = pcall(q.put, q, "b", 0.2)
      local dt = now() - t0
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "Full"))
      assert.is_true(dt >= 0.18 and dt < 1.5)
      ok, e = pcall(q.put_nowait, q, "c")
      assert.is_true(mp.is_error(e, "Full") and not ok)
      assert.equal(1, q:qsize())
      assert.equal("a", q:get(0))
    end)

    it("wakes a waiting getter when another process puts", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local c = spawn([=[
        local q = attach(arg[1]); core.sleep(0.2); q:put("late"); print("OK")]=], handle(q))
      local t0 = now()
      assert.equal("late", q:get(10))
      assert.is_true(now() - t0 < 5)
      assert.matches("OK", finish(c))
    end)

    it("raises SerializeError before writing anything; the queue stays usable", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local ok, e = pcall(q.put, q, { 1, { co = coroutine.create(function() end) } })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.equal(0, q:qsize())
      q:put(7)
      assert.equal(7, q:get(0))
    end)

    it("checks its arguments", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      assert.has_error(function() q:put() end, "bad argument #1 to 'put' (value expected)")
      assert.has_error(function() q:get("x") end,
        "bad argument #1 to 'get' (number expected, got string)")
      assert.has_error(function() q:get(-1) end,
        "bad argument #1 to 'get' (timeout must be >= 0)")
      assert.has_error(function() q:put(1, -1) end,
        "bad argument #2 to 'put' (timeout must be >= 0)")
      assert.has_error(function() q.get({}) end,
        "bad argument #1 to 'get' (mproc.Queue expected, got table)")
    end)
  end)

  describe("large messages", function()
    it("moves a 100 MiB string even while nobody reads", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local big = string.rep("0123456789abcdef", 100 * 65536)
      q:put(big, 30)               -- returns: nobody is reading yet
      local c = spawn([=[
        local q = attach(arg[1]); local s = q:get(30)
        assert(#s == 100 * 1048576 and s:sub(1, 16) == "0123456789abcdef")
        q:put(#s); print("OK")]=], handle(q))
      core.sleep(0.1)
      local n
      local deadline = now() + 60
      repeat
        local ok, v = pcall(q.get, q, 0.5)
        if ok and v ~= big then n = v end
        if v == big then q:put(big); core.sleep(0.1) end  -- the child was slow to start
      until n or now() > deadline
      assert.equal(100 * 1048576, n)
      assert.matches("OK", finish(c))
    end)

    it("never blocks an unbounded queue on bytes: extra messages spill", function()
      local q = mp.Queue(nil, { ring_size = 65536 })
      finally(function() support.close(q) end)
      local prefix = handle(q):sub(2)
      local s = string.rep("x", 1000)
      for i = 1, 200 do q:put(s .. i, 0) end
      assert.equal(200, q:qsize())
      assert.is_true(shm_entries(prefix .. ".") > 0)
      for i = 1, 200 do assert.equal(s .. i, q:get(0)) end
      assert.equal(0, shm_entries(prefix .. "."))
    end)

    it("unlinks undelivered large messages when the queue is closed", function()
      local q = mp.Queue(nil, { ring_size = 4096 })
      local prefix = handle(q):sub(2)
      for _ = 1, 3 do q:put(string.rep("y", 10000)) end
      assert.equal(3, shm_entries(prefix .. "."))
      q:close()
      assert.equal(0, shm_entries(prefix))
    end)
  end)

  describe(":put_many() and :get_many()", function()
    it("moves batches, keeping n and nil items", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      q:put_many({ 1, nil, 3, n = 3 })
      q:put_many({ "a", "b" })
      local l = q:get_many(10, 1)
      assert.equal(5, l.n)
      assert.same({ 1, nil, 3, "a", "b", n = 5 }, l)
      q:put_many({ 1, 2, 3 })
      assert.same({ 1, 2, n = 2 }, q:get_many(2))
    end)

    it("raises Empty when nothing came, Full with the count put", function()
      local q = mp.Queue(2)
      finally(function() support.close(q) end)
      local ok, e = pcall(q.get_many, q, 5, 0.1)
      assert.is_true(mp.is_error(e, "Empty") and not ok)
      ok, e = pcall(q.put_many, q, { 1, 2, 3 }, 0.1)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "Full"))
      assert.equal(2, e.put)
      assert.equal(2, q:qsize())
    end)

    it("raises SerializeError with the path and puts nothing", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local ok, e = pcall(q.put_many, q, { 1, 2, io.stdout })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.matches("^list%[3%]: cannot send", e.message)
      assert.equal(0, q:qsize())
      -- the element's index comes before the path inside it
      ok, e = pcall(q.put_many, q, { 1, { x = { f = io.stdout } } })
      assert.is_false(ok)
      assert.matches("^list%[2%]%.x%.f: cannot send a userdata", e.message)
      assert.equal(0, q:qsize())
    end)

    it("checks its arguments", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      assert.has_error(function() q:get_many(0) end,
        "bad argument #1 to 'get_many' (max must be >= 1)")
      assert.has_error(function() q:put_many(5) end,
        "bad argument #1 to 'put_many' (table expected, got number)")
    end)
  end)

  describe(":close()", function()
    it("makes every later use raise", function()
      local q = mp.Queue()
      q:close()
      q:close()                   -- closing twice is harmless
      assert.has_error(function() q:get(0) end, "attempt to use a closed queue")
      assert.has_error(function() q:put(1) end, "attempt to use a closed queue")
      assert.has_error(function() q:qsize() end, "attempt to use a closed queue")
      assert.matches("closed", tostring(q))
    end)
  end)

  describe("across processes", function()
    it("delivers 4 x 50 000 messages of 4 producers to 4 consumers exactly once", function()
      local q = mp.Queue(1000)
      local res = mp.Queue()
      finally(function() support.close(q, res) end)
      local N, P = 50000, 4
      local kids = {}
      for c = 1, P do
        kids[#kids + 1] = spawn([=[
          local q, res = attach(arg[1]), attach(arg[2])
          local count, sum, seen = 0, 0, {}
          while true do
            local m = q:get(60)
            if m == false then break end
            count = count + 1; sum = sum + m[2]
            seen[m[1]] = (seen[m[1]] or 0) + 1
          end
          res:put({ count, sum, seen }); print("OK")]=], handle(q), handle(res), c)
      end
      for p = 1, P do
        kids[#kids + 1] = spawn([=[
          local q, p, n = attach(arg[1]), tonumber(arg[2]), tonumber(arg[3])
          for i = 1, n do q:put({ p, p * 1000000 + i }, 60) end
          print("OK")]=], handle(q), p, N)
      end
      for p = P + 1, 2 * P do assert.matches("OK", finish(kids[p], 120)) end
      for _ = 1, P do q:put(false, 10) end
      local count, sum, per = 0, 0, {}
      for _ = 1, P do
        local r = res:get(60)
        count, sum = count + r[1], sum + r[2]
        for p, k in pairs(r[3]) do per[p] = (per[p] or 0) + k end
      end
      for c = 1, P do assert.matches("OK", finish(kids[c])) end
      local want = 0
      for p = 1, P do want = want + p * 1000000 * N + math.floor(N * (N + 1) / 2) end
      assert.equal(P * N, count)
      assert.equal(want, sum)
      for p = 1, P do assert.equal(N, per[p]) end
      assert.is_true(q:empty())
    end)

    it("stays consistent when a producer is killed mid-stream", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local c = spawn([=[
        local q = attach(arg[1]); local i = 0
        local pad = string.rep("p", 3000)
        while true do i = i + 1; q:put({ i, i % 7 == 0 and pad or "" }) end]=], handle(q))
      local deadline = now() + 10
      while q:qsize() < 2000 and now() < deadline do core.sleep(0.005) end
      kill9(c)
      finish(c)
      local expect = 1
      while true do
        local ok, m = pcall(q.get, q, 0)
        if not ok then assert.is_true(mp.is_error(m, "Empty"), tostring(m)); break end
        assert.equal(expect, m[1])
        expect = expect + 1
      end
      assert.is_true(expect > 2000, "got " .. expect)
      q:put("after")               -- lock and ring usable after the death
      assert.equal("after", q:get(1))
    end)

    it("stays consistent when a waiting consumer is killed", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local c = spawn([=[local q = attach(arg[1]); q:get(60)]=], handle(q))
      core.sleep(0.3)
      kill9(c)
      finish(c)
      q:put(1)
      assert.equal(1, q:get(1))
      local c2 = spawn([=[local q = attach(arg[1]); q:put(q:get(10) + 1); print("OK")]=], handle(q))
      q:put(41)
      local v, deadline = 41, now() + 30
      while v == 41 and now() < deadline do  -- ours again: the child was slow to start
        core.sleep(0.1)
        v = q:get(10)
        if v == 41 then q:put(41) end
      end
      assert.equal(42, v)
      assert.matches("OK", finish(c2))
    end)

    it("keeps working when one of two blocked getters is SIGKILLed", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      survives(function()
        while q:get(30) do end
      end, function()
        for i = 1, 300 do q:put(i) end
        q:put(false)
        local t = now() + 10
        while q:qsize() > 0 and now() < t do core.sleep(0.01) end
        assert(q:qsize() == 0)
        q:put("mine"); assert(q:get(5) == "mine")
      end)
    end)

    it("keeps working when one of two putters blocked on a full queue is SIGKILLed", function()
      local q = mp.Queue(1)
      finally(function() support.close(q) end)
      survives(function()
        for i = 1, 300 do q:put(i, 30) end
      end, function()
        assert(q:get(5) == "full")
        for i = 1, 300 do assert(q:get(5) == i) end
        assert(q:qsize() == 0)
        q:put(1); assert(q:get(5) == 1)
      end, function() q:put("full") end)
    end)

    it("keeps a message put by a process that exits at once", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      local c = spawn([=[local q = attach(arg[1]); q:put("bye"); os.exit(0)]=], handle(q))
      finish(c)
      assert.equal("bye", q:get(5))
    end)
  end)

  describe("by reference", function()
    it("travels through another queue", function()
      local outer = mp.Queue()
      local inner = mp.Queue()
      finally(function() support.close(outer, inner) end)
      outer:put(inner)
      local c = spawn([=[
        local outer = attach(arg[1]); local inner = outer:get(10)
        assert(getmetatable(inner).__name == "mproc.Queue")
        inner:put("through"); print("OK")]=], handle(outer))
      assert.equal("through", inner:get(10))
      assert.matches("OK", finish(c))
    end)

    it("is encoded as its type name and handle", function()
      local q = mp.JoinableQueue()
      finally(function() support.close(q) end)
      local tname, h = getmetatable(q).__mproc_encode(q)
      assert.equal("mproc.JoinableQueue", tname)
      assert.matches("^/mproc%-q", h)
    end)
  end)

  describe("qsize, empty and full", function()
    it("are exact", function()
      local q = mp.Queue(3)
      finally(function() support.close(q) end)
      assert.is_true(q:empty())
      q:put(1); q:put(2)
      assert.equal(2, q:qsize())
      assert.is_false(q:empty())
      assert.is_false(q:full())
      q:put(3)
      assert.is_true(q:full())
      q:get()
      assert.equal(2, q:qsize())
    end)
  end)
end)

describe("mproc.JoinableQueue", function()
  describe(":task_done() and :join()", function()
    it("joins once every item was marked done in another process", function()
      local q = mp.JoinableQueue()
      finally(function() support.close(q) end)
      for i = 1, 10 do q:put(i) end
      assert.is_false(q:join(0.1))
      local c = spawn([=[
        local q = attach(arg[1])
        for _ = 1, 10 do q:get(10); q:task_done() end
        print("OK")]=], handle(q))
      assert.is_true(q:join(30))
      assert.matches("OK", finish(c))
    end)

    it("keeps working when one of two blocked joiners is SIGKILLed", function()
      local q = mp.JoinableQueue()
      finally(function() support.close(q) end)
      survives(function()
        for _ = 1, 100 do assert(q:join(30)) end
      end, function()
        assert(q:get(5) == "task"); q:task_done()
        for i = 1, 100 do
          q:put(i); core.sleep(0.002); assert(q:get(5) == i); q:task_done()
        end
        assert(q:join(5))
      end, function() q:put("task") end)
    end)

    it("returns false after the timeout", function()
      local q = mp.JoinableQueue()
      finally(function() support.close(q) end)
      q:put(1)
      local t0 = now()
      assert.is_false(q:join(0.2))
      assert.is_true(now() - t0 >= 0.18 and now() - t0 < 1.5)
      q:get(); q:task_done()
      assert.is_true(q:join(0))
    end)

    it("raises when task_done is called too many times", function()
      local q = mp.JoinableQueue()
      finally(function() support.close(q) end)
      q:put(1); q:get(); q:task_done()
      assert.has_error(function() q:task_done() end, "task_done() called too many times")
    end)

    it("is not offered by a plain Queue", function()
      local q = mp.Queue()
      finally(function() support.close(q) end)
      assert.is_nil(q.task_done)
      assert.is_nil(q.join)
    end)
  end)
end)

describe("mproc.SimpleQueue", function()
  describe(":put(), :get(), :empty()", function()
    it("works and offers only Python's SimpleQueue methods", function()
      local q = mp.SimpleQueue()
      finally(function() support.close(q) end)
      assert.is_true(q:empty())
      q:put("s")
      assert.is_false(q:empty())
      assert.equal("s", q:get(1))
      assert.is_nil(q.qsize)
      assert.is_nil(q.put_many)
      local ok, e = pcall(q.get, q, 0.05)
      assert.is_true(mp.is_error(e, "Empty") and not ok)
    end)
  end)
end)

describe("mproc.Queue with mp.Process", function()
  it("travels as a Process argument and through a pipe, by reference", function()
    local q = mp.Queue()
    local a, b = mp.Pipe()
    local p = mp.Process(function(queue, conn)
      queue:put("from args")
      conn:recv():put("through the pipe")
    end, q, b)
    p:start()
    a:send(q)
    assert.equal("from args", q:get(10))
    assert.equal("through the pipe", q:get(10))
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    a:close(); b:close(); q:close()
  end)

  it("is unlinked, big messages included, when its creator is ended by SIGTERM", function()
    local r, w = mp.Pipe(false)
    local p = mp.Process(function(conn)
      local q = mp.Queue()
      q:put(string.rep("x", 2 * 1024 * 1024))  -- over a quarter of the ring
      conn:send(mp.getpid())
      mp.sleep(30)
    end, w)
    p:start()
    assert.is_true(r:poll(10))
    local pid = r:recv()
    local mine = "mproc-q" .. pid .. "-"
    assert.equal(2, shm_entries(mine))          -- the ring and its big segment
    p:terminate()
    assert.is_true(p:join(10))
    assert.equal(-15, p.exitcode)
    assert.equal(0, shm_entries(mine))
    r:close(); w:close()
  end)
end)

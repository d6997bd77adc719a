local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"
local compat = require "mproc.compat"

-- os.execute(cmd) succeeded: true on 5.2+, the wait status 0 on 5.1 and LuaJIT
local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- Child bodies run in forked processes and travel through the codec, so
-- they use no globals (busted gives specs an _ENV that cannot be sent).
local rep, exit, pcall_ = string.rep, os.exit, pcall

-- The error raised by fn(...), which must fail.
local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- A plain error message without its "file:line: " position.
local function plain(err)
  assert.equal("string", type(err))
  return (err:gsub("^[^:]+:%d+: ", ""))
end

local function assert_kind(err, kind, message)
  assert.is_true(mp.is_error(err, kind), "expected " .. kind .. ", got " .. tostring(err))
  if message then assert.equal(message, err.message) end
end

-- Starts fn(...) in a child process (mp.Process); returns the process.
local function spawn(fn, ...)
  local p = mp.Process(fn, ...)
  p:start()
  return p
end

-- A pipe whose ends are closed when the test ends (whether used or not).
local function pipe(duplex)
  local a, b = mp.Pipe(duplex)
  finally(function() a:close(); b:close() end)
  return a, b
end

-- Joins p (killing it when it hangs, so that nothing is left behind).
local function join(p)
  local ended = p:join(30)
  if not ended then p:kill(); p:join(5) end
  assert.is_true(ended, "child did not end")
  return p.exitcode
end

-- CPU time (utime + stime, clock ticks) a process has used so far.
local function cpu_ticks(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = f:read("*a")
  f:close()
  local rest = stat:match("^%d+ %b() (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[12]) + tonumber(fields[13])  -- fields 14, 15 of stat
end

describe("mproc.Pipe", function()

  describe("mp.Pipe()", function()
    it("returns two connected duplex ends by default", function()
      local a, b = pipe()
      assert.is_true(a.readable and a.writable and b.readable and b.writable)
      assert.is_false(a.closed)
      a:send("to b")
      b:send("to a")
      assert.equal("to b", b:recv())
      assert.equal("to a", a:recv())
    end)

    it("with duplex = false, the first end receives and the second sends", function()
      local r, w = pipe(false)
      assert.is_true(r.readable)
      assert.is_false(r.writable)
      assert.is_false(w.readable)
      assert.is_true(w.writable)
      w:send({ 1, 2 })
      assert.same({ 1, 2 }, r:recv())
    end)

    it("accepts duplex = true explicitly", function()
      local a, b = pipe(true)
      b:send(1)
      assert.equal(1, a:recv())
    end)

    it("makes non-blocking close-on-exec descriptors", function()
      local a, b = pipe()
      for _, c in ipairs({ a, b }) do
        local f = assert(io.open("/proc/self/fdinfo/" .. c:fileno()))
        local flags = tonumber(f:read("*a"):match("flags:%s*(%d+)"), 8)
        f:close()
        assert.equal(1, math.floor(flags / 0x800) % 2, "O_NONBLOCK")      -- 04000
        assert.equal(1, math.floor(flags / 0x80000) % 2, "O_CLOEXEC")     -- 02000000
      end
    end)

    it("rejects a non-boolean duplex", function()
      assert.equal("bad argument #1 to 'Pipe' (boolean expected, got number)",
        plain(catch(mp.Pipe, 1)))
      assert.equal("bad argument #1 to 'Pipe' (boolean expected, got string)",
        plain(catch(mp.Pipe, "yes")))
    end)
  end)

  describe(":send() and :recv()", function()
    it("round-trip every kind of value", function()
      local a, b = pipe()
      local cyc = { name = "c" }
      cyc.self = cyc
      local up = 41
      local values = {
        true, false, 0, 1, -1, math.maxinteger or 2 ^ 53, math.mininteger or -2 ^ 53, 1.5, -0.0,
        math.huge, -math.huge, "", "a\0b\255", string.rep("x", 70000),
        { 1, 2, "x", { nested = { deep = true } } }, cyc,
        function() return up + 1 end,
      }
      for _, v in ipairs(values) do a:send(v) end
      for i, v in ipairs(values) do
        local got = b:recv()
        if type(v) == "function" then
          assert.equal(42, got())
        elseif v == cyc then
          assert.equal(got, got.self)
          assert.equal("c", got.name)
        elseif type(v) == "table" then
          assert.same(v, got)
        elseif v == 0 and 1 / v < 0 then
          assert.equal(-math.huge, 1 / got, "-0.0")
        else
          assert.equal(v, got, "value " .. i)
          assert.equal(compat.math_type(v), compat.math_type(got))
        end
      end
      a:send(nil)
      assert.is_nil(b:recv())
      a:send(0 / 0)
      local nan = b:recv()
      assert.is_true(nan ~= nan)
    end)

    it("sends nil when called without a value", function()
      local a, b = pipe()
      a:send()
      assert.is_true(b:poll())
      assert.is_nil(b:recv())
    end)

    it("delivers many messages from a child in order", function()
      local a, b = pipe()
      local p = spawn(function(c)
        for i = 1, 5000 do c:send({ i = i, s = ("m"):rep(i % 50) }) end
      end, b)
      b:close()
      for i = 1, 5000 do
        assert.is_true(a:poll(10))
        local m = a:recv()
        if m.i ~= i then assert.equal(i, m.i) end
        if m.s ~= ("m"):rep(i % 50) then assert.equal(("m"):rep(i % 50), m.s) end
      end
      assert.equal(0, join(p))
    end)

    it("carries a 100 MiB string both ways", function()
      local a, b = pipe()
      local p = spawn(function(c)
        local s = c:recv()
        c:send(#s == 100 * 2 ^ 20 and s:sub(1, 3) == "abc" and s:sub(-3) == "xyz")
        c:send(s)
      end, b)
      b:close()
      local big = "abc" .. string.rep("\0", 100 * 2 ^ 20 - 6) .. "xyz"
      a:send(big)
      assert.is_true(a:poll(60))
      assert.is_true(a:recv())
      assert.is_true(a:poll(60))
      local back = a:recv()
      assert.equal(#big, #back)
      assert.is_true(back == big)
      assert.equal(0, join(p))
    end)

    it("raises SerializeError with the path and sends nothing", function()
      local a, b = pipe()
      local err = catch(a.send, a, { ok = 1, cfg = { bad = coroutine.create(function() end) } })
      assert_kind(err, "SerializeError")
      assert.matches("^value%.cfg%.bad: cannot send a coroutine", err.message)
      assert.is_false(b:poll())
      a:send("next")  -- the connection is still usable
      assert.equal("next", b:recv())
      assert.is_false(b:poll())
    end)

    it("raises EOF once the peer closed and everything sent was received", function()
      local a, b = pipe()
      a:send(1)
      a:send_bytes("two")
      a:send(3)
      a:close()
      assert.equal(1, b:recv())
      assert.equal("two", b:recv_bytes())
      assert.equal(3, b:recv())
      assert_kind(catch(b.recv, b), "EOF", "peer closed the pipe")
      assert_kind(catch(b.recv_bytes, b), "EOF", "peer closed the pipe")
    end)

    it("raises EOF when the peer process is killed", function()
      local a, b = pipe()
      local p = spawn(function(c)
        c:send("ready")
        c:recv()  -- blocks until killed
      end, b)
      b:close()
      assert.is_true(a:poll(10))
      assert.equal("ready", a:recv())
      p:kill()
      assert.equal(-9, join(p))
      assert.is_true(a:poll(5))
      assert_kind(catch(a.recv, a), "EOF", "peer closed the pipe")
    end)

    it("never delivers a partial frame: peer dead mid-message is EOF", function()
      local a, b = pipe()
      local p = spawn(function(c)
        c:send_bytes(rep("z", 32 * 2 ^ 20))  -- blocks: nobody reads
      end, b)
      b:close()
      assert.is_true(a:poll(10))
      support.wait_until(function() return support.proc_state(p.pid) == "S" end, 5)
      p:kill()
      join(p)
      assert_kind(catch(a.recv_bytes, a), "EOF", "connection closed in the middle of a message")
      assert_kind(catch(a.recv_bytes, a), "EOF")
    end)

    it("raises Closed when sending to a closed peer, without SIGPIPE", function()
      local a, b = pipe()
      b:close()
      local err = catch(a.send, a, "x")
      assert_kind(err, "Closed", "peer closed the pipe")
      assert_kind(catch(a.send_bytes, a, "x"), "Closed")
      assert.is_false(a.closed)  -- still ours to close
    end)

    it("raises Closed in a child whose big send the peer stops reading", function()
      local a, b = pipe()
      local p = spawn(function(c, other)
        other:close()  -- the fork's copy of the parent's end
        local ok, err = pcall_(c.send_bytes, c, rep("y", 16 * 2 ^ 20))
        if not ok and mp.is_error(err, "Closed") then exit(7) end
        exit(3)
      end, b, a)
      b:close()
      assert.is_true(a:poll(10))
      a:close()  -- the child is blocked in send: it must see Closed, not die
      assert.equal(7, join(p))
    end)

    it("raises plain errors for the wrong direction", function()
      local r, w = pipe(false)
      assert.equal("connection is read-only", plain(catch(r.send, r, 1)))
      assert.equal("connection is read-only", plain(catch(r.send_bytes, r, "x")))
      assert.equal("connection is write-only", plain(catch(w.recv, w)))
      assert.equal("connection is write-only", plain(catch(w.recv_bytes, w)))
      assert.equal("connection is write-only", plain(catch(w.poll, w)))
    end)

    it("points errors at the caller", function()
      local _, w = pipe(false)
      local err = catch(function() w:recv() end)
      if _VERSION == "Lua 5.1" and not compat.luajit then
        -- Lua 5.1 keeps no caller for a tail call (Conn:recv's): no position
        assert.equal("connection is write-only", err)
      else
        assert.matches("pipe_spec%.lua:%d+: connection is write%-only$", err)
      end
      err = catch(function() w:send_bytes(1) end)
      assert.matches("pipe_spec%.lua:%d+: bad argument #1 to 'send_bytes'", err)
    end)

    it("rejects a self that is not a pipe end", function()
      local a = pipe()
      assert.matches("bad argument #1 to 'send' %(mproc.Conn expected, got number%)",
        catch(a.send, 42, "x"))
      assert.matches("bad argument #1 to 'recv' %(mproc.Conn expected, got nil%)",
        catch(a.recv))
    end)
  end)

  describe(":send_bytes() and :recv_bytes()", function()
    it("carry raw strings, empty ones included", function()
      local a, b = pipe()
      a:send_bytes("hello\0world")
      a:send_bytes("")
      assert.equal("hello\0world", b:recv_bytes())
      assert.equal("", b:recv_bytes())
    end)

    it("send part of a string with offset and size", function()
      local a, b = pipe()
      a:send_bytes("abcdef", 2)
      a:send_bytes("abcdef", 1, 3)
      a:send_bytes("abcdef", 6)
      a:send_bytes("abcdef", 0, 0)
      assert.equal("cdef", b:recv_bytes())
      assert.equal("bcd", b:recv_bytes())
      assert.equal("", b:recv_bytes())
      assert.equal("", b:recv_bytes())
    end)

    it("accept a frame of exactly maxlen", function()
      local a, b = pipe()
      a:send_bytes("12345")
      assert.equal("12345", b:recv_bytes(5))
    end)

    it("raise OSError for a frame longer than maxlen and close the end", function()
      local a, b = pipe()
      a:send_bytes("123456")
      local err = catch(b.recv_bytes, b, 5)
      assert_kind(err, "OSError")
      assert.matches("^bad message length", err.message)
      assert.is_true(b.closed)
      assert.equal("attempt to use a closed pipe", plain(catch(b.recv_bytes, b)))
    end)

    it("recv_bytes of a send frame gives the codec bytes (mp.loads reads them)", function()
      local a, b = pipe()
      a:send({ k = "v" })
      assert.same({ k = "v" }, mp.loads(b:recv_bytes()))
    end)

    it("recv of a send_bytes frame that is not codec data raises SerializeError", function()
      local a, b = pipe()
      a:send_bytes("\255 not an encoding")
      a:send("after")
      assert_kind(catch(b.recv, b), "SerializeError")
      assert.equal("after", b:recv())
    end)

    it("check their arguments", function()
      local a, b = pipe()
      local function msg(...) return plain(catch(...)) end
      assert.equal("bad argument #1 to 'send_bytes' (string expected, got number)",
        msg(a.send_bytes, a, 1))
      assert.equal("bad argument #1 to 'send_bytes' (string expected, got no value)",
        msg(a.send_bytes, a))
      assert.equal("bad argument #2 to 'send_bytes' (offset out of range)",
        msg(a.send_bytes, a, "abc", 4))
      assert.equal("bad argument #2 to 'send_bytes' (offset out of range)",
        msg(a.send_bytes, a, "abc", -1))
      assert.equal("bad argument #2 to 'send_bytes' (number has no integer representation)",
        msg(a.send_bytes, a, "abc", 1.5))
      assert.equal("bad argument #2 to 'send_bytes' (number expected, got string)",
        msg(a.send_bytes, a, "abc", "x"))
      assert.equal("bad argument #3 to 'send_bytes' (size out of range)",
        msg(a.send_bytes, a, "abc", 1, 3))
      assert.equal("bad argument #3 to 'send_bytes' (size out of range)",
        msg(a.send_bytes, a, "abc", 0, -1))
      assert.equal("bad argument #1 to 'recv_bytes' (maxlen must be >= 0)",
        msg(b.recv_bytes, b, -1))
      assert.equal("bad argument #1 to 'recv_bytes' (number expected, got string)",
        msg(b.recv_bytes, b, "x"))
      assert.equal("bad argument #1 to 'recv_bytes' (number has no integer representation)",
        msg(b.recv_bytes, b, 0.5))
      assert.is_false(b:poll())  -- nothing was sent by the failed calls
    end)
  end)

  describe(":poll()", function()
    it("answers at once by default, nil included", function()
      local a, b = pipe()
      local t0 = core.now()
      assert.is_false(b:poll())
      assert.is_false(b:poll(nil))
      assert.is_false(b:poll(0))
      assert.is_true(core.now() - t0 < 1)
      a:send(1)
      assert.is_true(b:poll())
      assert.is_true(b:poll(0))
      assert.is_true(b:poll(nil))
      assert.equal(1, b:recv())
      assert.is_false(b:poll())
    end)

    it("waits up to the timeout", function()
      local _, b = pipe()
      local t0 = core.now()
      assert.is_false(b:poll(0.2))
      local dt = core.now() - t0
      assert.is_true(dt >= 0.18, "returned after " .. dt)
      assert.is_true(dt < 1.5, "returned after " .. dt)
    end)

    for _, case in ipairs { { "before the timeout", 10 }, { "with math.huge", math.huge } } do
      it("returns true when a child writes, waiting " .. case[1], function()
        local a, b = pipe()
        local p = spawn(function(c)
          core.sleep(0.2)
          c:send("late")
        end, b)
        b:close()
        local t0 = core.now()
        assert.is_true(a:poll(case[2]))
        assert.is_true(core.now() - t0 < 5)
        assert.equal("late", a:recv())
        assert.equal(0, join(p))
      end)
    end

    it("counts a closed peer as readable", function()
      local a, b = pipe()
      a:close()
      assert.is_true(b:poll())
      assert.is_true(b:poll(5))
    end)

    it("checks its timeout", function()
      local _, b = pipe()
      assert.equal("bad argument #1 to 'poll' (timeout must be >= 0)", plain(catch(b.poll, b, -1)))
      assert.equal("bad argument #1 to 'poll' (number expected, got string)",
        plain(catch(b.poll, b, "x")))
    end)
  end)

  describe(":fileno()", function()
    it("is a descriptor that core.poll_fd can wait for", function()
      local a, b = pipe()
      local fd = b:fileno()
      assert.equal("integer", compat.math_type(fd))
      assert.is_false(core.poll_fd(fd, "r", 0))
      a:send("x")
      assert.is_true(core.poll_fd(fd, "r", 1))
      assert.equal("x", b:recv())
      -- a frame is never read ahead: after one recv the fd tells the truth
      a:send(1)
      a:send(2)
      assert.equal(1, b:recv())
      assert.is_true(core.poll_fd(fd, "r", 0))
      assert.equal(2, b:recv())
      assert.is_false(core.poll_fd(fd, "r", 0))
    end)
  end)

  describe(":close()", function()
    it("closes once and marks the end closed", function()
      local a, b = pipe()
      a:close()
      a:close()
      assert.is_true(a.closed)
      assert.equal("mproc.Conn (closed)", tostring(a))
      assert.matches("^mproc.Conn %(fd %d+%)$", tostring(b))
    end)

    it("makes every method raise 'attempt to use a closed pipe'", function()
      local a = pipe()
      a:close()
      for _, call in ipairs({
        function() a:send(1) end, function() a:recv() end,
        function() a:send_bytes("x") end, function() a:recv_bytes() end,
        function() a:poll() end, function() a:fileno() end,
      }) do
        assert.equal("attempt to use a closed pipe", plain(catch(call)))
      end
      assert_kind(catch(mp.dumps, a), "SerializeError")
    end)

    it("happens when an end is collected", function()
      local b = select(2, mp.Pipe())  -- the first end is garbage at once
      finally(function() b:close() end)
      collectgarbage()
      collectgarbage()
      assert.is_true(b:poll(5))
      assert_kind(catch(b.recv, b), "EOF")
    end)
  end)

  describe("by reference", function()
    it("is the very same object after mp.dumps/mp.loads", function()
      local a = pipe()
      assert.equal(a, mp.loads(mp.dumps(a)))
    end)

    it("cannot be received by a process that did not inherit it", function()
      local a, b = pipe()
      local p = spawn(function(c)
        local ok, e = pcall_(mp.loads, c:recv_bytes())  -- an end made after the fork
        c:send(ok and "received" or e.message)
      end, b)
      local x = pipe()
      a:send_bytes(mp.dumps({ conn = x }))
      assert.is_true(a:poll(10))
      assert.matches("a Pipe end can only be received by a process that inherited it,"
        .. " through a pipe, a queue or a pool", a:recv(), 1, true)
      assert.equal(0, join(p))
    end)

    it("travels through a pipe to a process that did not inherit it", function()
      local a, b = pipe()
      local p = spawn(function(c)
        local d = c:recv()  -- an end created after the fork: adopted
        d:send({ writable = d.writable, readable = d.readable })
        local r = c:recv()  -- one-way ends keep their direction
        r:send(c:recv())
        d:close()
        r:close()
      end, b)
      b:close()
      local c1, d1 = pipe()
      a:send(d1)
      d1:close()  -- the child's copy keeps the other end open
      assert.is_true(c1:poll(10))
      assert.same({ writable = true, readable = true }, c1:recv())
      local r, w = pipe(false)
      a:send(w)
      w:close()
      a:send({ deep = "one way" })
      assert.is_true(r:poll(10))
      assert.same({ deep = "one way" }, r:recv())
      assert.equal(0, join(p))
      assert.is_true(c1:poll(5))  -- the child's end is gone now
      assert_kind(catch(c1.recv, c1), "EOF")
    end)

    it("leaks no descriptor when the receiver already has the end", function()
      local function nfds()
        local n = 0
        local ls = io.popen("ls /proc/" .. mp.getpid() .. "/fd")
        for _ in ls:lines() do n = n + 1 end
        ls:close()
        return n
      end
      local a, b = pipe()
      local x = pipe()
      local before = nfds()
      for _ = 1, 5 do
        a:send({ x, x })
        local got = b:recv()
        assert.equal(x, got[1])
        assert.equal(x, got[2])
        a:send(x)
        b:recv_bytes()  -- raw: the passed descriptor is closed too
      end
      assert.is_true(support.wait_until(function() return nfds() == before end, 3),
        ("%d descriptors, %d before"):format(nfds(), before))
    end)

    it("refuses more than 16 ends in one message, sending nothing", function()
      local a, b = pipe()
      local ends = {}
      for i = 1, 17 do
        ends[i] = mp.Pipe()
        finally(function() ends[i]:close() end)
      end
      local err = catch(a.send, a, ends)
      assert_kind(err, "SerializeError")
      assert.matches("more than 16 pipe ends in one message", err.message, 1, true)
      assert.is_false(b:poll())
      a:send({ compat.unpack(ends, 1, 16) })
      local got = b:recv()
      assert.equal(16, #got)
      assert.equal(ends[16], got[16])
      -- outside a pipe send there is no such limit
      for _ = 1, 3 do assert.equal(ends[1], mp.loads(mp.dumps(ends))[1]) end
    end)

    it("works as a Process argument, both ways", function()
      local a, b = pipe()
      local p = spawn(function(c)
        c:send(c:recv() * 2)
      end, b)
      b:close()
      a:send(21)
      assert.is_true(a:poll(10))
      assert.equal(42, a:recv())
      assert.equal(0, join(p))
    end)
  end)

  describe("through a queue or a pool (the descriptor broker)", function()
    local getpid, popen, sleep, now = mp.getpid, io.popen, core.sleep, core.now
    local gc = collectgarbage

    -- busted keeps one finally per spec: this one runs all the cleanups.
    local cleanups
    local function cleanup(fn)
      if not cleanups then
        local list = {}
        cleanups = list
        finally(function()
          cleanups = nil
          for i = #list, 1, -1 do pcall(list[i]) end
        end)
      end
      cleanups[#cleanups + 1] = fn
    end

    local function pipe_ends(duplex)
      local a, b = mp.Pipe(duplex)
      cleanup(function() a:close(); b:close() end)
      return a, b
    end

    -- Open descriptors of the calling process (after a collection: ends
    -- that earlier specs dropped are closed by their __gc).
    local function nfds()
      gc(); gc()
      local n = 0
      local ls = popen("ls /proc/" .. getpid() .. "/fd")
      for _ in ls:lines() do n = n + 1 end
      ls:close()
      return n
    end

    local function eof_within(c, timeout)
      assert.is_true(c:poll(timeout), "no EOF within " .. timeout .. " s")
      assert_kind(catch(c.recv, c), "EOF")
    end

    local function queue()
      local q = mp.Queue()
      cleanup(function() q:close() end)
      return q
    end

    it("goes to pool workers started before it (apply and map), both ways", function()
      local pool = mp.Pool(1)
      cleanup(function() pool:terminate(); pool:join() end)
      local base = pool:apply(nfds)           -- the worker runs before the Pipe exists
      local before = nfds()
      local a, b = mp.Pipe()
      a:send("ping")
      local got, n = pool:apply(function(c, limit)
        local v = c:recv()
        c:send(v .. " pong")
        c:close()
        -- (a collected object's descriptor can be open for a moment)
        local k
        for _ = 1, 100 do
          k = nfds()
          if k <= limit then break end
          core.sleep(0.05)
        end
        return v, k
      end, b, base)
      assert.equal("ping", got)
      assert.is_true(n <= base)               -- the worker's copy is gone with close
      assert.equal("ping pong", a:recv())
      b:close()
      eof_within(a, 10)                       -- nobody holds the other end now
      a:close()
      local peers, ends = {}, {}
      for i = 1, 4 do
        peers[i], ends[i] = mp.Pipe()
        peers[i]:send(i)
      end
      -- a worker may decode its next task while it runs one: the count is
      -- checked once all are done
      pool:map(function(c)
        c:send(c:recv() * 2)
        c:close()
      end, ends, 1)
      -- (what it inherited may be collected; a spawned worker's may close late)
      assert.is_true(support.wait_until(function() return pool:apply(nfds) <= base end, 3))
      for i = 1, 4 do
        assert.equal(2 * i, peers[i]:recv())
        ends[i]:close()
        eof_within(peers[i], 10)
        peers[i]:close()
      end
      -- (a child's sentinel may close late)
      assert.is_true(support.wait_until(function() return nfds() <= before end, 3))
    end)

    it("carries several ends in one message, the same end once", function()
      local pool = mp.Pool(1)
      cleanup(function() pool:terminate(); pool:join() end)
      pool:apply(nfds)
      local a1, b1 = pipe_ends()
      local a2, b2 = pipe_ends()
      local r, w = pipe_ends(false)
      local same = pool:apply(function(t)
        t[1]:send("one")
        t[2]:send("two")
        t[3]:send("three")
        local s = t[1] == t[4]
        t[1]:close(); t[2]:close(); t[3]:close()
        return s
      end, { b1, b2, w, b1 })
      assert.is_true(same)
      assert.equal("one", a1:recv())
      assert.equal("two", a2:recv())
      assert.equal("three", r:recv())
      assert.is_false(w.readable)
    end)

    it("returns an end made by a task to the parent", function()
      local pool = mp.Pool(1)
      cleanup(function() pool:terminate(); pool:join() end)
      pool:apply(nfds)
      local before = nfds()
      local c = pool:apply(function()
        local x, y = mp.Pipe()
        y:send("made in the worker")
        y:close()
        return x
      end)
      assert.equal("made in the worker", c:recv())
      eof_within(c, 10)
      c:close()
      -- (a child's sentinel may close late)
      assert.is_true(support.wait_until(function() return nfds() <= before end, 5))
    end)

    it("goes through a Queue to a process started before it, both ways", function()
      local q = queue()
      local p = spawn(function(qq)
        local n0 = nfds()
        local c = qq:get(30)
        c:send(c:recv() + 1)
        c:close()
        -- (a descriptor a collected object closes may still be open for a
        -- moment; one that is kept stays)
        exit(support.wait_until(function() return nfds() == n0 end, 5) and 0 or 3)
      end, q)
      local a, b = mp.Pipe()
      q:put(b)
      b:close()
      a:send(41)
      assert.is_true(a:poll(10))
      assert.equal(42, a:recv())
      assert.equal(0, join(p))                -- 3: the child kept a descriptor
      eof_within(a, 10)
      a:close()
    end)

    it("reaches its receiver after the sender ended", function()
      local q = queue()
      local p = spawn(function(qq)
        local r, w = mp.Pipe(false)
        w:send("left behind")
        qq:put(r)
        w:close()
      end, q)
      assert.equal(0, join(p))
      local before = nfds()
      local r = q:get(10)
      assert.is_false(r.writable)
      assert.equal("left behind", r:recv())
      eof_within(r, 10)
      r:close()
      -- a child's sentinel may close late (under spawn, its boot socket)
      assert.is_true(support.wait_until(function() return nfds() <= before end, 3))
    end)

    it("closes an end nobody received a few seconds after its sender ended", function()
      local q = queue()
      local p = spawn(function(qq)
        local r, w = mp.Pipe(false)
        qq:put(r)
        qq:put(w)                             -- never received
      end, q)
      assert.equal(0, join(p))
      local r = q:get(10)
      local t0 = now()
      eof_within(r, 20)
      assert.is_true(now() - t0 < 15)
      r:close()
    end)

    it("leaves nothing hanging when the receiver dies while it claims", function()
      local a, b = pipe_ends()
      local h = core.pipe_deposit(b)        -- as a queue or a pool would send it
      b:close()
      local c, d = pipe_ends()
      local p = spawn(function(cc)
        core.pipe_attach(h, true)            -- asks the broker, never reads the answer
        cc:send("asked")
        sleep(60)
      end, d)
      assert.is_true(c:poll(10))
      assert.equal("asked", c:recv())
      p:kill()
      join(p)
      eof_within(a, 10)                       -- the end went nowhere and was closed
      local none, why = core.pipe_attach(h)  -- one-shot: claimed already
      assert.is_nil(none)
      assert.matches("the descriptor broker no longer holds it", why, 1, true)
      -- the broker still serves others
      local q = queue()
      local p2 = spawn(function(qq)
        local e = qq:get(30)
        e:send("still works")
      end, q)
      local x, y = pipe_ends()
      q:put(y)
      y:close()
      assert.is_true(x:poll(10))
      assert.equal("still works", x:recv())
      assert.equal(0, join(p2))
    end)

    it("is refused by a process that cannot reach the broker, naming why", function()
      local q = queue()
      local _, handle = getmetatable(q).__mproc_encode(q)
      local out = os.tmpname()
      cleanup(function() os.remove(out) end)
      local src = ([[
        local core = require "mproc.core"
        require "mproc"
        local ok, q = core.queue_attach(%q)
        assert(ok, q)
        local ok2, e = pcall(q.get, q, 20)
        local f = io.open(%q, "w")
        f:write(ok2 and "received" or tostring(e))
        f:close()
      ]]):format(handle, out)
      local cmd = ("LUA_PATH='%s' LUA_CPATH='%s' %s -e %q &")
        :format(package.path, package.cpath, support.LUA, src)
      assert.is_true(sh(cmd))
      local _, b = pipe_ends()
      q:put(b)
      local deadline = now() + 30
      local msg
      repeat
        sleep(0.05)
        local f = io.open(out)
        msg = f and f:read("*a")
        if f then f:close() end
      until (msg and msg ~= "") or now() > deadline
      assert.matches("SerializeError", msg, 1, true)
      assert.matches("cannot reach the descriptor broker", msg, 1, true)
    end)
  end)

  describe("waiting", function()
    -- A wait hook that raises stands for an interrupt (SIGINT) in the wait.
    local sched = require "mproc.sched"
    local function interrupt_waits()
      sched.hooks.wait_fd = function() error("interrupted!", 0) end
      finally(function() sched.hooks.wait_fd = nil end)
    end

    it("completes a send cut short by an error in the wait", function()
      local a, b = pipe()
      interrupt_waits()
      local err = catch(a.send_bytes, a, rep("q", 8 * 2 ^ 20))  -- nobody reads yet
      assert.equal("interrupted!", err)
      sched.hooks.wait_fd = nil
      local p = spawn(function(c)
        local s1 = c:recv_bytes()
        local s2 = c:recv()
        c:send({ #s1, s1:sub(-1), s2 })
      end, b)
      a:send("second")  -- finishes the cut frame first
      assert.is_true(a:poll(30))
      assert.same({ 8 * 2 ^ 20, "q", "second" }, a:recv())
      assert.equal(0, join(p))
    end)

    it("completes a receive cut short by an error in the wait", function()
      local a, b = pipe()
      local p = spawn(function(c)
        c:send_bytes(rep("r", 8 * 2 ^ 20))
        c:send("after")
      end, b)
      assert.is_true(a:poll(10))
      -- a stopped writer cannot finish the frame, so recv_bytes must wait
      assert.is_true(sh("kill -STOP " .. p.pid))
      interrupt_waits()
      assert.equal("interrupted!", catch(a.recv_bytes, a))  -- a frame half read
      sched.hooks.wait_fd = nil
      assert.is_true(sh("kill -CONT " .. p.pid))
      local s = a:recv_bytes()
      assert.equal(8 * 2 ^ 20, #s)
      assert.equal(rep("r", 8 * 2 ^ 20), s)
      assert.equal("after", a:recv())
      assert.equal(0, join(p))
    end)

    it("costs no CPU while blocked in recv", function()
      local a, b = pipe()
      local p = spawn(function(c)
        c:send("waiting")
        c:recv()
      end, b)
      b:close()
      assert.is_true(a:poll(10))
      a:recv()
      local before = cpu_ticks(p.pid)
      core.sleep(1)
      local used = cpu_ticks(p.pid) - before
      a:send("done")
      assert.equal(0, join(p))
      assert.is_true(used <= 5, "child used " .. used .. " ticks in 1 s of waiting")
    end)
  end)
end)

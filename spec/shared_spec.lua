local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local shm_of = support.shm_of

local function exists(name)
  local f = io.open("/dev/shm/" .. name, "rb")
  if f then f:close() end
  return f ~= nil
end

local error_of = support.errmsg

-- Before 5.3 every number is a double: int64 and uint64 are checked within
-- the integers a double holds exactly (API.md "Lua versions").
local IMIN, IMAX = math.mininteger or -2 ^ 53, math.maxinteger or 2 ^ 53

local INTS = {
  { "int8", "b", -128, 127 }, { "uint8", "B", 0, 255 },
  { "int16", "h", -32768, 32767 }, { "uint16", "H", 0, 65535 },
  { "int32", "i", -2147483648, 2147483647 }, { "uint32", "I", 0, 4294967295 },
  { "int64", "q", IMIN, IMAX },
}

describe("mproc.Value", function()
  describe("mp.Value()", function()
    it("holds every integer type within its range", function()
      for _, t in ipairs(INTS) do
        local name, code, lo, hi = t[1], t[2], t[3], t[4]
        for _, tn in ipairs({ name, code }) do
          local v = mp.Value(tn, lo)
          assert.equal(lo, v.value)
          v.value = hi
          assert.equal(hi, v:get())
          v:set(0)
          assert.equal(0, v.value)
          assert.equal(name, v:_type())
          if name ~= "int64" then
            assert.has_error(function() v:set(hi + 1) end,
              ("bad argument #1 to 'set' (value out of range for %s)"):format(name))
            assert.has_error(function() v:set(lo - 1) end,
              ("bad argument #1 to 'set' (value out of range for %s)"):format(name))
          end
        end
      end
    end)

    it("holds uint64 as the integer's bits", function()
      local v = mp.Value("Q", -1)
      assert.equal(-1, v.value)
      assert.equal("uint64", v:_type())
      v.value = IMAX
      assert.equal(IMAX, v.value)
      assert.equal("uint64", mp.Value("L", 0):_type())
      assert.equal("int64", mp.Value("l", 0):_type())
    end)

    it("holds floats, doubles and bools", function()
      local d = mp.Value("double", 0.1)
      assert.equal(0.1, d.value)
      d.value = -math.huge
      assert.equal(-math.huge, d.value)
      local f = mp.Value("f", 0.5)
      assert.equal(0.5, f.value)
      f.value = 0.1
      assert.is_true(math.abs(f.value - 0.1) < 1e-7)
      assert.equal("float", f:_type())
      local b = mp.Value("?", true)
      assert.is_true(b.value)
      b.value = false
      assert.is_false(b:get())
      assert.equal("bool", mp.Value("bool", false):_type())
    end)

    it("starts at zero without an initial value", function()
      assert.equal(0, mp.Value("int32").value)
      assert.equal(0.0, mp.Value("d").value)
      assert.is_false(mp.Value("bool").value)
    end)

    it("checks its arguments", function()
      assert.has_error(function() mp.Value("int128", 0) end,
        "bad argument #1 to 'Value' (unknown type 'int128')")
      assert.has_error(function() mp.Value(3, 0) end,
        "bad argument #1 to 'Value' (unknown type '3')")
      assert.has_error(function() mp.Value("int32", 1.5) end,
        "bad argument #2 to 'Value' (number has no integer representation)")
      assert.has_error(function() mp.Value("int32", "x") end,
        "bad argument #2 to 'Value' (number expected, got string)")
      assert.has_error(function() mp.Value("bool", 1) end,
        "bad argument #2 to 'Value' (boolean expected, got number)")
      assert.has_error(function() mp.Value("int32", 0, { lock = 1 }) end,
        "bad argument #3 to 'Value' ('lock' must be a boolean)")
      assert.has_error(function() mp.Value("int32", 0, 5) end,
        "bad argument #3 to 'Value' (table expected, got number)")
      local v = mp.Value("int32", 0)
      assert.has_error(function() v.other = 1 end,
        "cannot set field 'other' of a Value (only 'value')")
      assert.has_error(function() v.value = "x" end)
    end)
  end)

  describe(":add()", function()
    it("adds atomically and returns the new value", function()
      local v = mp.Value("int64", 5, { lock = false })
      assert.equal(8, v:add(3))
      assert.equal(6, v:add(-2))
      local d = mp.Value("double", 1.5)
      assert.equal(2.0, d:add(0.5))
      local f = mp.Value("float", 1)
      assert.equal(1.5, f:add(0.5))
      local b = mp.Value("int8", 127)
      assert.equal(-128, b:add(1))  -- wraps like the machine type
      assert.has_error(function() mp.Value("bool", true):add(1) end, "cannot add to a bool Value")
    end)

    it("gives exact counts without the lock (4 processes x 10000)", function()
      local v = mp.Value("int64", 0, { lock = false })
      support.all_zero(support.in_children(4, function() for _ = 1, 10000 do v:add(1) end end))
      assert.equal(40000, v.value)
    end)
  end)

  describe(":cas()", function()
    it("swaps only when the value is the expected one", function()
      local v = mp.Value("int32", 1)
      assert.is_true(v:cas(1, 2))
      assert.is_false(v:cas(1, 3))
      assert.equal(2, v.value)
      local d = mp.Value("double", 0.5)
      assert.is_true(d:cas(0.5, 1.25))
      assert.equal(1.25, d.value)
      local b = mp.Value("bool", false)
      assert.is_true(b:cas(false, true))
      assert.is_true(b.value)
    end)
  end)

  describe(":get_lock()", function()
    it("returns the same RLock every time", function()
      local v = mp.Value("int64", 0)
      local l = v:get_lock()
      assert.equal(l, v:get_lock())
      assert.equal("mproc.RLock", getmetatable(l).__name)
      assert.is_true(l:acquire())
      assert.is_true(l:acquire())
      l:release(); l:release()
    end)

    it("protects read-modify-write across processes", function()
      local v = mp.Value("int64", 0)
      support.all_zero(support.in_children(4, function()
        local lock = v:get_lock()
        for _ = 1, 10000 do
          lock:acquire()
          v.value = v.value + 1
          lock:release()
        end
      end))
      assert.equal(40000, v.value)
    end)

    it("raises for a Value without lock", function()
      local v = mp.Value("int64", 0, { lock = false })
      assert.has_error(function() v:get_lock() end,
        "this Value has no lock (created with lock = false)")
    end)
  end)

  describe(":close()", function()
    it("makes every use raise", function()
      local v = mp.Value("int32", 1)
      v:close()
      v:close()
      assert.has_error(function() return v.value end, "attempt to use a closed value")
      assert.has_error(function() v:get() end, "attempt to use a closed value")
      assert.has_error(function() v:add(1) end, "attempt to use a closed value")
    end)
  end)
end)

describe("mproc.Array", function()
  describe("mp.Array()", function()
    it("is made from a size (zeroed) or from a list", function()
      local a = mp.Array("int32", 5)
      assert.equal(5, #a)
      assert.same({ 0, 0, 0, 0, 0 }, a:totable())
      local d = mp.Array("d", { 1, 2.5, 3 })
      assert.equal(3, #d)
      assert.equal(2.5, d[2])
      assert.same({ 1.0, 2.5, 3.0 }, d:totable())
      assert.equal(0, #mp.Array("int8", 0))
      assert.same({ true, false }, mp.Array("bool", { true, false }):totable())
    end)

    it("checks its arguments", function()
      assert.has_error(function() mp.Array("int32", -1) end,
        "bad argument #2 to 'Array' (size out of range)")
      assert.has_error(function() mp.Array("int32", "x") end,
        "bad argument #2 to 'Array' (number expected, got string)")
      assert.has_error(function() mp.Array("nope", 3) end,
        "bad argument #1 to 'Array' (unknown type 'nope')")
      assert.has_error(function() mp.Array("uint8", { 1, 256 }) end,
        "bad argument #2 to 'Array' (item 2: value out of range for uint8)")
      assert.has_error(function() mp.Array("int8", { 1, "x" }) end,
        "bad argument #2 to 'Array' (item 2: number expected, got string)")
    end)
  end)

  describe("a[i]", function()
    it("reads and writes elements", function()
      local a = mp.Array("int16", 3)
      a[1] = 5
      a[3] = -7
      assert.equal(5, a[1])
      assert.equal(-7, a[3])
      a[2.0] = 1
      assert.equal(1, a[2])
    end)

    it("is bounds-checked, naming the index", function()
      local a = mp.Array("int32", 3)
      assert.has_error(function() return a[0] end, "array index 0 out of range (1..3)")
      assert.has_error(function() return a[4] end, "array index 4 out of range (1..3)")
      assert.has_error(function() a[-1] = 1 end, "array index -1 out of range (1..3)")
      assert.has_error(function() return a[1.5] end, "array index must be an integer, got number")
      assert.has_error(function() a.x = 1 end, "array index must be an integer, got string")
      assert.is_nil(a.nothing)
    end)

    it("is shared with other processes", function()
      local a = mp.Array("double", 4, { lock = false })
      assert.equal(0, support.in_child(function()
        for i = 1, 4 do a[i] = i * 1.5 end
      end))
      assert.same({ 1.5, 3.0, 4.5, 6.0 }, a:totable())
    end)
  end)

  describe(":fill()", function()
    it("sets every element", function()
      local a = mp.Array("uint8", 4)
      a:fill(9)
      assert.same({ 9, 9, 9, 9 }, a:totable())
      assert.has_error(function() a:fill(-1) end,
        "bad argument #1 to 'fill' (value out of range for uint8)")
    end)
  end)

  describe(":get_lock()", function()
    it("returns the array's RLock, or raises for a raw array", function()
      local a = mp.Array("int32", 2)
      assert.equal(a:get_lock(), a:get_lock())
      assert.has_error(function() mp.Array("int32", 2, { lock = false }):get_lock() end,
        "this Array has no lock (created with lock = false)")
    end)
  end)

  describe(":close()", function()
    it("makes every use raise", function()
      local a = mp.Array("int32", 2)
      a:close()
      assert.has_error(function() return a[1] end, "attempt to use a closed array")
      assert.has_error(function() return #a end, "attempt to use a closed array")
      assert.has_error(function() a:totable() end, "attempt to use a closed array")
    end)
  end)
end)

describe("mproc.SharedMemory", function()
  describe("mp.SharedMemory()", function()
    it("creates a zeroed segment with a name and a size", function()
      local s = mp.SharedMemory{ create = true, size = 4096 }
      finally(function() support.close(s) end)
      assert.equal(4096, s.size)
      assert.matches("^mproc%-", s.name)
      assert.is_true(exists(s.name))
      assert.equal(("\0"):rep(16), s:read(1, 16))
    end)

    it("attaches by name in the same process", function()
      local s = mp.SharedMemory{ create = true, size = 10 }
      local t = mp.SharedMemory{ name = s.name }
      finally(function() support.close(s, t) end)
      s:write(1, "abc")
      assert.equal("abc", t:read(1, 3))
      assert.equal(10, t.size)
    end)

    it("attaches by name from an unrelated process", function()
      local s = mp.SharedMemory{ create = true, size = 64 }
      finally(function() support.close(s) end)
      s:write(1, "from parent")
      local out = support.run_script(([[
        local mp = require "mproc"
        local t = mp.SharedMemory{ name = %q }
        io.write("read:", t:read(1, 11), "\n")
        t:write(20, "from child")
        t:close()
      ]]):format(s.name))
      assert.matches("read:from parent", out, 1, true)
      assert.equal("from child", s:read(20, 10))
    end)

    it("raises OSError for a name that does not exist", function()
      local e = error_of(mp.SharedMemory, { name = "mproc-none-" .. mp.getpid() })
      assert.is_true(mp.is_error(e, "OSError"))
      assert.equal("no shared memory named 'mproc-none-" .. mp.getpid() .. "'", e.message)
    end)

    it("creates a segment with a chosen name, once", function()
      local name = "mproc-named-" .. mp.getpid()
      local s = mp.SharedMemory{ create = true, size = 8, name = name }
      finally(function() support.close(s) end)
      assert.equal(name, s.name)
      local e = error_of(mp.SharedMemory, { create = true, size = 8, name = name })
      assert.is_true(mp.is_error(e, "OSError"))
      assert.equal(17, e.errno)   -- EEXIST
    end)

    it("checks its arguments", function()
      assert.has_error(function() mp.SharedMemory() end,
        "bad argument #1 to 'SharedMemory' (table expected, got no value)")
      assert.has_error(function() mp.SharedMemory{ create = true } end,
        "bad argument #1 to 'SharedMemory' ('size' must be a positive integer)")
      assert.has_error(function() mp.SharedMemory{ create = true, size = 0 } end,
        "bad argument #1 to 'SharedMemory' ('size' must be a positive integer)")
      assert.has_error(function() mp.SharedMemory{} end,
        "bad argument #1 to 'SharedMemory' ('name' expected (or create = true))")
      assert.has_error(function() mp.SharedMemory{ name = "a/b" } end,
        "bad argument #1 to 'SharedMemory' ('name' must be a non-empty string without '/')")
    end)
  end)

  describe(":write() and :read()", function()
    it("are 1-based and bounds-checked", function()
      local s = mp.SharedMemory{ create = true, size = 8 }
      finally(function() support.close(s) end)
      s:write(5, "wxyz")
      assert.equal("wxyz", s:read(5, 4))
      assert.equal("wxyz", s:read(5))
      assert.equal("", s:read(9, 0))
      s:write(9, "")
      assert.has_error(function() s:write(6, "wxyz") end,
        "bad argument #2 to 'write' (4 bytes at position 6 run past the end (8))")
      assert.has_error(function() s:write(0, "a") end,
        "bad argument #1 to 'write' (position 0 out of range (1..8))")
      assert.has_error(function() s:read(10, 1) end,
        "bad argument #1 to 'read' (position 10 out of range (1..8))")
      assert.has_error(function() s:read(1, 9) end,
        "bad argument #2 to 'read' (length 9 out of range (0..8))")
    end)

    it("carry binary data", function()
      local s = mp.SharedMemory{ create = true, size = 256 }
      finally(function() support.close(s) end)
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      s:write(1, table.concat(all))
      assert.equal(table.concat(all), s:read())
    end)
  end)

  describe(":close() and :unlink()", function()
    it("close makes read and write raise, and unlinks the last handle", function()
      local s = mp.SharedMemory{ create = true, size = 8 }
      local name = s.name
      s:close()
      s:close()
      assert.has_error(function() s:read(1, 1) end, "attempt to use a closed shared memory")
      assert.has_error(function() s:write(1, "x") end, "attempt to use a closed shared memory")
      assert.equal(name, s.name)
      assert.is_false(exists(name))
      s:unlink()   -- after close: harmless
    end)

    it("keeps the name while another process holds a handle", function()
      local s = mp.SharedMemory{ create = true, size = 8 }
      local name = s.name
      local r, w = mp.Pipe(false)
      local go = mp.Event()
      local p = mp.Process(function(conn)
        local t = mp.SharedMemory{ name = name }
        conn:send("attached")
        go:wait(20)
        t:close()
      end, w)
      p:start()
      assert.is_true(r:poll(10))
      assert.equal("attached", r:recv())
      s:close()
      assert.is_true(exists(name))
      go:set()
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
      assert.is_true(support.wait_until(function() return not exists(name) end, 5))
      r:close(); w:close()
    end)

    it("unlink removes the name while the mapping stays usable", function()
      local s = mp.SharedMemory{ create = true, size = 8 }
      finally(function() support.close(s) end)
      s:write(1, "x")
      s:unlink()
      assert.is_false(exists(s.name))
      assert.equal("x", s:read(1, 1))
      s:unlink()
    end)

    it("a SIGKILLed creator's segments go once nobody holds them", function()
      local out = support.run_script([[
        local mp = require "mproc"
        local core = require "mproc.core"
        local r, w = mp.Pipe(false)
        local p = mp.Process(function()
          local s = mp.SharedMemory{ create = true, size = 8 }
          w:send(s.name)
          core.sleep(30)
          return s
        end)
        p:start()
        local name = r:recv()
        p:kill()
        p:join(10)
        local f = io.open("/dev/shm/" .. name)
        print("name", name, f ~= nil)
        if f then f:close() end
      ]])
      local name = out:match("name\t(%S+)\t%S+")
      assert.is_not_nil(name, out)
      -- the parent's exit sweeps it, or the tracker did already
      assert.is_true(support.wait_until(function() return not exists(name) end, 3))
    end)

    it("a creator's exit unlinks what it created", function()
      local r, w = mp.Pipe(false)
      assert.equal(0, support.in_child(function()
        local s = mp.SharedMemory{ create = true, size = 8 }
        w:send(s.name)
        return s ~= nil   -- exits holding it
      end))
      local name = r:recv()
      assert.is_false(exists(name))
      r:close(); w:close()
    end)
  end)
end)

describe("mproc shared data by reference", function()
  it("decodes to the very same object in this process", function()
    for _, o in ipairs({ mp.Value("int32", 1), mp.Array("d", 2),
                         mp.SharedMemory{ create = true, size = 8 } }) do
      assert.equal(o, mp.loads(mp.dumps(o)))
      o:close()
    end
  end)

  it("reaches a process started before it was made, through a pipe", function()
    local a, b = mp.Pipe()
    local p = mp.Process(function(conn)
      local v, arr, shm = conn:recv(), conn:recv(), conn:recv()
      v:add(41)
      arr[2] = 7
      shm:write(1, "hi")
      conn:send(true)
      assert(conn:recv())
    end, b)
    p:start()
    local v, arr = mp.Value("int64", 1), mp.Array("int32", 3)
    local shm = mp.SharedMemory{ create = true, size = 4 }
    finally(function() support.close(shm) end)
    a:send(v); a:send(arr); a:send(shm)
    assert.is_true(a:poll(10))
    assert.is_true(a:recv())
    assert.equal(42, v.value)
    assert.same({ 0, 7, 0 }, arr:totable())
    assert.equal("hi", shm:read(1, 2))
    a:send(true)
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    a:close(); b:close()
  end)

  it("leave nothing behind once collected", function()
    collectgarbage()
    collectgarbage()
    assert.same({}, shm_of(mp.getpid()))
    assert.is_function(core.shared_attach)
  end)
end)

describe("mproc segments whose other holders were killed", function()
  -- the creator closes its handle while a child that attached by name
  -- still holds the segment; then the child is SIGKILLed
  local SCRIPT = [[
    local mp = require "mproc"
    local support = require "support"
    local s = mp.SharedMemory{ create = true, size = 64 }
    local r, w = mp.Pipe(false)
    local p = mp.Process(function(name, c)
      local again = mp.SharedMemory{ name = name }  -- an explicit attach holds it
      again:write(1, "x"); c:send(true); mp.sleep(30)
    end, s.name, w)
    p:start()
    assert(r:recv() == true)
    local name = s.name:sub(2)
    s:close()
    print("kept while held", #support.shm_names(name))
    p:kill(); p:join(10)
  ]]

  it("go when the creator creates again", function()
    local out, ok = support.run_script(SCRIPT .. [[
      local again = mp.Value("int64", 0)  -- a new segment: the old one is reaped
      print("after the holder died", #support.shm_names(name))
      again:close(); r:close(); w:close()
    ]])
    assert.is_true(ok, out)
    assert.equal("kept while held\t1\nafter the holder died\t0\n", out)
  end)

  it("go at the creator's exit at the latest", function()
    local out, ok = support.run_script(SCRIPT .. [[
      print(mp.getpid())
    ]])
    assert.is_true(ok, out)
    local pid = out:match("\n(%d+)\n$")
    assert.is_not_nil(pid, out)
    assert.same({}, support.shm_of(pid))
  end)
end)

describe("mproc shared segments and the processes holding them", function()
  -- issue 12 item 3: a process that did not create a segment let go of it
  -- and unlinked it while its creator still held it
  it("an Array made after the pool survives a worker dropping its copy", function()
    local pool = mp.Pool(1)
    finally(function() support.close(pool) end)
    -- over 1 MiB: a segment of its own, made after the worker forked
    local a = mp.Array("int64", 200000)
    for i = 1, 4 do
      assert.equal(i, pool:apply(function(x) x[1] = x[1] + 1 return x[1] end, a))
      -- a task without the Array collects the worker's copy
      pool:apply(function() collectgarbage(); collectgarbage() end)
    end
    assert.equal(4, a[1])
  end)

  it("SharedMemory attached and closed elsewhere stays for its creator", function()
    local r, w = mp.Pipe(false)
    local r2, w2 = mp.Pipe(false)
    -- started first: a fork child would share the parent's object instead
    local p = mp.Process(function()
      local name = r2:recv()
      local t = mp.SharedMemory{ name = name }
      t:close()
      w:send("closed")
    end)
    p:start()
    local s = mp.SharedMemory{ create = true, size = 8 }
    finally(function() support.close(s) end)
    s:write(1, "k")
    w2:send(s.name)
    assert.equal("closed", r:recv())
    assert.is_true(p:join(10))
    assert.is_true(exists(s.name))
    local out = support.run_script(([[
      local mp = require "mproc"
      print(mp.SharedMemory{ name = %q }:read(1, 1))
    ]]):format(s.name))
    assert.equal("k\n", out)
    r:close(); w:close(); r2:close(); w2:close()
  end)

  it("the last holder that is not the creator still unlinks", function()
    local r, w = mp.Pipe(false)
    local r2, w2 = mp.Pipe(false)
    local go = mp.Event()
    -- started first: a fork child would share the parent's object instead
    local p = mp.Process(function()
      local name = r2:recv()
      local t = mp.SharedMemory{ name = name }
      w:send("attached")
      go:wait(20)
      t:close()          -- the last holder, not the creator
      w:send(io.open("/dev/shm/" .. name) == nil)
      go:clear()
      go:wait(20)
    end)
    p:start()
    local s = mp.SharedMemory{ create = true, size = 8 }
    local name = s.name
    w2:send(name)
    assert.equal("attached", r:recv())
    s:close()            -- the creator lets go first and lives on
    assert.is_true(exists(name))
    go:set()
    assert.is_true(r:recv())
    go:set()
    assert.is_true(p:join(10))
    r:close(); w:close(); r2:close(); w2:close()
  end)

  -- issue 12 item 4: the tracker unlinks what a SIGKILLed tree left
  it("nothing is left when a tree is SIGKILLed, the tracker included", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local core = require "mproc.core"
      local q = mp.Queue()
      q:put(string.rep("x", 3 * 1048576))         -- a big frame: its own segment
      local v = mp.Value("int64", 1)
      local s = mp.SharedMemory{ create = true, size = 64 }
      local p = mp.Process(function() core.sleep(30) end)
      p:start()
      print("pids", core.getpid(), p.pid, core.tracker_pid(), v ~= nil, s ~= nil)
      io.stdout:flush()
      core.kill(core.getpid(), core.SIGKILL)
    ]])
    local parent, child, tracker = out:match("pids\t(%d+)\t(%d+)\t(%d+)")
    assert.is_not_nil(tracker, out)
    assert.is_true(tonumber(tracker) > 0)
    assert.is_true(support.wait_until(function()
      return #support.shm_of(parent) == 0 and #support.shm_names("mproc-q" .. parent .. "-") == 0
        and not support.alive(tonumber(child)) and not support.alive(tonumber(tracker))
    end, 5), out)
  end)

  -- A holder outside the tree (an exec'd program that attached the queue by
  -- name holds no tracker socket) still lives when the tree ends; the
  -- tracker used to leave at once, and the queue stayed once that holder
  -- was SIGKILLed too.
  it("the tracker waits for holders outside the tree before it leaves", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local core = require "mproc.core"
      local q = mp.Queue()
      local h = mp.dumps(q)
      local f = assert(io.open(os.getenv("HFILE"), "wb")); f:write(h); f:close()
      -- an exec'd program: attaches the queue, then is killed after we are
      local p = mp.subprocess.Popen({ os.getenv("SPEC_LUA"), "-e", [=[
        local mp = require "mproc"
        local f = assert(io.open(os.getenv("HFILE"), "rb"))
        local q = mp.loads(f:read("*a")); f:close()
        q:put("attached")
        require("mproc.core").sleep(1)
        require("mproc.core").kill(require("mproc.core").getpid(), 9)
      ]=] })
      assert(q:get(10) == "attached")
      print("pids", core.getpid(), p.pid, core.tracker_pid())
      io.stdout:flush()
      core.kill(core.getpid(), core.SIGKILL)
    ]], { HFILE = os.tmpname(), SPEC_LUA = support.LUA })
    local parent, ext, tracker = out:match("pids\t(%d+)\t(%d+)\t(%d+)")
    assert.is_not_nil(tracker, out)
    assert.is_true(support.wait_until(function()
      return #support.shm_names("mproc-q" .. parent .. "-") == 0
        and not support.alive(tonumber(ext)) and not support.alive(tonumber(tracker))
    end, 8), out .. table.concat(support.shm_names("mproc-q" .. parent .. "-"), " "))
  end)

  it("a tracker killed is replaced, and the new one knows what was made before", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local core = require "mproc.core"
      local v = mp.Value("int64", 1)              -- starts the first tracker
      local first = core.tracker_pid()
      core.kill(first, core.SIGKILL)
      core.sleep(0.2)
      local q = mp.Queue()                        -- finds it gone: a new one
      print("pids", core.getpid(), first, core.tracker_pid(), v ~= nil, q ~= nil)
      io.stdout:flush()
      core.kill(core.getpid(), core.SIGKILL)
    ]])
    local parent, first, second = out:match("pids\t(%d+)\t(%d+)\t(%d+)")
    assert.is_not_nil(second, out)
    assert.are_not.equal(first, second)
    assert.is_true(tonumber(second) > 0)
    assert.is_true(support.wait_until(function()
      return #support.shm_of(parent) == 0 and #support.shm_names("mproc-q" .. parent .. "-") == 0
        and not support.alive(tonumber(second))
    end, 5), out)
  end)

  it("a SIGKILLed child's Queue goes once nobody holds it, while the parent lives", function()
    local r, w = mp.Pipe(false)
    local p = mp.Process(function()
      local q = mp.Queue()
      q:put(string.rep("y", 3 * 1048576))
      w:send(q)
      core.sleep(30)
    end)
    p:start()
    local q = r:recv()
    local names = support.shm_names("mproc-q" .. p.pid .. "-")
    assert.is_true(#names >= 1)
    q:close()
    p:kill()
    p:join(10)
    assert.is_true(support.wait_until(function()
      return #support.shm_names("mproc-q" .. p.pid .. "-") == 0
    end, 5))
    r:close(); w:close()
  end)
end)

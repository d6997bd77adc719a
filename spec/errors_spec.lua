local mp = require "mproc"
local errors = require "mproc.errors"
local util = require "mproc.util"
local sched = require "mproc.sched"
local core = require "mproc.core"
local support = require "support"

describe("mproc.Error", function()
  it("makes error objects with kind, message and extra fields", function()
    local e = errors.new("OSError", "open: No such file", { errno = 2 })
    assert.equal(mp.Error, getmetatable(e))
    assert.equal("OSError", e.kind)
    assert.equal(2, e.errno)
    assert.equal("OSError: open: No such file", tostring(e))
  end)

  it("refuses unknown kinds", function()
    assert.has_error(function() errors.new("Nope", "x") end, "unknown error kind")
  end)

  it("raises them without position information", function()
    local ok, e = pcall(errors.raise, "Timeout", "timed out")
    assert.is_false(ok)
    assert.is_true(mp.is_error(e, "Timeout"))
    assert.equal("timed out", e.message)
  end)

  describe("mp.is_error()", function()
    it("tells error objects and their kind", function()
      local e = errors.new("EOF", "gone")
      assert.is_true(mp.is_error(e))
      assert.is_true(mp.is_error(e, "EOF"))
      assert.is_false(mp.is_error(e, "Closed"))
      assert.is_false(mp.is_error("EOF: gone"))
      assert.is_false(mp.is_error({ kind = "EOF", message = "x" }))
      assert.is_false(mp.is_error(nil))
    end)
  end)

  describe("check()", function()
    it("passes successes through without the status", function()
      assert.same({ 1, nil, 3 }, { errors.check(true, 1, nil, 3) })
      assert.equal(0, select("#", errors.check(true)))
    end)

    it("raises failures as error objects, with errno", function()
      local ok, e = pcall(errors.check, false, "OSError", "read: Bad file descriptor", 9)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "OSError"))
      assert.equal(9, e.errno)
      assert.equal("read: Bad file descriptor", e.message)
    end)
  end)
end)

describe("mproc.util", function()
  it("formats argument errors like luaL_argerror", function()
    local function put(_, t) util.check_timeout(t, 2, "put") end
    assert.has_error(function() put(nil, "x") end,
      "bad argument #2 to 'put' (number expected, got string)")
    assert.has_error(function() put(nil, -1) end,
      "bad argument #2 to 'put' (timeout must be >= 0)")
    assert.has_error(function() put(nil, 0 / 0) end,
      "bad argument #2 to 'put' (timeout must be >= 0)")
    assert.has_no_error(function() put(nil, nil) end)
    assert.has_error(function() util.check_type(3, "table", 1, "Process") end,
      "bad argument #1 to 'Process' (table expected, got number)")
    assert.has_error(function() util.check_type(nil, "table", 1, "Process") end,
      "bad argument #1 to 'Process' (table expected, got no value)")
  end)
end)

describe("the waiting point", function()
  describe("mp.sleep()", function()
    it("sleeps about as long as asked", function()
      local t0 = core.now()
      mp.sleep(0.1)
      local dt = core.now() - t0
      assert.is_true(dt >= 0.099, "slept " .. dt)
      assert.is_true(dt < 1.5, "slept " .. dt)
    end)

    it("checks its argument", function()
      assert.has_error(function() mp.sleep("x") end,
        "bad argument #1 to 'sleep' (number expected, got string)")
      assert.has_error(function() mp.sleep(-1) end,
        "bad argument #1 to 'sleep' (timeout must be >= 0)")
    end)
  end)

  describe("sched.wait_fd()", function()
    it("returns false when the deadline passes on an idle descriptor", function()
      local a, b = mp.Pipe()
      local t0 = core.now()
      assert.is_false(sched.wait_fd(a:fileno(), "r", sched.deadline(0.2)))
      local dt = core.now() - t0
      assert.is_true(dt >= 0.19 and dt < 1.5, "waited " .. dt)
      b:send_bytes("x")
      assert.is_true(sched.wait_fd(a:fileno(), "r", sched.deadline(1)))
      assert.is_true(sched.wait_fd(a:fileno(), "r", nil))
      a:close(); b:close()
    end)

    it("computes deadlines and remaining time", function()
      assert.is_nil(sched.deadline(nil))
      assert.is_nil(sched.deadline(math.huge))
      local d = sched.deadline(10)
      assert.is_true(sched.remaining(d) > 9 and sched.remaining(d) <= 10)
      assert.equal(0, sched.remaining(core.now() - 1))
      assert.is_nil(sched.remaining(nil))
    end)
  end)

  describe("core.poll_fd()", function()
    it("rejects a closed descriptor and bad modes", function()
      assert.has_error(function() core.poll_fd(987654, "r", 0) end)
      assert.has_error(function() core.poll_fd(0, "x", 0) end,
        "bad argument #2 to 'poll_fd' (mode must be \"r\", \"w\" or \"rw\")")
    end)
  end)
end)

describe("Interrupted", function()
  -- A script blocks in one kind of wait; SIGINT must reach it as an
  -- Interrupted error object, not as the interpreter's plain string.
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([=[
    local mp = require "mproc"
    local q = mp.Queue()
    local r, w = mp.Pipe()
    local lock = mp.Lock()
    lock:acquire()
    local waits = {
      queue = function() q:get() end,
      pipe = function() r:recv() end,
      lock = function() lock:acquire() end,
      sleep = function() mp.sleep(30) end,
    }
    io.write("ready\n"); io.stdout:flush()
    local ok, e = pcall(waits[arg[1]])
    print(arg[1], ok, mp.is_error(e, "Interrupted"), tostring(e))
    lock:release(); q:close(); r:close(); w:close()
  ]=])
  f:close()
  teardown(function() os.remove(script) end)

  for _, which in ipairs { "queue", "pipe", "lock", "sleep" } do
    it("reaches a blocked " .. which .. " wait as an error object", function()
      local cmd = ("LUA_PATH=%q LUA_CPATH=%q exec %s %s %s"):format(
        package.path, package.cpath, support.LUA, script, which)
      local p = mp.subprocess.Popen({ "sh", "-c", cmd }, { stdout = "pipe" })
      finally(function() support.close(p) end)
      assert.equal("ready", p.stdout:readline(10))
      mp.sleep(0.1)                        -- into the blocking wait
      assert.is_true(support.wait_until(function()  -- asleep in it
        return support.proc_state(p.pid) == "S"
      end, 10))
      p:send_signal(2)
      local out = p.stdout:read(nil, 10)
      assert.equal(which .. "\tfalse\ttrue\t"
        .. "Interrupted: interrupted by SIGINT while waiting\n", out)
      assert.equal(0, p:wait(10))
    end)
  end

  it("leaves other errors alone", function()
    local wrapped = errors.interruptible(function() error("other", 0) end)
    assert.has_error(wrapped, "other")
    assert.same({ 1, 2 }, { errors.interruptible(function() return 1, 2 end)() })
  end)
end)

describe("option tables (issue 13)", function()

  it("util.check_opts refuses unknown keys, with a hint for near misses", function()
    local allowed = { callback = true, error_callback = true, chunksize = true }
    local function f(opts) return util.check_opts(opts, allowed, "apply_async", 3) end
    assert.same({}, f(nil))
    assert.equal("bad argument #3 to 'apply_async' (unknown option 'callbak'; "
      .. "did you mean 'callback'?)", support.errmsg(f, { callbak = print }))
    assert.equal("bad argument #3 to 'apply_async' (unknown option 'chunk_size'; "
      .. "did you mean 'chunksize'?)", support.errmsg(f, { chunk_size = 2 }))
    assert.equal("bad argument #3 to 'apply_async' (unknown option 'zzz')",
      support.errmsg(f, { zzz = 1 }))
    assert.equal("bad argument #3 to 'apply_async' (unknown option '1')",
      support.errmsg(f, { 1 }))
    assert.equal("bad argument #3 to 'apply_async' (table expected, got number)",
      support.errmsg(f, 5))
  end)

  it("util.opt_number refuses strings where numbers are meant", function()
    local function f(opts)
      return util.opt_number(opts, "maxtasksperchild", "Pool", 1, true, 1)
    end
    assert.equal(12, f({ maxtasksperchild = 12 }))
    assert.is_nil(f({}))
    assert.equal("bad argument #1 to 'Pool' ('maxtasksperchild' must be an integer, got string)",
      support.errmsg(f, { maxtasksperchild = "12" }))
    assert.equal("bad argument #1 to 'Pool' ('maxtasksperchild' must be an integer, got 1.5)",
      support.errmsg(f, { maxtasksperchild = 1.5 }))
    assert.equal("bad argument #1 to 'Pool' ('maxtasksperchild' must be >= 1, got 0)",
      support.errmsg(f, { maxtasksperchild = 0 }))
    local function b(opts) return util.opt_boolean(opts, "check", "run", 2) end
    assert.equal("bad argument #2 to 'run' ('check' must be a boolean, got string)",
      support.errmsg(b, { check = "yes" }))
  end)

  it("every option table outside the pool refuses a misspelt key", function()
    local errmsg = support.errmsg
    assert.equal("bad argument #1 to 'Process' (unknown option 'deamon'; did you mean 'daemon'?)",
      errmsg(mp.Process, { target = print, deamon = true }))
    -- (the C function's name comes from package.loaded: mproc.Value or mproc.core.Value)
    assert.matches("^bad argument #3 to '[%w.]*Value' %(unknown option 'lok'; "
      .. "the only one is 'lock'%)$", errmsg(mp.Value, "int32", 0, { lok = false }))
    assert.matches("^bad argument #3 to '[%w.]*Array' %(unknown option 'locks'; "
      .. "the only one is 'lock'%)$", errmsg(mp.Array, "int32", 2, { locks = false }))
    assert.equal("bad argument #1 to 'SharedMemory' (unknown option 'sise'; "
      .. "did you mean 'size'?)", errmsg(mp.SharedMemory, { create = true, sise = 64 }))
    assert.equal("bad argument #2 to 'loads' (unknown option 'function'; "
      .. "the only one is 'functions')", errmsg(mp.loads, mp.dumps(1), { ["function"] = false }))
    assert.equal("bad argument #2 to 'wait' (unknown option 'return_wen'; "
      .. "did you mean 'return_when'?)", errmsg(mp.wait, {}, { return_wen = "ALL_COMPLETED" }))
    assert.equal("bad argument #2 to 'run' (unknown option 'capture_outptu'; "
      .. "did you mean 'capture_output'?)",
      errmsg(mp.subprocess.run, { "true" }, { capture_outptu = true }))
  end)
end)

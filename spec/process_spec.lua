local mp = require "mproc"
local core = require "mproc.core"
local codec = require "mproc.codec"
local support = require "support"

-- Targets below reach these as upvalues, not through busted's _ENV (a
-- table full of busted's state that the codec would otherwise copy).
local os, io, error, tostring, tonumber, print =
  os, io, error, tostring, tonumber, print

-- The message of a plain error raised by fn, without its position.
local errmsg = support.errmsg
local math_type = require("mproc.compat").math_type

local function tmpfile()
  local path = os.tmpname()
  return path
end

local slurp = support.read_file

-- support.run_script with os.execute's results in their 5.2+ form
local function run_script(src, env, opts)
  local out, ok, how, n = support.run_script(src, env, opts)
  return out, support.exec_status(ok, how, n)
end

local function spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function loop_forever()
  while true do mp.sleep(1) end
end

-- Starts p and makes sure it is gone at the end of the test.
local started = {}
local function start(p)
  p:start()
  started[#started + 1] = p
  return p
end

after_each(function()
  for _, p in ipairs(started) do
    local ok, alive = pcall(p.is_alive, p)
    if ok and alive then p:kill(); p:join(5) end
  end
  started = {}
end)

local has_codec = codec.encode ~= nil and codec.decode ~= nil

describe("mproc.Process", function()
  describe("mp.Process()", function()
    it("takes a target and its arguments, and does not start", function()
      local p = mp.Process(function() end, 1, 2)
      assert.is_nil(p.pid)
      assert.is_nil(p.exitcode)
      assert.is_nil(p.sentinel)
      assert.is_false(p.daemon)
      assert.matches("^Process%-%d+$", p.name)
      assert.is_false(p:is_alive())
    end)

    it("numbers default names Process-N", function()
      local a, b = mp.Process(function() end), mp.Process(function() end)
      local na, nb = tonumber(a.name:match("%d+$")), tonumber(b.name:match("%d+$"))
      assert.equal(na + 1, nb)
    end)

    it("takes an options table", function()
      local p = mp.Process { target = function() end, args = { 1 }, name = "w1", daemon = true }
      assert.equal("w1", p.name)
      assert.is_true(p.daemon)
    end)

    it("passes args with holes (args.n)", function()
      local p = start(mp.Process { target = function(a, b, c)
        os.exit((a == 1 and b == nil and c == 3) and 0 or 9)
      end, args = { 1, nil, 3, n = 3 } })
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)

    it("accepts no target (run does nothing)", function()
      local p = start(mp.Process())
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
    end)

    it("rejects a target that is not a function or a table", function()
      assert.equal("bad argument #1 to 'Process' (function or table expected, got number)",
        errmsg(mp.Process, 42))
    end)

    it("rejects unknown options and wrong option types", function()
      assert.equal("bad argument #1 to 'Process' (unknown option 'bogus')",
        errmsg(mp.Process, { target = print, bogus = 1 }))
      assert.equal("bad argument #1 to 'Process' ('target' must be a function, got number)",
        errmsg(mp.Process, { target = 1 }))
      assert.equal("bad argument #1 to 'Process' ('args' must be a table, got string)",
        errmsg(mp.Process, { target = print, args = "x" }))
      assert.equal("bad argument #1 to 'Process' ('name' must be a string, got number)",
        errmsg(mp.Process, { name = 5 }))
      assert.equal("bad argument #1 to 'Process' ('daemon' must be a boolean, got number)",
        errmsg(mp.Process, { daemon = 1 }))
    end)
  end)

  describe(":start()", function()
    it("runs the target in another process", function()
      local out = tmpfile()
      local p = start(mp.Process(function(path, x)
        local f = io.open(path, "w"); f:write(mp.getpid(), " ", x); f:close()
      end, out, "hello"))
      assert.is_true(p:join(10))
      assert.equal(p.pid .. " hello", slurp(out))
      assert.are_not.equal(mp.getpid(), p.pid)
      os.remove(out)
    end)

    it("runs a closure with upvalues", function()
      local base, t = 40, { 1, 1 }
      local p = start(mp.Process(function() os.exit(base + t[1] + t[2]) end))
      p:join(10)
      assert.equal(42, p.exitcode)
    end)

    it("raises when started twice", function()
      local p = start(mp.Process(function() end))
      assert.equal("cannot start a process twice", errmsg(p.start, p))
      p:join(10)
      assert.equal("cannot start a process twice", errmsg(p.start, p))
    end)

    it("raises SerializeError for an unsendable argument and starts nothing", function()
      if not has_codec then pending("the codec is not built yet") return end
      local before = #mp.active_children()
      local p = mp.Process(function() end, 1, { config = { on_done = io.stdout } })
      local ok, err = pcall(p.start, p)
      assert.is_false(ok)
      assert.is_true(mp.is_error(err, "SerializeError"))
      assert.equal("args[2].config.on_done: cannot send a userdata", err.message)
      assert.is_nil(p.pid)
      assert.equal(before, #mp.active_children())
    end)

    it("never writes buffered output twice", function()
      local out = support.run_script([[
        local mp = require "mproc"
        io.write("before ")
        local p = mp.Process(function() io.write("child ") end)
        p:start(); p:join(10)
        io.write("after\n")
      ]], nil, { pipe = true })
      assert.equal("before child after\n", out)
    end)
  end)

  describe("exitcode", function()
    it("is 0 after a normal return", function()
      local p = start(mp.Process(function() return 5 end))
      p:join(10)
      assert.equal(0, p.exitcode)
    end)

    it("is n after os.exit(n), 0/1 after os.exit(true/false)", function()
      local a = start(mp.Process(function() os.exit(3) end))
      local b = start(mp.Process(function() os.exit(true) end))
      local c = start(mp.Process(function() os.exit(false) end))
      a:join(10); b:join(10); c:join(10)
      assert.equal(3, a.exitcode)
      assert.equal(0, b.exitcode)
      assert.equal(1, c.exitcode)
    end)

    it("is 1 after an uncaught error, with the traceback on stderr", function()
      local out = support.run_script([[
        local mp = require "mproc"
        local function inner() error("boom") end
        local p = mp.Process { target = function() inner() end, name = "w1" }
        p:start(); p:join(10)
        print("exitcode", p.exitcode)
      ]])
      assert.matches("Process w1:\n[^\n]*: boom\nstack traceback:\n", out)
      -- 5.1 and LuaJIT name a function by its name only, not how it was reached
      local inner = _VERSION == "Lua 5.1" and "in function 'inner'" or "in upvalue 'inner'"
      assert.matches(inner, out, 1, true)
      assert.matches("exitcode\t1\n", out, 1, true)
      assert.not_matches("xpcall", out, 1, true)
    end)

    it("reports error objects through __tostring", function()
      local out = support.run_script([[
        local mp = require "mproc"
        local p = mp.Process(function()
          error(setmetatable({}, { __tostring = function() return "custom" end }))
        end)
        p:start(); p:join(10)
        local q = mp.Process(function() error({}) end)
        q:start(); q:join(10)
        print(p.exitcode, q.exitcode)
      ]])
      assert.matches("\ncustom\nstack traceback:", out)
      assert.matches("(error object is a table value)", out, 1, true)
      assert.matches("1\t1\n$", out)
    end)

    it("is -signum when killed", function()
      local a = start(mp.Process(loop_forever))
      local b = start(mp.Process(loop_forever))
      a:kill(); b:terminate()
      a:join(10); b:join(10)
      assert.equal(-9, a.exitcode)
      assert.equal(-15, b.exitcode)
    end)

    it("is nil while running and set without join once it ended", function()
      local p = start(mp.Process(function() mp.sleep(0.2) end))
      assert.is_nil(p.exitcode)
      assert.is_true(support.wait_until(function() return p.exitcode ~= nil end, 10))
      assert.equal(0, p.exitcode)
    end)

    it("is read-only", function()
      local p = mp.Process(function() end)
      assert.equal("cannot set read-only field 'exitcode'",
        errmsg(function() p.exitcode = 1 end))
      assert.equal("cannot set read-only field 'pid'", errmsg(function() p.pid = 1 end))
    end)
  end)

  describe(":join()", function()
    it("returns true when the process ended", function()
      local p = start(mp.Process(function() end))
      assert.is_true(p:join(10))
      assert.is_true(p:join(10))  -- again: still true
    end)

    it("returns false after the timeout", function()
      local p = start(mp.Process(loop_forever))
      local t0 = core.now()
      assert.is_false(p:join(0.2))
      local dt = core.now() - t0
      assert.is_true(dt >= 0.18, "returned after " .. dt)
      assert.is_true(dt < 1.5, "returned after " .. dt)
      assert.is_nil(p.exitcode)
    end)

    it("with timeout 0 never blocks", function()
      local p = start(mp.Process(loop_forever))
      local t0 = core.now()
      assert.is_false(p:join(0))
      assert.is_true(core.now() - t0 < 0.5)
    end)

    it("checks its timeout", function()
      local p = mp.Process(function() end)
      assert.equal("bad argument #1 to 'join' (number expected, got string)",
        errmsg(p.join, p, "x"))
      assert.equal("bad argument #1 to 'join' (timeout must be >= 0)", errmsg(p.join, p, -1))
    end)

    it("raises before start", function()
      local p = mp.Process(function() end)
      assert.equal("can only join a started process", errmsg(p.join, p, 1))
    end)

    it("raises in a process that is not the parent", function()
      local p = start(mp.Process(loop_forever))
      local code = support.in_child(function()
        local ok, err = pcall(p.join, p, 0)
        return (not ok and err:find("can only join a child process", 1, true)) and 0 or 1
      end)
      assert.equal(0, code)
    end)
  end)

  describe(":is_alive()", function()
    it("is true while running, false after", function()
      local p = mp.Process(function() mp.sleep(0.2) end)
      assert.is_false(p:is_alive())
      start(p)
      assert.is_true(p:is_alive())
      p:join(10)
      assert.is_false(p:is_alive())
    end)

    it("notices the end without join", function()
      local p = start(mp.Process(function() end))
      assert.is_true(support.wait_until(function() return not p:is_alive() end, 10))
      assert.equal(0, p.exitcode)
    end)
  end)

  describe(":terminate() and :kill()", function()
    it("send SIGTERM and SIGKILL", function()
      local a = start(mp.Process(loop_forever))
      local b = start(mp.Process(loop_forever))
      a:terminate(); b:kill()
      assert.is_true(a:join(10))
      assert.is_true(b:join(10))
      assert.equal(-15, a.exitcode)
      assert.equal(-9, b.exitcode)
    end)

    it("do nothing once the process ended", function()
      local p = start(mp.Process(function() end))
      p:join(10)
      p:terminate(); p:kill()
      assert.equal(0, p.exitcode)
    end)

    it("raise before start", function()
      local p = mp.Process(function() end)
      assert.equal("can only terminate a started process", errmsg(p.terminate, p))
      assert.equal("can only kill a started process", errmsg(p.kill, p))
    end)
  end)

  describe(":close()", function()
    it("raises for a running process", function()
      local p = start(mp.Process(loop_forever))
      assert.equal("cannot close a running process", errmsg(p.close, p))
      p:kill(); p:join(10)
      p:close()
    end)

    it("makes the object unusable, and may be called twice", function()
      local p = start(mp.Process(function() end))
      p:join(10)
      p:close()
      p:close()
      for _, m in ipairs { "start", "join", "is_alive", "terminate", "kill" } do
        assert.equal("attempt to use a closed process", errmsg(p[m], p))
      end
      assert.equal("attempt to use a closed process", errmsg(function() return p.pid end))
      assert.equal("attempt to use a closed process", errmsg(function() return p.exitcode end))
      assert.equal("attempt to use a closed process", errmsg(function() return p.sentinel end))
    end)

    it("works on a process never started", function()
      local p = mp.Process(function() end)
      p:close()
      assert.equal("attempt to use a closed process", errmsg(p.start, p))
    end)
  end)

  describe(".daemon", function()
    it("cannot be set after start", function()
      local p = start(mp.Process(function() end))
      assert.equal("cannot set daemon after start", errmsg(function() p.daemon = true end))
      p:join(10)
    end)

    it("must be a boolean", function()
      local p = mp.Process(function() end)
      assert.equal("bad argument #1 to 'daemon' (boolean expected, got number)",
        errmsg(function() p.daemon = 1 end))
      p.daemon = true
      assert.is_true(p.daemon)
    end)
  end)

  describe(".name", function()
    it("can be changed and must be a string", function()
      local p = mp.Process(function() end)
      p.name = "worker"
      assert.equal("worker", p.name)
      assert.equal("bad argument #1 to 'name' (string expected, got number)",
        errmsg(function() p.name = 1 end))
    end)

    it("of children of a child are Process-N:M", function()
      local out = tmpfile()
      local p = start(mp.Process(function(path)
        local a = mp.Process(function() end)
        local b = mp.Process(function() end)
        local f = io.open(path, "w")
        f:write(mp.current_process().name, " ", a.name, " ", b.name)
        f:close()
      end, out))
      p:join(10)
      local id = p.name:match("^Process%-(%d+)$")
      assert.equal(("Process-%s Process-%s:1 Process-%s:2"):format(id, id, id), slurp(out))
      os.remove(out)
    end)
  end)

  describe(".sentinel", function()
    it("is a descriptor that becomes readable when the process ended", function()
      local p = start(mp.Process(function() mp.sleep(0.2) end))
      assert.equal("integer", math_type(p.sentinel))
      assert.is_false(core.poll_fd(p.sentinel, "r", 0))
      assert.is_true(core.poll_fd(p.sentinel, "r", 10))
      p:join(10)
      assert.equal(0, p.exitcode)
    end)
  end)

  describe("subclasses", function()
    it("run :run() with the instance's fields", function()
      local Worker = mp.Process:extend()
      function Worker:run() os.exit(self.x + self.t.y) end
      local w = Worker()
      w.x, w.t = 10, { y = 5 }
      start(w)
      w:join(10)
      assert.equal(15, w.exitcode)
      assert.matches("^Process%-%d+$", w.name)
    end)

    it("take the options of mp.Process, with fields set on the instance", function()
      local Worker = mp.Process:extend()
      function Worker:run() os.exit(self.loop) end
      local w = Worker { name = "looper", daemon = true }
      w.loop = 7
      start(w)
      w:join(10)
      assert.equal("looper", w.name)
      assert.is_true(w.daemon)
      assert.equal(7, w.exitcode)
    end)

    it("check their options as mp.Process does, named by the constructor", function()
      local Worker = mp.Process:extend()
      local ok, e = pcall(function() local w = Worker { nmae = "x" }; return w end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'Worker' %(unknown option 'nmae'; "
        .. "did you mean 'name'%?%)$", e)
      ok, e = pcall(function() local w = Worker { loop = 3 }; return w end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'Worker' %(unknown option 'loop'; set own fields on the "
        .. "instance: w.loop = ... before start%)$", e)
      ok, e = pcall(function() local w = Worker { name = 1 }; return w end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'Worker' %('name' must be a string, got number%)$", e)
      -- the error points at the caller's line
      assert.matches("process_spec.lua:%d+:", e)
      -- called without a name (by pcall, or a tail call), it says Process
      assert.equal("bad argument #1 to 'Process' (unknown option 'nmae'; did you mean 'name'?)",
        errmsg(Worker, { nmae = "x" }))
      local Sub = Worker:extend()
      ok, e = pcall(function() local w = Sub { deamon = true }; return w end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'Sub' %(unknown option 'deamon'; "
        .. "did you mean 'daemon'%?%)$", e)
    end)

    it("can have their own constructor (init)", function()
      local Worker = mp.Process:extend {
        init = function(self, n) self.n = n; self.daemon = true end,
        run = function(self) os.exit(self.n * 2) end,
      }
      local w = Worker(8)
      assert.is_true(w.daemon)
      start(w)
      w:join(10)
      assert.equal(16, w.exitcode)
    end)

    it("can be extended again and keep the base methods", function()
      local A = mp.Process:extend()
      function A:run() os.exit(self:code()) end
      function A.code() return 3 end
      local B = A:extend()
      function B.code() return 4 end
      local a, b = start(A()), start(B())
      a:join(10); b:join(10)
      assert.equal(3, a.exitcode)
      assert.equal(4, b.exitcode)
      assert.is_function(b.terminate)
    end)

    it("without run call the target", function()
      local W = mp.Process:extend()
      local w = start(W(function(n) os.exit(n) end, 6))
      w:join(10)
      assert.equal(6, w.exitcode)
    end)

    it(":extend() checks its argument", function()
      assert.equal("bad argument #1 to 'extend' (table expected, got number)",
        errmsg(mp.Process.extend, mp.Process, 1))
    end)
  end)

  describe("mp.current_process() and mp.parent_process()", function()
    it("describe the main process", function()
      local cur = mp.current_process()
      assert.equal("MainProcess", cur.name)
      assert.equal(mp.getpid(), cur.pid)
      assert.is_nil(mp.parent_process())
    end)

    it("describe a child and its parent", function()
      local out = tmpfile()
      local p = start(mp.Process { name = "kid", target = function(path)
        local c, par = mp.current_process(), mp.parent_process()
        local f = io.open(path, "w")
        f:write(c.name, " ", tostring(c.pid == mp.getpid()), " ", par.name, " ", par.pid)
        f:close()
      end, args = { out } })
      p:join(10)
      assert.equal("kid true MainProcess " .. mp.getpid(), slurp(out))
      os.remove(out)
    end)
  end)

  describe("mp.active_children()", function()
    it("lists running children and reaps finished ones", function()
      local a = start(mp.Process(loop_forever))
      local b = start(mp.Process(function() end))
      assert.is_true(support.wait_until(function()
        local list = mp.active_children()
        return #list == 1 and list[1] == a
      end, 10))
      assert.equal(0, b.exitcode)
      a:kill(); a:join(10)
      assert.equal(0, #mp.active_children())
    end)
  end)

  describe("mp.cpu_count(), mp.getpid(), mp.getppid()", function()
    it("answer", function()
      assert.is_true(math_type(mp.cpu_count()) == "integer" and mp.cpu_count() >= 1)
      assert.equal(tonumber(slurp("/proc/self/stat"):match("^%d+ %b() %S+ (%d+)")),
        mp.getppid())
      local parent = mp.getpid()
      assert.equal(0, support.in_child(function()
        return mp.getppid() == parent and mp.getpid() ~= parent and 0 or 1
      end))
    end)
  end)

  describe("mp.fork() and mp.waitpid()", function()
    it("fork returns 0 in the child and its pid in the parent", function()
      local pid = mp.fork()
      if pid == 0 then core.exit(7) end
      assert.is_true(pid > 0)
      assert.equal(7, mp.waitpid(pid, 10))
    end)

    it("waitpid returns nil after its timeout", function()
      local pid = mp.fork()
      if pid == 0 then core.sleep(30) core.exit(0) end
      local t0 = core.now()
      assert.is_nil(mp.waitpid(pid, 0.2))
      local dt = core.now() - t0
      assert.is_true(dt >= 0.18 and dt < 1.5, "returned after " .. dt)
      core.kill(pid, 9)
      assert.equal(-9, mp.waitpid(pid, 10))
    end)

    it("reaps children nobody waits for, and keeps their status", function()
      local pid = mp.fork()
      if pid == 0 then core.exit(5) end
      assert.is_true(support.wait_until(function()
        return support.proc_state(pid) == nil
      end, 5), "still " .. tostring(support.proc_state(pid)))
      assert.equal(5, mp.waitpid(pid, 5))
    end)

    it("waitpid raises OSError for a pid that is not our child", function()
      local ok, err = pcall(mp.waitpid, 1, 0)
      assert.is_false(ok)
      assert.is_true(mp.is_error(err, "OSError"))
    end)

    it("waitpid checks its arguments", function()
      assert.equal("bad argument #1 to 'waitpid' (integer expected, got string)",
        errmsg(mp.waitpid, "1"))
      assert.equal("bad argument #2 to 'waitpid' (timeout must be >= 0)",
        errmsg(mp.waitpid, 1, -2))
    end)

    it("the forked child sees its parent", function()
      local parent = mp.getpid()
      local pid = mp.fork()
      if pid == 0 then
        local par = mp.parent_process()
        local ok = par and par.pid == parent and mp.current_process().pid == mp.getpid()
        core.exit(ok and 0 or 1)
      end
      assert.equal(0, mp.waitpid(pid, 10))
    end)
  end)

  describe("no zombies", function()
    it("a child that ended without join is reaped", function()
      local p = start(mp.Process(function() end))
      local pid = p.pid
      assert.is_true(support.wait_until(function()
        return support.proc_state(pid) == nil
      end, 5), "state " .. tostring(support.proc_state(pid)))
      assert.equal(0, p.exitcode)  -- the status is kept for the object
    end)
  end)

  describe("no orphans", function()
    local function grandchild_dies(env)
      local out = support.run_script([[
        local mp = require "mproc"
        local path = os.tmpname()
        local p = mp.Process(function()
          local g = mp.Process(function() while true do mp.sleep(1) end end)
          g:start()
          local f = io.open(path, "w"); f:write(g.pid); f:close()
          while true do mp.sleep(1) end
        end)
        p:start()
        local gpid
        for _ = 1, 500 do
          local f = io.open(path); gpid = f and tonumber(f:read("*a")); if f then f:close() end
          if gpid then break end
          mp.sleep(0.01)
        end
        os.remove(path)
        p:kill(); p:join(10)
        local t0 = require("mproc.core").now()
        local gone
        repeat
          local f = io.open("/proc/" .. gpid .. "/stat")
          local st = f and f:read("*a"):match("^%d+ %b() (%S)"); if f then f:close() end
          gone = st == nil or st == "Z"
          if not gone then mp.sleep(0.01) end
        until gone or require("mproc.core").now() - t0 > 1.5
        print(gone and "gone" or "alive", gpid)
        if not gone then os.execute("kill -9 " .. gpid) end
      ]], env)
      assert.matches("^gone\t%d+\n$", out)
    end

    it("a grandchild ends when its parent is killed (PDEATHSIG)", function()
      grandchild_dies()
    end)

    it("a grandchild ends when its parent is killed (pipe watch)", function()
      grandchild_dies({ MPROC_NO_PDEATHSIG = "1" })
    end)

    it("a detached child survives its parent", function()
      local out = support.run_script([[
        local mp = require "mproc"
        local p = mp.Process { target = function() mp.sleep(30) end, detached = true }
        p:start()
        print(p.pid)
      ]])
      local pid = tonumber(out:match("^(%d+)\n$"))
      assert.is_number(pid)
      core.sleep(0.3)
      local alive = support.alive(pid)
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      assert.is_true(alive)
    end)
  end)

  describe("exit behaviour", function()
    it("terminates daemon children and joins the others", function()
      local out, ok = run_script([[
        local mp = require "mproc"
        local d = mp.Process { target = function() while true do mp.sleep(1) end end,
                               daemon = true }
        d:start()
        local n = mp.Process(function() mp.sleep(0.3) print("non-daemon done") end)
        n:start()
        print("daemon", d.pid)
      ]])
      assert.is_true(ok)
      local pid = tonumber(out:match("daemon\t(%d+)"))
      assert.matches("non-daemon done\n", out, 1, true)
      assert.is_true(support.wait_until(function() return not support.alive(pid) end, 2))
    end)

    it("runs after os.exit(n) too, with the exit status kept", function()
      local out, ok, how, n = run_script([[
        local mp = require "mproc"
        local p = mp.Process(function() mp.sleep(0.2) print("joined") end)
        p:start()
        os.exit(3)
      ]])
      assert.equal("joined\n", out)
      assert.is_nil(ok)
      assert.equal("exit", how)
      assert.equal(3, n)
    end)

    it("is run by a child for its own children", function()
      local out = tmpfile()
      local p = start(mp.Process(function(path)
        local g = mp.Process(function(q) mp.sleep(0.2) spit(q, "grandchild") end, path)
        g:start()
      end, out))
      p:join(10)
      assert.equal("grandchild", slurp(out))
      os.remove(out)
    end)
  end)

  describe("support.in_child()", function()
    it("returns the child's status", function()
      assert.equal(0, support.in_child(function() end))
      assert.equal(3, support.in_child(function() return 3 end))
      assert.equal(7, support.in_child(function() os.exit(7) end))
      assert.equal(1, support.in_child(function() error("expected: in_child error path") end))
    end)
  end)
end)

describe("mproc.Process random numbers", function()
  -- 5.1 takes math.random's bounds as C ints
  local TOP = _VERSION == "Lua 5.1" and 2147483647 or 1099511627776
  it("reseeds math.random in each child, so siblings draw different numbers", function()
    local r, w = mp.Pipe(false)
    local procs = {}
    for i = 1, 3 do
      procs[i] = mp.Process(function(c) c:send(math.random(1, TOP)) end, w)
      procs[i]:start()
    end
    local seen = {}
    for _ = 1, 3 do
      assert.is_true(r:poll(10))
      local v = r:recv()
      assert.is_nil(seen[v], "two children drew " .. tostring(v))
      seen[v] = true
    end
    for i = 1, 3 do assert.is_true(procs[i]:join(10)) end
    r:close(); w:close()
  end)

  it("reseeds in an mp.fork child too", function()
    local r, w = mp.Pipe(false)
    local pid = mp.fork()
    if pid == 0 then
      w:send(math.random(1, TOP))
      core.exit(0)
    end
    local mine = math.random(1, TOP)  -- the first draw after the fork
    assert.is_true(r:poll(10))
    assert.are_not.equal(mine, r:recv())
    assert.equal(0, mp.waitpid(pid, 10))
    r:close(); w:close()
  end)
end)

describe("mproc at the end of a script", function()
  it("survives a SIGCHLD that arrives after lua_close unloaded the modules", function()
    -- the mp.fork child exits while the parent is closing its Lua state;
    -- before the module was pinned this crashed the parent about one run
    -- in two, so 20 runs
    local out, ok, how, code = run_script([[
      for _ = 1, 20 do
        local r = os.execute(]] .. ("%q"):format(support.LUA) .. [[ .. [=[ -e '
          local mp = require "mproc"
          if mp.fork() == 0 then os.exit(0) end']=])
        -- os.execute: true on success (5.2+), the status 0 on 5.1
        if r ~= true and r ~= 0 then print("a script crashed"); os.exit(1) end
      end
      print("20 scripts ended cleanly")
    ]])
    assert.equal("20 scripts ended cleanly\n", out)
    assert.is_true(ok, ("ended by %s %s"):format(tostring(how), tostring(code)))
  end)
end)

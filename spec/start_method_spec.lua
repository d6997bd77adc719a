local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

-- Targets below reach these as upvalues, not through busted's _ENV.
local os, io, tostring, string, math, pairs = os, io, tostring, string, math, pairs

local errmsg = support.errmsg

local spawn = mp.get_context("spawn")

-- Starts p and makes sure it is gone at the end of the test.
local started = {}
local function start(p)
  p:start()
  started[#started + 1] = p
  return p
end

after_each(function()
  for _, p in ipairs(started) do
    if p:is_alive() then p:kill() end
    p:join(5)
  end
  started = {}
end)

-- Runs a script in a fresh support.LUA; returns its output and exit status.
local function script(src)
  local out, ok = support.run_script(src, nil, { pipe = true })
  return out, ok
end

describe("start methods", function()
  describe("mp.get_start_method() / mp.set_start_method()", function()
    -- (MPROC_START_METHOD, which CI sets to run the suite under spawn,
    -- changes the default)
    local DEFAULT = os.getenv("MPROC_START_METHOD") or "fork"

    it("is 'fork' by default", function()
      assert.equal(DEFAULT, mp.get_start_method())
    end)

    it("sets the method once, before the first process; force = true overrides", function()
      local out = script [[
        local mp = require "mproc"
        mp.set_start_method("spawn")
        print(mp.get_start_method())
        print(pcall(mp.set_start_method, "fork"))
        mp.set_start_method("fork", {force = true})
        print(mp.get_start_method())
        local p = mp.Process(function() end); p:start(); p:join(5)
        print(pcall(mp.set_start_method, "spawn"))
        mp.set_start_method("spawn", true)
        print(mp.get_start_method())
      ]]
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal("spawn", lines[1])
      assert.matches("false\t.*already been set %(to 'spawn'%).*force = true", lines[2])
      assert.equal("fork", lines[3])
      assert.matches("false\t.*before the first process", lines[4])
      assert.equal("spawn", lines[5])
    end)

    it("is passed on to a spawned child, as Python does", function()
      local out = script [[
        local mp = require "mproc"
        mp.set_start_method("forkserver")
        local q = mp.Queue()
        local c = mp.get_context("spawn").Process(function() q:put(mp.get_start_method()) end)
        c:start(); c:join(10)
        print("child's method: " .. q:get(10))
      ]]
      assert.matches("child's method: forkserver", out, 1, true)
    end)

    it("takes the default of a whole run from MPROC_START_METHOD", function()
      local out = support.run_script([[
        local mp = require "mproc"
        print(mp.get_start_method())
        local q = mp.Queue()
        local p = mp.Process(function() q:put(io.open("/proc/self/cmdline"):read("*a")) end)
        p:start()
        -- NULs as spaces: print on 5.1 stops at the first NUL (fputs)
        print((q:get(10):gsub("%c", " ")))
        p:join(10)
      ]], { MPROC_START_METHOD = "spawn" }, { pipe = true })
      assert.matches("^spawn\n[^\n]*spawn_child", out)
      out = support.run_script([[require "mproc"]], { MPROC_START_METHOD = "spwan" },
                               { pipe = true })
      assert.matches("MPROC_START_METHOD: unknown start method 'spwan'", out, 1, true)
    end)

    it("names the method meant by a misspelt one", function()
      assert.equal("bad argument #1 to 'set_start_method' (unknown start method 'sapwn' "
        .. "(one of 'fork', 'spawn', 'forkserver'); did you mean 'spawn'?)",
        errmsg(mp.set_start_method, "sapwn"))
      assert.matches("unknown option 'allow_thread'; did you mean 'allow_threads'",
        errmsg(mp.set_start_method, "fork", { allow_thread = true }), 1, true)
      assert.matches("'allow_threads' applies to the 'fork' method only",
        errmsg(mp.set_start_method, "spawn", { allow_threads = true }), 1, true)
      assert.equal("bad argument #1 to 'get_context' (string expected, got number)",
        errmsg(mp.get_context, 1))
    end)
  end)

  describe("mp.get_context()", function()
    it("has the whole API, with Process and Pool bound to its method", function()
      for k in pairs(mp) do assert.is_not_nil(spawn[k], k) end
      assert.equal("spawn", spawn.get_start_method())
      assert.equal(os.getenv("MPROC_START_METHOD") or "fork",
        mp.get_context().get_start_method())
      assert.equal(spawn, mp.get_context("spawn"))
      assert.equal(spawn.Queue, mp.Queue)
      assert.are_not.equal(spawn.Process, mp.Process)
      assert.equal(os.getenv("MPROC_START_METHOD") or "fork", mp.get_start_method())  -- unchanged
    end)

    it("gives a Process that refuses unknown options as mp.Process does", function()
      assert.matches("unknown option 'targte'; did you mean 'target'",
        errmsg(spawn.Process, { targte = print }), 1, true)
    end)
  end)

  describe("mp.set_executable()", function()
    it("names the interpreter that spawn starts", function()
      local out = script([[
        local mp = require "mproc"
        local ctx = mp.get_context("spawn")
        mp.set_executable("/nonexistent/lua")
        local ok, e = pcall(function() ctx.Process(function() end):start() end)
        print(ok, mp.is_error(e, "OSError"), e)
        print("children", #mp.active_children())
        mp.set_executable("]] .. support.LUA .. [[")
        local p = ctx.Process(function() os.exit(2) end)
        p:start(); p:join(10)
        print("exitcode", p.exitcode)
        print(pcall(mp.set_executable, ""))
      ]])
      assert.matches("false\ttrue\tOSError: /nonexistent/lua: No such file", out)
      assert.matches("children\t0", out)
      assert.matches("exitcode\t2", out)
      assert.matches("bad argument #1 to 'set_executable' (non-empty string expected, "
        .. "got empty string)", out, 1, true)
    end)
  end)

  describe("spawn", function()
    it("runs the target with its arguments and upvalues in a fresh interpreter", function()
      local q = mp.Queue()
      local k = 40
      _G.SPAWN_SPEC_GLOBAL = "parent's"
      local p = start(spawn.Process(function(a, b)
        local cmd = io.open("/proc/self/cmdline"):read("*a")
        q:put({ a + b + k, string.format("%s", tostring(_G.SPAWN_SPEC_GLOBAL)), cmd,
                mp.current_process().name, mp.parent_process().name,
                mp.parent_process().pid, math.sqrt(16) })
      end, 1, 1))
      local r = q:get(10)
      _G.SPAWN_SPEC_GLOBAL = nil
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
      assert.equal(42, r[1])
      assert.equal("nil", r[2])                     -- not a copy of this process
      assert.matches("spawn_child", r[3], 1, true)  -- a new program
      assert.equal(p.name, r[4])
      assert.equal("MainProcess", r[5])
      assert.equal(core.getpid(), r[6])
      assert.equal(4, r[7])
      q:close()
    end)

    it("starts the VM of the parent (Lua 5.4, 5.3, 5.1 or LuaJIT)", function()
      local function vm()
        local jit = rawget(_G, "jit")
        return _VERSION .. " " .. tostring(jit and jit.version)
      end
      local q = mp.Queue()
      local p = start(spawn.Process(function()
        q:put({ vm(), io.open("/proc/self/cmdline"):read("*a"):match("^[^%z]*") })
      end))
      local r = q:get(10)
      assert.is_true(p:join(10))
      assert.equal(vm(), r[1])
      assert.matches(support.LUA .. "$", r[2])
      q:close()
    end)

    it("gives exit codes as under fork, with the traceback on stderr", function()
      local out = script [[
        local mp = require "mproc"
        local ctx = mp.get_context("spawn")
        local codes = {}
        for _, f in ipairs { function() end, function() os.exit(3) end,
                             function() error("boom in child") end } do
          local p = ctx.Process(f); p:start(); p:join(10)
          codes[#codes + 1] = p.exitcode
        end
        local p = ctx.Process(function() while true do end end)
        p:start(); p:terminate(); p:join(10)
        codes[#codes + 1] = p.exitcode
        print("codes " .. table.concat(codes, " "))
      ]]
      assert.matches("codes 0 3 1 %-15", out)
      assert.matches("Process Process%-3:\n[^\n]*boom in child\nstack traceback:", out)
    end)

    it("requires by name the modules the target refers to", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local f = assert(io.open(dir .. "/spawnspec_mod.lua", "w"))
      f:write("return { twice = function(x) return 2 * x end, id = tostring({}) }\n")
      f:close()
      local saved = package.path
      package.path = dir .. "/?.lua;" .. package.path
      local m = require "spawnspec_mod"
      local q = mp.Queue()
      local p = start(spawn.Process(function() q:put({ m.twice(21), m.id }) end))
      local r = q:get(10)
      p:join(10)
      package.path = saved
      package.loaded.spawnspec_mod = nil
      os.remove(dir .. "/spawnspec_mod.lua")
      os.remove(dir)
      assert.equal(42, r[1])
      assert.are_not.equal(m.id, r[2])   -- the child's own copy, required there
      q:close()
    end)

    it("raises SerializeError in the parent for what a new interpreter cannot rebuild", function()
      package.loaded.spawnspec_nowhere = { f = math.sqrt }
      local nowhere = package.loaded.spawnspec_nowhere
      local e = errmsg(function() spawn.Process(function() return nowhere end):start() end)
      package.loaded.spawnspec_nowhere = nil
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.matches('target<upvalue nowhere>: cannot send module "spawnspec_nowhere" to a '
        .. "spawned process", e.message, 1, true)
      local reg = mp.register("spawnspec.fn", io.write)
      e = errmsg(function() spawn.Process(print, { cb = reg }):start() end)
      assert.matches('args[1].cb: cannot send "spawnspec.fn" to a spawned process',
        e.message, 1, true)
      e = errmsg(function() spawn.Process(print, coroutine.create(function() end)):start() end)
      assert.matches("args[1]: cannot send a coroutine", e.message, 1, true)
      assert.equal(0, #mp.active_children())
    end)

    it("passes mproc objects by reference: Lock, Value, Queue, Pipe ends", function()
      local lock, v, q = mp.Lock(), mp.Value("i", 0), mp.Queue()
      local a, b = mp.Pipe()
      local p = start(spawn.Process(function(conn)
        for _ = 1, 100 do
          lock:acquire(); v.value = v.value + 1; lock:release()
        end
        conn:send("over the pipe")
        q:put(conn:recv(10))
      end, b))
      for _ = 1, 100 do
        lock:acquire(); v.value = v.value + 1; lock:release()
      end
      assert.equal("over the pipe", a:recv(10))
      a:send("back")
      assert.equal("back", q:get(10))
      p:join(10)
      assert.equal(0, p.exitcode)
      assert.equal(200, v.value)
      a:close(); b:close(); q:close()
    end)

    it("runs subclasses with their fields and methods", function()
      local q = mp.Queue()
      local Base = spawn.Process:extend()
      Base.twice = function(_, x) return 2 * x end
      local W = Base:extend { run = function(self) q:put(self:twice(self.n)) end }
      local w = W()
      w.n = 21
      start(w)
      assert.equal(42, q:get(10))
      w:join(10)
      assert.equal(0, w.exitcode)
      q:close()
    end)

    it("ends a child's children with it", function()
      local q = mp.Queue()
      local p = start(spawn.Process(function()
        local c = mp.get_context("spawn").Process(function() while true do mp.sleep(1) end end)
        c:start()
        q:put(c.pid)
        while true do mp.sleep(1) end
      end))
      local gpid = q:get(10)
      assert.is_true(support.alive(gpid))
      p:kill()
      p:join(10)
      assert.is_true(support.wait_until(function() return not support.alive(gpid) end, 5))
      q:close()
    end)

    it("terminates daemon children and joins the others at exit", function()
      local out = script [[
        local mp = require "mproc"
        local ctx = mp.get_context("spawn")
        local d = ctx.Process{target = function() while true do mp.sleep(1) end end,
                              daemon = true}
        d:start()
        local n = ctx.Process(function() mp.sleep(0.3) print("non-daemon done") end)
        n:start()
        print("daemon " .. d.pid)
      ]]
      assert.matches("non%-daemon done", out)
      local pid = tonumber(out:match("daemon (%d+)"))
      assert.is_true(support.wait_until(function() return not support.alive(pid) end, 5))
    end)

  end)

  describe("Pool under spawn", function()
    it("runs tasks in spawned workers, with their initializer", function()
      local k = 10
      local pool = spawn.Pool { processes = 2, initializer = function(x) _G.INIT = x end,
                                initargs = { 5 } }
      finally(function() pool:terminate(); pool:join() end)
      assert.equal(16, pool:apply(function(a) return a + k + _G.INIT end, 1))
      assert.same({ 1, 4, 9, 16, 25, 36, 49, 64, n = 8 },
        pool:map(function(x) return x * x end, { 1, 2, 3, 4, 5, 6, 7, 8 }))
      assert.matches("^SpawnPoolWorker%-%d+$",
        pool:apply(function() return mp.current_process().name end))
      assert.equal(7, pool:apply(function(s) return s:len() end, string.rep("a", 7)))
    end)

    it("replaces a worker that died, and the task it held fails with WorkerLost", function()
      local pool = spawn.Pool(1)
      finally(function() pool:terminate(); pool:join() end)
      local r = pool:apply_async(function() os.exit(9) end)
      local ok, e = pcall(r.get, r, 20)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "WorkerLost"), tostring(e))
      assert.equal(3, pool:apply(function() return 3 end))
    end)

  end)

  describe("forkserver", function()
    local fs = mp.get_context("forkserver")

    it("forks children from one small server, with the target and arguments", function()
      local q = mp.Queue()
      local k = 40
      local ps = {}
      for i = 1, 2 do
        ps[i] = start(fs.Process(function(a)
          q:put({ a + k, mp.getppid(), mp.current_process().name, mp.parent_process().pid })
          os.exit(3)
        end, i))
      end
      local r1, r2 = q:get(10), q:get(10)
      if r1[1] > r2[1] then r1, r2 = r2, r1 end
      for _, p in ipairs(ps) do
        assert.is_true(p:join(10))
        assert.equal(3, p.exitcode)
      end
      assert.equal(41, r1[1])
      assert.equal(42, r2[1])
      assert.equal(r1[2], r2[2])                 -- the same server
      assert.are_not.equal(core.getpid(), r1[2])
      assert.equal(core.getpid(), r1[4])         -- its parent is still us
      local cmd = support.read_file("/proc/" .. r1[2] .. "/cmdline")
      assert.matches("spawn_child", cmd, 1, true)  -- a fresh interpreter
      q:close()
    end)

    it("terminates, and gives 1 and the traceback for an error", function()
      local p = start(fs.Process(function() while true do mp.sleep(1) end end))
      p:terminate()
      p:join(10)
      assert.equal(-15, p.exitcode)
      local out = script [[
        local mp = require "mproc"
        local p = mp.get_context("forkserver").Process(function() error("fs boom") end)
        p:start(); p:join(10)
        print("code " .. p.exitcode)
        local n = mp.get_context("forkserver").Process(function()
          mp.sleep(0.3) print("non-daemon done") end)
        n:start()
      ]]
      assert.matches("code 1", out)
      assert.matches("fs boom", out)
      assert.matches("non%-daemon done", out)   -- joined at exit, as under fork
    end)

    it("runs a Pool", function()
      local pool = fs.Pool(2)
      finally(function() pool:terminate(); pool:join() end)
      assert.same({ 3, 6, 9, n = 3 }, pool:map(function(x) return 3 * x end, { 1, 2, 3 }))
      assert.matches("^ForkServerPoolWorker%-%d+$",
        pool:apply(function() return mp.current_process().name end))
    end)

    it("passes Pipe ends", function()
      local a, b = mp.Pipe()
      local p = start(fs.Process(function(conn) conn:send(conn:recv(10) .. "!") end, b))
      a:send("hello")
      assert.equal("hello!", a:recv(10))
      p:join(10)
      assert.equal(0, p.exitcode)
      a:close(); b:close()
    end)
  end)

  describe("every method", function()
    -- lua.c closes the state (collecting the Lock) before C's atexit joins
    -- the children: a spawned child, which attaches the Lock by name, found
    -- it gone ("shared object ... no longer exists").
    it("keeps what a script gave its children until they are joined at its end", function()
      for _, m in ipairs { "spawn", "forkserver", "fork" } do
        local out, ok = support.run_script([[
          local mp = require "mproc"
          io.stdout:setvbuf("no")
          local lock, q = mp.Lock(), mp.Queue()
          for i = 1, 4 do
            mp.Process(function(l, qq, n)
              l:acquire()
              qq:put(n)
              io.write("child ", n, "\n")
              l:release()
            end, lock, q, i):start()
          end
        ]], { MPROC_START_METHOD = m }, { pipe = true })
        assert.is_true(ok, m .. ": " .. out)
        for i = 1, 4 do assert.matches("child " .. i .. "\n", out, 1, true) end
        assert.is_nil(out:find("Error", 1, true), m .. ": " .. out)
      end
    end)

    it("gives a spawned child the tree's segment tracker (and descriptor broker)", function()
      local q = mp.Queue()
      local p = spawn.Process(function(qq)
        local v = mp.Value("int64", 7)        -- created in the spawned child
        qq:put(require("mproc.core").tracker_pid())
        qq:put(v)
        while true do mp.sleep(1) end
      end, q)
      start(p)
      -- one tracker for the tree (before: the child forked one of its own)
      assert.equal(core.tracker_pid(), q:get(10))
      local v = q:get(10)
      assert.equal(7, v.value)
      v:close()
      local pid = p.pid
      assert.equal(1, #support.shm_names("mproc-" .. pid .. "-"))
      p:kill()
      p:join(10)
      assert.is_true(support.wait_until(function()
        return #support.shm_names("mproc-" .. pid .. "-") == 0
      end, 5), "segments of " .. pid .. " left")
      q:close()
    end)
  end)

  describe("fork in a process that runs threads", function()
    -- the host of the spec's VM: build-<vm>/thread_host next to the
    -- mproc.core that busted was given (run-specs.sh's --cpath)
    -- (the ASan build uses the plain 5.4 host: only the module differs)
    local dir = package.cpath:match("%./(build%-[%dj][^/;]*)/%?%.so") or "build"
    local host = dir .. "/thread_host"
    setup(function()
      assert(os.execute("make -s " .. host .. " >/dev/null"))
    end)

    local function run_host(src)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(src)
      f:close()
      -- the host starts with fork as its default whatever the suite runs under
      local p = assert(io.popen(support.lua_env() .. " MPROC_START_METHOD=fork timeout -k 5 60 "
        .. host .. " " .. path .. " 2>&1"))
      local out = p:read("*a")
      local ok = p:close()
      os.remove(path)
      return out, ok
    end

    it("raises a clear error naming spawn and forkserver; spawn works", function()
      local out, ok = run_host [[
        local mp = require "mproc"
        local function try(f, ...) local ok, e = pcall(f, ...) print(ok, e) end
        try(function() mp.Process(function() end):start() end)
        try(mp.Pool, 2)
        try(mp.fork)
        mp.set_start_method("spawn")
        local q = mp.Queue()
        local p = mp.Process(function(x) q:put(x * 2) end, 21)
        p:start()
        print("spawned", q:get(10))
        p:join(10)
        print("exitcode", p.exitcode)
        local pool = mp.Pool(2)
        print("pool", table.concat(pool:map(function(x) return x + 1 end, {1, 2, 3}), ","))
        pool:close(); pool:join()
        local fp = mp.get_context("forkserver").Process(function() os.exit(5) end)
        fp:start(); fp:join(10)
        print("forkserver", fp.exitcode)
        for _, m in ipairs { mp.Manager(), mp.get_context("forkserver").Manager() } do
          local d = m:dict()
          d.x = 20
          local mp_ = mp.Process(function(dd) dd.y = dd.x + 1 end, d)
          mp_:start(); mp_:join(10)
          print("manager", d.y)
          m:shutdown()
        end
      ]]
      assert.is_true(ok, out)
      assert.matches("pool\t2,3,4", out)
      assert.matches("forkserver\t5", out)
      assert.matches("manager\t21\nmanager\t21", out)
      local n = 0
      for line in out:gmatch("false\t[^\n]*") do
        n = n + 1
        assert.matches("with the 'fork' start method: this process runs 2 threads", line, 1, true)
        assert.matches('mp.set_start_method("spawn")', line, 1, true)
        assert.matches('"forkserver"', line, 1, true)
      end
      assert.equal(3, n)
      assert.matches("spawned\t42\nexitcode\t0", out)
    end)

    it("forks when told that the threads hold nothing the child needs", function()
      local out, ok = run_host [[
        local mp = require "mproc"
        mp.set_start_method("fork", {allow_threads = true})
        local p = mp.Process(function() os.exit(7) end)
        p:start(); p:join(10)
        print("exitcode", p.exitcode)
      ]]
      assert.is_true(ok, out)
      assert.matches("exitcode\t7", out)
    end)
  end)
end)

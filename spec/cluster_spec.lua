-- mp.cluster.Pool and `mproc worker` against a real, private redis-server
-- (a Unix socket in a temporary directory, started and stopped here).  Two
-- `mproc worker` processes on this machine stand for two machines.
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"
local sp = mp.subprocess
local compat = require "mproc.compat"

local ROOT = os.getenv("PWD")
local MPROC = ROOT .. "/bin/mproc"
local CPATH = (package.cpath:gsub("%./", ROOT .. "/"))
local KEY = "spec-key"

local function have(prog)
  return support.exec_status(os.execute("command -v " .. prog .. " >/dev/null 2>&1")) == true
end
local have_redis = have("redis-server") and pcall(require, "mproc.redis")

local dir, url, sock, server
local workers = {}
local pools = {}   -- made by pool_for, closed after each test (<close> before 5.4)
local nq = 0

local function start_redis(extra)
  server = support.redis_server(sock, dir, extra)
end

local function stop_redis(sig)
  if not server then return end
  if sig == "kill" then server:kill() else server:terminate() end
  server:wait(10)
  server = nil
end

-- A raw connection for looking at the streams.
local function raw(argv)
  local redis = require "mproc.redis"
  local ok, c = redis.connect(sock, nil, 5)
  assert(ok, c)
  local ok2, v, msg = c:command(argv)
  c:close()
  assert(ok2, msg)
  return v
end

local function new_queue()
  nq = nq + 1
  return "q" .. nq
end

-- Starts `mproc worker`; its stderr goes to dir/<name>.log.
local function start_worker(queue, opts)
  opts = opts or {}
  local name = "w" .. (#workers + 1)
  local log = io.open(dir .. "/" .. name .. ".log", "w")
  -- the worker runs this VM: tasks cross as its bytecode
  local argv = { "env", "LUA_CPATH=" .. CPATH, "MPROC_AUTHKEY=" .. (opts.key or KEY),
                 "MPROC_LUA=" .. support.LUA, MPROC,
                 "worker", "--url", url, "--queue", queue, "--processes",
                 tostring(opts.processes or 2), "-v" }
  local p = sp.Popen(argv, { stdout = "devnull", stderr = log })
  log:close()
  p.log = dir .. "/" .. name .. ".log"
  workers[#workers + 1] = p
  -- serving once its log says so
  assert(support.wait_until(function()
    return (support.read_file(p.log) or ""):find("serving queue", 1, true) ~= nil
  end, 10), "the worker did not start: " .. (support.read_file(p.log) or ""))
  return p
end

local function stop_workers()
  for _, p in ipairs(workers) do
    if p:poll() == nil then
      p:send_signal(core.SIGCONT or 18)
      p:terminate()
      if p:wait(15) == nil then p:kill(); p:wait(5) end
    end
  end
  workers = {}
end

-- The shared-memory segments of a worker that was SIGKILLed (nobody else
-- unlinks them).
local function forget_shm(pid)
  support.wait_until(function() return false end, 1.2)  -- its pool's workers end
  for _, part in ipairs { "mproc-q" .. pid .. "-", "mproc-" .. pid .. "-" } do
    for _, name in ipairs(support.shm_names(part)) do os.remove("/dev/shm/" .. name) end
  end
end

local function pool_for(queue, opts)
  local o = { url = url, queue = queue, authkey = KEY }
  for k, v in pairs(opts or {}) do o[k] = v end
  local pool = mp.cluster.Pool(o)
  pools[#pools + 1] = pool
  return pool
end

-- What `local pool <close>` does when the test's block is left: close,
-- join, terminate (terminate at once when the join does not end).
local function close_pools()
  for _, pool in ipairs(pools) do
    pcall(pool.close, pool)
    local ok, joined = pcall(pool.join, pool, 30)
    if not (ok and joined) then pcall(pool.terminate, pool) end
    pool:terminate()
  end
  pools = {}
end

local function lines(path)
  local n = 0
  for _ in (support.read_file(path) or ""):gmatch("[^\n]+") do n = n + 1 end
  return n
end

describe("mp.cluster", function()
  if not have_redis then
    it("needs redis-server and mproc.redis (hiredis)", function()
      pending("redis-server or mproc.redis (libhiredis-dev) is not installed")
    end)
    return
  end

  setup(function()
    local p = io.popen("mktemp -d /tmp/mproc-cluster.XXXXXX")
    dir = p:read("*l")
    p:close()
    sock = dir .. "/redis.sock"
    url = "unix:" .. sock
    start_redis()
  end)

  teardown(function()
    close_pools()
    stop_workers()
    stop_redis()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  after_each(function()
    close_pools()
    stop_workers()
  end)

  describe("Pool()", function()
    it("checks its options", function()
      assert.matches("unknown option 'lese'; did you mean 'lease'",
        support.errmsg(mp.cluster.Pool, { url = url, lese = 1, authkey = "k" }), 1, true)
      assert.matches("'url' must be a string",
        support.errmsg(mp.cluster.Pool, { authkey = "k" }), 1, true)
      assert.matches("bad url 'http://x'",
        support.errmsg(mp.cluster.Pool, { url = "http://x", authkey = "k" }), 1, true)
      assert.matches("'max_deliveries' must be >= 1",
        support.errmsg(mp.cluster.Pool, { url = url, authkey = "k", max_deliveries = 0 }), 1,
        true)
    end)

    it("a worker names both VMs for a function made by another VM (issue 18)", function()
      local ok, fnb = core.codec_dumps(function() return 1 end, "fn", true)
      assert.is_true(ok)
      -- the embedded bytecode's header, made another VM's
      local other = mp.cluster.THIS_VM == "Lua 5.4" and "Lua 5.3" or "Lua 5.4"
      local header = other == "Lua 5.4" and "\27LuaT" or "\27LuaS"
      local n
      fnb, n = fnb:gsub(compat.luajit and "\27LJ" or "\27Lua.", header, 1)
      assert.equal(1, n)
      local _, args = core.codec_dumps(compat.pack(), "args", true)
      local e = support.errmsg(mp.cluster.run_task, compat.spack(">s4", fnb) .. args)
      assert.is_true(mp.is_error(e, "SerializeError"), tostring(e))
      assert.equal("the task's function was made by " .. other .. " and this worker runs "
        .. mp.cluster.THIS_VM .. " (start the workers with the callers' VM: MPROC_LUA)",
        e.message)
    end)

    it("raises OSError naming the address when Redis is unreachable", function()
      local ok, e = pcall(mp.cluster.Pool, { url = "unix:" .. dir .. "/nothere.sock",
                                             authkey = "k" })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "OSError"))
      assert.matches(dir .. "/nothere.sock", e.message, 1, true)
    end)
  end)

  describe("with workers", function()
    it("runs apply, submit, apply_async, map, starmap and imap with local-pool results",
      function()
      local q = new_queue()
      start_worker(q)
      local pool = pool_for(q)
      assert.same({ 3, "x" }, { pool:apply(function(a, b) return a + b, "x" end, 1, 2) })
      assert.equal(7, pool:submit(function(x) return x + 1 end, 6):get(20))
      local got
      local r = pool:apply_async(function(x) return x * 2 end, { 21 },
        { callback = function(v) got = v end })
      assert.equal(42, r:get(20))
      assert.equal(42, got)
      assert.is_true(r:successful())
      local sq = pool:map(function(x) return x * x end, { 1, 2, 3, 4, 5, 6, 7 }, 2)
      assert.same({ 1, 4, 9, 16, 25, 36, 49 }, { compat.unpack(sq, 1, 7) })
      local st = pool:starmap(function(a, b) return a .. b end, { { "a", 1 }, { "b", 2 } })
      assert.same({ "a1", "b2" }, { st[1], st[2] })
      local ordered = {}
      for i, v in pool:imap(function(x) return -x end, { 1, 2, 3, 4, 5 }) do ordered[i] = v end
      assert.same({ -1, -2, -3, -4, -5 }, ordered)
      local sum = 0
      for _, v in pool:imap_unordered(function(x) return x end, { 1, 2, 3, 4 }) do
        sum = sum + v
      end
      assert.equal(10, sum)
      -- mp.wait / as_completed / gather / mp.run take its results
      local rs = {}
      for i = 1, 4 do rs[i] = pool:submit(function(x) return x end, i) end
      local done = mp.wait(rs, { timeout = 20 })
      assert.equal(4, #done)
      assert.same({ n = 2, 1, 2 }, mp.gather(rs[1], rs[2]))
      local n = 0
      for _ in mp.as_completed(rs, 20) do n = n + 1 end
      assert.equal(4, n)
      local out = mp.run(function()
        local a = pool:submit(function() return "in-run" end)
        return a:get(20)
      end)
      assert.equal("in-run", out)
      pool:close()
      assert.is_true(pool:join(20))
    end)

    it("gives TaskError with value and traceback, and Timeout for a task's timeout",
      function()
      local q = new_queue()
      start_worker(q)
      local pool = pool_for(q)
      local ok, e = pcall(pool.apply, pool, function() error({ code = 7 }) end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "TaskError"))
      assert.equal(7, e.value.code)
      assert.matches("traceback", e.traceback)
      local r = pool:apply_async(function() require("mproc").sleep(5) end, {}, { timeout = 0.3 })
      ok, e = pcall(r.get, r, 20)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "Timeout"), tostring(e))
      assert.equal("task", e.where)
      -- a map fails with the first failing item's error
      ok, e = pcall(pool.map, pool, function(x) if x == 3 then error("three") end return x end,
        { 1, 2, 3, 4 })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "TaskError"))
      assert.matches("three", e.message)
      -- imap with errors = "return" goes on
      local seen = {}
      for i, v, err in pool:imap(function(x) if x == 2 then error("two") end return x end,
        { 1, 2, 3 }, { errors = "return" }) do
        seen[i] = err and err.kind or v
      end
      assert.same({ 1, "TaskError", 3 }, seen)
    end)

    it("refuses mproc objects with SerializeError naming the path", function()
      local q = new_queue()
      local pool = pool_for(q)
      local lock = mp.Lock()
      local ok, e = pcall(pool.apply_async, pool, function() end, { 1, { x = lock } })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.matches("args[2].x", e.message, 1, true)
      assert.matches("mproc.Lock", e.message, 1, true)
      ok, e = pcall(pool.map, pool, function() end, { 1, 2, mp.Queue() })
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.matches("items[3]", e.message, 1, true)
      ok, e = pcall(pool.submit, pool, function() return lock end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "SerializeError"))
      assert.matches("fn", e.message, 1, true)
    end)

    it("needs no local worker: tasks wait in the stream until a worker comes", function()
      local q = new_queue()
      local pool = pool_for(q)
      local r = pool:submit(function() return "late" end)
      assert.is_false(r:wait(0.3))
      assert.is_false(r:ready())
      start_worker(q)
      assert.equal("late", r:get(20))
    end)

    it("has a fileno() a foreign event loop can watch, as a local pool's", function()
      local q = new_queue()
      local pool = pool_for(q)
      start_worker(q)
      local r = pool:apply_async(function(x) return x + 1 end, { 41 })
      local fd = pool:fileno()
      assert.is_true(compat.math_type(fd) == "integer" and fd >= 0)
      -- the loop: wait on the descriptor, then let mproc collect
      local deadline = core.now() + 20
      while not r:ready() and core.now() < deadline do
        if core.poll_fd(pool:fileno(), "r", 1) then mp.poll() end
      end
      assert.is_true(r:ready())
      assert.equal(42, r:get(0))
    end)

    it("runs a pool with local workers (processes = n)", function()
      local q = new_queue()
      local pool = pool_for(q, { processes = 2 })
      local out = pool:map(function(x) return 2 * x end, { 1, 2, 3 })
      assert.same({ 2, 4, 6 }, { compat.unpack(out, 1, out.n) })
    end)
  end)

  describe("faults", function()
    it("a worker SIGKILLed mid-task: another worker runs it, the caller gets one result",
      function()
      local q = new_queue()
      local a = start_worker(q, { processes = 1 })
      local pool = pool_for(q, { lease = 1 })
      local runs = dir .. "/runs-kill"
      local calls = 0
      local r = pool:apply_async(function(path)
        local f = io.open(path, "a"); f:write("run\n"); f:close()
        require("mproc").sleep(1.5)
        return "done"
      end, { runs }, { callback = function() calls = calls + 1 end })
      assert.is_true(support.wait_until(function() return lines(runs) == 1 end, 10))
      start_worker(q, { processes = 1 })
      a:kill()
      a:wait(5)
      forget_shm(a.pid)
      assert.equal("done", r:get(30))
      assert.equal(2, lines(runs))
      mp.sleep(0.3)
      mp.poll()
      assert.equal(1, calls)
      pool:close()
      assert.is_true(pool:join(10))
    end)

    it("mproc worker ends on SIGTERM (exit 0) after its running task stored its result",
      function()
      local q = new_queue()
      local w = start_worker(q, { processes = 1 })
      local pool = pool_for(q)
      local mark = dir .. "/runs-term"
      local r = pool:apply_async(function(path)
        local f = io.open(path, "a"); f:write("run\n"); f:close()
        require("mproc").sleep(0.5)
        return "finished"
      end, { mark })
      assert.is_true(support.wait_until(function() return lines(mark) == 1 end, 10))
      w:terminate()
      assert.equal(0, w:wait(15))
      assert.equal("finished", r:get(10))
      assert.matches("stopped", support.read_file(w.log), 1, true)
    end)

    it("a stalled worker (SIGSTOP) past its lease: the task runs elsewhere, "
      .. "the late result is dropped", function()
      local q = new_queue()
      local a = start_worker(q, { processes = 1 })
      local pool = pool_for(q, { lease = 1 })
      local runs = dir .. "/runs-stop"
      local calls = 0
      local r = pool:apply_async(function(path)
        local f = io.open(path, "a"); f:write("run\n"); f:close()
        require("mproc").sleep(1)
        return "v"
      end, { runs }, { callback = function() calls = calls + 1 end })
      assert.is_true(support.wait_until(function() return lines(runs) == 1 end, 10))
      a:send_signal(19)  -- SIGSTOP
      start_worker(q, { processes = 1 })
      assert.equal("v", r:get(30))
      a:send_signal(18)  -- SIGCONT: its late result comes and is dropped
      assert.is_true(support.wait_until(function()
        return (support.read_file(a.log) or ""):find("ok in", 1, true) ~= nil
      end, 10))
      mp.sleep(0.3)
      mp.poll()
      assert.equal(1, calls)
      assert.equal(2, lines(runs))
      assert.is_true(r:successful())
    end)

    it("a task that kills every worker it reaches fails with WorkerLost after "
      .. "max_deliveries; the others go on", function()
      local q = new_queue()
      start_worker(q)
      local pool = pool_for(q, { lease = 1, max_deliveries = 2 })
      local runs = dir .. "/runs-poison"
      local bad = pool:apply_async(function(path)
        local f = io.open(path, "a"); f:write("run\n"); f:close()
        os.exit(3)
      end, { runs })
      local good = {}
      for i = 1, 10 do good[i] = pool:submit(function(x) return x end, i) end
      for i = 1, 10 do assert.equal(i, good[i]:get(20)) end
      local ok, e = pcall(bad.get, bad, 30)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "WorkerLost"), tostring(e))
      assert.matches("max_deliveries = 2", e.message, 1, true)
      assert.equal(2, lines(runs))
      assert.equal(1, raw { "XLEN", q .. ":dead" })
    end)

    -- A worker that has seen short tasks runs entries in batches (one
    -- local pool task each); its log says "started (k)" for a batch of k.
    local function warm_up(pool)
      local items = {}
      for i = 1, 40 do items[i] = i end
      pool:map(function(x) return x end, items, 1)
    end
    local function largest_batch(log)
      local k = 0
      for n in (support.read_file(log) or ""):gmatch("started %((%d+)%)") do
        k = math.max(k, tonumber(n))
      end
      return k
    end

    it("a worker SIGKILLed mid-batch: every task of the batch gets exactly one result",
      function()
      local q = new_queue()
      local a = start_worker(q, { processes = 1 })
      local pool = pool_for(q, { lease = 1 })
      warm_up(pool)
      local runs = dir .. "/runs-batch"
      local calls, rs = {}, {}
      local function task(path, i)
        local f = io.open(path, "a"); f:write(i, "\n"); f:close()
        require("mproc").sleep(0.3)
        return i * 10
      end
      for i = 1, 8 do
        rs[i] = pool:apply_async(task, { runs, i },
          { callback = function() calls[i] = (calls[i] or 0) + 1 end })
      end
      assert.is_true(support.wait_until(function() return lines(runs) >= 3 end, 10))
      assert.is_true(largest_batch(a.log) >= 2, support.read_file(a.log))
      start_worker(q, { processes = 1 })
      a:kill()
      a:wait(5)
      forget_shm(a.pid)
      for i = 1, 8 do assert.equal(i * 10, rs[i]:get(30)) end
      mp.sleep(0.3)
      mp.poll()
      for i = 1, 8 do assert.equal(1, calls[i]) end
      assert.is_true(lines(runs) > 8)  -- the batch's unfinished tasks ran again
      pool:close()
      assert.is_true(pool:join(10))
    end)

    it("a task that kills its local process inside a batch: the others of the batch "
      .. "get their results, it gets WorkerLost", function()
      local q = new_queue()
      local a = start_worker(q, { processes = 1 })
      local pool = pool_for(q, { lease = 1, max_deliveries = 2 })
      warm_up(pool)
      local first = pool:submit(function() require("mproc").sleep(0.3) return 0 end)
      local rs = {}
      for i = 1, 9 do
        rs[i] = pool:submit(function(x)
          if x == 5 then os.exit(3) end
          return x
        end, i)
      end
      assert.equal(0, first:get(20))
      for i = 1, 9 do
        if i ~= 5 then assert.equal(i, rs[i]:get(30)) end
      end
      local ok, e = pcall(rs[5].get, rs[5], 30)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "WorkerLost"), tostring(e))
      assert.is_true(largest_batch(a.log) >= 2, support.read_file(a.log))
      assert.matches("handed back", support.read_file(a.log), 1, true)
    end)

    it("refuses entries with a wrong authkey, tampered, unsigned or garbage; "
      .. "nothing crashes", function()
      local q = new_queue()
      -- a worker with another authkey: the caller hears AuthenticationError
      local w = start_worker(q, { key = "other" })
      local pool = pool_for(q)
      local ok, e = pcall(pool.apply, pool, function() return 1 end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "AuthenticationError"), tostring(e))
      assert.matches("bad signature", e.message, 1, true)
      assert.equal(1, raw { "XLEN", q .. ":dead" })
      w:terminate()
      w:wait(15)
      start_worker(q)
      -- tampered: a signed entry whose payload changed
      local h = "30000 3 -"
      local fnb = compat.spack(">s4", mp.dumps(function() return "pwned" end))
      local d = fnb .. mp.dumps({ n = 0 })
      local cl = require "mproc.cluster"
      local sig = cl.task_sig(KEY, q, "1", q .. ":r:x", h, d)
      raw { "XADD", q, "*", "t", "1", "c", q .. ":r:x", "h", h, "d", d .. "x", "s", sig }
      raw { "XADD", q, "*", "t", "2", "c", q .. ":r:x", "h", h, "d", d }          -- unsigned
      raw { "XADD", q, "*", "garbage", "\0\1\2\255" }                             -- garbage
      raw { "XADD", q, "*", "t", "3", "c", q .. ":r:x", "h", "x", "d", "\255", "s", "zz" }
      assert.is_true(support.wait_until(function() return raw { "XLEN", q .. ":dead" } == 5 end,
        10))
      -- the worker lives on and serves
      assert.equal(5, pool:apply(function() return 5 end))
      local reasons = {}
      for _, ent in ipairs(raw { "XRANGE", q .. ":dead", "-", "+" }) do
        reasons[#reasons + 1] = ent[2][2]
      end
      assert.same({ "bad signature (another authkey?)", "bad signature (another authkey?)",
                    "unsigned entry", "unsigned entry", "bad signature (another authkey?)" },
        reasons)
    end)

    it("Redis restarted mid-map: OSError naming the address while down, "
      .. "then the map completes", function()
      stop_redis()
      start_redis { "--appendonly", "yes", "--appendfsync", "always" }
      local q = new_queue()
      start_worker(q)
      local pool = pool_for(q, { lease = 2 })
      local r = pool:map_async(function(x) require("mproc").sleep(0.05) return x end,
        (function() local t = {} for i = 1, 40 do t[i] = i end return t end)(), { chunksize = 1 })
      local singles = {}
      for i = 1, 20 do
        singles[i] = pool:apply_async(function(x) require("mproc").sleep(0.05) return x end, { i })
      end
      mp.sleep(0.3)
      stop_redis()
      local ok, e = pcall(r.get, r, 5)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "OSError"), tostring(e))
      assert.matches(sock, e.message, 1, true)
      ok, e = pcall(pool.apply_async, pool, function() end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(e, "OSError"), tostring(e))
      assert.matches(sock, e.message, 1, true)
      start_redis { "--appendonly", "yes", "--appendfsync", "always" }
      local out = r:get(60)
      for i = 1, 40 do assert.equal(i, out[i]) end
      for i = 1, 20 do assert.equal(i, singles[i]:get(60)) end
      assert.equal("after", pool:apply_async(function() return "after" end):get(30))
      stop_workers()
      stop_redis()
      start_redis()
    end)
  end)
end)

-- The pool works while the parent does something else (API.md "Pool":
-- workers never wait for the parent).  Each spec makes the parent busy
-- outside mproc -- Lua code, a foreign blocking call, SIGSTOP -- and then
-- looks, without any other mproc call first.
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"
local unpack = require("mproc.compat").unpack

local os, error, tostring = os, error, tostring
local csleep, getpid, kill = core.sleep, core.getpid, core.kill
local errmsg = support.errmsg

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

-- The parent's own work: pure Lua, no mproc call.
local function busy(seconds)
  local t0 = os.clock()
  local x = 0
  while os.clock() - t0 < seconds do x = x + 1 end
  return x
end

local function nap(x) csleep(0.01) return x end

local function count_ready(rs)
  local n = 0
  for i = 1, #rs do if rs[i]:ready() then n = n + 1 end end
  return n
end

describe("mproc.Pool while the parent is busy", function()
  it("runs apply_async tasks while the parent runs Lua code", function()
    local pool = Pool(2)
    local rs = {}
    for i = 1, 100 do rs[i] = pool:apply_async(nap, { i }) end
    busy(1.2)
    -- 100 x 10 ms on two workers: all done, and ready() knows it at once
    assert.is_true(count_ready(rs) >= 95)
    for i = 1, 100 do assert.equal(i, rs[i]:get(10)) end
  end)

  it("runs submit tasks while the parent sleeps in a foreign call", function()
    local pool = Pool(2)
    local rs = {}
    for i = 1, 40 do rs[i] = pool:submit(nap, i) end
    os.execute("sleep 1")
    assert.equal(40, count_ready(rs))
    local done = mp.wait(rs, { timeout = 0 })
    assert.equal(40, #done)
  end)

  it("runs tasks while the parent is stopped (SIGSTOP)", function()
    local pool = Pool(2)
    local rs = {}
    for i = 1, 40 do rs[i] = pool:apply_async(nap, { i }) end
    -- the shell stops its parent (this process), then lets it go on
    os.execute("sh -c 'kill -STOP $PPID; sleep 1; kill -CONT $PPID'")
    assert.equal(40, count_ready(rs))
  end)

  it("runs map_async and starmap_async while the parent is busy", function()
    local pool = Pool(2)
    local m = pool:map_async(nap, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, { chunksize = 1 })
    local s = pool:starmap_async(function(a, b) csleep(0.01) return a * b end,
      { { 1, 2 }, { 3, 4 }, { 5, 6 } })
    os.execute("sleep 0.8")
    assert.is_true(m:ready())
    assert.is_true(s:ready())
    assert.is_true(m:successful())
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, { unpack(m:get(), 1, 10) })
    assert.same({ 2, 12, 30 }, { unpack(s:get(), 1, 3) })
  end)

  it("runs imap chunks while the parent is busy, reading ahead only a few", function()
    local pool = Pool(2)
    local pulled = 0
    local function items()
      pulled = pulled + 1
      if pulled <= 1000 then return pulled end
    end
    local it = pool:imap(nap, items)
    assert.same({ 1, 1 }, { it() })
    -- a few chunks per worker, never the whole iterator
    assert.is_true(pulled <= 2 * 8 + 2, "pulled " .. pulled)
    local before = pulled
    os.execute("sleep 0.5")
    -- what was read ahead ran meanwhile: the next ones are there at once
    for k = 2, before - 1 do
      local t0 = core.now()
      assert.same({ k, k }, { it() })
      assert.is_true(core.now() - t0 < 0.05 or k > before - 2)
    end
  end)

  it("runs callbacks only at the next mproc call, in completion order", function()
    local pool = Pool(2)
    local order = {}
    local function cb(v) order[#order + 1] = v end
    pool:apply_async(function() csleep(0.4) return "slow" end, {}, { callback = cb })
    pool:apply_async(function() csleep(0.05) return "fast" end, {}, { callback = cb })
    pool:apply_async(function() csleep(0.15) return "mid" end, {}, { callback = cb })
    os.execute("sleep 0.8")
    assert.same({}, order)  -- nothing runs behind the parent's back
    mp.poll()
    assert.same({ "fast", "mid", "slow" }, order)
  end)

  it("tells successful() without waiting", function()
    local pool = Pool(1)
    local ok = pool:apply_async(nap, { 1 })
    local bad = pool:apply_async(function() error("boom") end)
    os.execute("sleep 0.5")
    assert.is_true(ok:successful())
    assert.is_false(bad:successful())
  end)

  it("fails only the task of a worker killed while the parent is busy", function()
    local pool = Pool(2)
    local rs = {}
    for i = 1, 20 do
      if i == 5 then
        rs[i] = pool:apply_async(function() kill(getpid(), core.SIGKILL) end)
      else
        rs[i] = pool:apply_async(nap, { i })
      end
    end
    busy(1)
    local lost = 0
    for i = 1, 20 do
      if i == 5 then
        local err = errmsg(rs[i].get, rs[i], 10)
        assert.is_true(mp.is_error(err, "WorkerLost"))
        assert.equal(-9, err.exitcode)
        lost = lost + 1
      else
        assert.equal(i, rs[i]:get(10))
      end
    end
    assert.equal(1, lost)
    -- the pool got its worker back
    local pids = {}
    for _ = 1, 40 do pids[pool:apply(function() csleep(0.005) return getpid() end)] = true end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equal(2, n)
  end)

  it("ends a task past its timeout on time while the parent is busy", function()
    local pool = Pool(2)
    local v = mp.Value("int64", 0)
    local r = pool:apply_async(function(val)
      val.value = getpid()
      while true do csleep(0.01) end
    end, { v }, { timeout = 0.3 })
    local other = pool:apply_async(nap, { 7 })
    os.execute("sleep 1")
    local pid = v.value
    assert.is_true(pid > 0)
    assert.is_false(support.alive(pid))  -- gone (a zombie until reaped)
    assert.is_true(r:ready())
    local err = errmsg(r.get, r)
    assert.is_true(mp.is_error(err, "Timeout"))
    assert.equal("task", err.where)
    assert.equal(7, other:get(5))
    -- a get() that runs out is a Timeout too, but not the task's
    local slow = pool:apply_async(function() csleep(0.5) end)
    local e2 = errmsg(slow.get, slow, 0.01)
    assert.is_true(mp.is_error(e2, "Timeout"))
    assert.equal("wait", e2.where)
  end)

  it("lets cancel() win over a task not taken yet", function()
    local pool = Pool(1)
    local ran = mp.Value("int64", 0)
    local first = pool:apply_async(function() csleep(0.3) return 1 end)
    local later = pool:apply_async(function(v) v:add(1) end, { ran })
    assert.is_true(later:cancel())
    assert.is_true(later:cancelled())
    assert.equal(1, first:get(5))
    assert.equal(5, pool:apply(function(x) return x end, 5))
    assert.equal(0, ran.value)
    assert.is_true(mp.is_error(errmsg(later.get, later), "Cancelled"))
    -- a task already taken cannot be cancelled
    local running = pool:apply_async(function() csleep(0.3) return 2 end)
    csleep(0.1)
    assert.is_false(running:cancel())
    assert.equal(2, running:get(5))
  end)

  it("still replaces workers after maxtasksperchild tasks", function()
    local pool = Pool { processes = 1, maxtasksperchild = 2 }
    local pids = {}
    for _ = 1, 6 do pids[#pids + 1] = pool:apply(getpid) end
    local distinct = {}
    for _, p in ipairs(pids) do distinct[p] = true end
    local n = 0
    for _ in pairs(distinct) do n = n + 1 end
    assert.equal(3, n)
  end)

  it("makes fileno() readable when results wait, without any other call", function()
    local pool = Pool(1)
    local got = {}
    for i = 1, 10 do
      pool:apply_async(nap, { i }, { callback = function(v) got[#got + 1] = v end })
    end
    os.execute("sleep 0.5")
    assert.is_true(core.poll_fd(pool:fileno(), "r", 0))
    mp.poll()
    assert.equal(10, #got)
    assert.is_false(core.poll_fd(pool:fileno(), "r", 0))
  end)

  it("serves a game loop that calls mp.poll() once per tick", function()
    local pool = Pool(2)
    local done = 0
    local function cb() done = done + 1 end
    local function job() csleep(0.001) end
    for _ = 1, 300 do pool:apply_async(job, {}, { callback = cb }) end
    for _ = 1, 30 do         -- 30 ticks of about 16 ms: 0.5 s for 0.15 s of work
      mp.poll()
      busy(0.016)
    end
    mp.poll()
    -- the workers did not wait for the ticks
    assert.is_true(done >= 280, ("%d of 300"):format(done))
  end)
end)

describe("mproc.Pool under random worker kills", function()
  it("yields every item exactly once: its value, or WorkerLost for the one killed", function()
    local pool = Pool(3)
    local N = 3000
    local seen, lost, kills = {}, 0, 0
    local rnd = math.random
    local items = {}
    for i = 1, N do items[i] = i end
    for k, v, err in pool:imap_unordered(function(x)
      local t0 = os.clock()
      while os.clock() - t0 < 0.0002 do end
      return x * 2
    end, items, { errors = "return" }) do
      assert.is_nil(seen[k], "item " .. k .. " twice")
      if err then
        assert.equal("WorkerLost", err.kind)
        seen[k] = true
        lost = lost + 1
      else
        assert.equal(k * 2, v)
        seen[k] = true
      end
      if k % 97 == 0 then
        local kids = mp.active_children()
        local w = kids[rnd(#kids)]
        if w and kill(w.pid, core.SIGKILL) then kills = kills + 1 end
      end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(N, n)
    assert.is_true(lost <= kills, ("%d lost, %d kills"):format(lost, kills))
    assert.is_true(kills > 5)
    assert.equal(3, #mp.active_children())
  end)
end)

describe("mproc.Pool: the parent's end", function()
  local function left_behind(pid)
    return support.shm_names("mproc-q" .. pid .. "-"), support.shm_of(pid)
  end

  it("leaves no worker and no segment when the parent is SIGKILLed mid-map", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local core = require "mproc.core"
      local pool = mp.Pool(2)
      local r = pool:map_async(function(x) core.sleep(0.05) return x end,
        { 1, 2, 3, 4, 5, 6, 7, 8 }, { chunksize = 1 })
      local pids = pool:map(core.getpid, { 1, 2, 3, 4 }, 1)
      io.stdout:write(core.getpid(), " ", table.concat(pids, " "), "\n")
      io.stdout:flush()
      core.kill(core.getpid(), core.SIGKILL)
    ]])
    local nums = {}
    for n in out:match("[^\n]*"):gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
    assert.is_true(#nums >= 2, out)
    local parent = nums[1]
    -- (under forkserver the death passes through the server: two hops)
    assert.is_true(support.wait_until(function()
      for i = 2, #nums do if support.alive(nums[i]) then return false end end
      return true
    end, 6))
    assert.is_true(support.wait_until(function()
      local q, s = left_behind(parent)
      return #q == 0 and #s == 0
    end, 3))
  end)

  it("leaves nothing when the parent gets SIGTERM while waiting", function()
    local out = support.run_script([[
      local mp = require "mproc"
      local core = require "mproc.core"
      local pool = mp.Pool(2)
      local pids = pool:map(core.getpid, { 1, 2, 3, 4 }, 1)
      io.stdout:write(core.getpid(), " ", table.concat(pids, " "), "\n")
      io.stdout:flush()
      pool:apply_async(core.kill, { core.getpid(), core.SIGTERM })
      pool:apply(function() core.sleep(5) end)
    ]])
    -- the pids are on the first line (a digit on stderr is not a pid)
    local nums = {}
    for n in out:match("[^\n]*"):gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
    assert.is_true(#nums >= 2, out)
    assert.is_true(support.wait_until(function()
      for i = 2, #nums do if support.alive(nums[i]) then return false end end
      local q = left_behind(nums[1])
      return #q == 0
    end, 3))
    -- a worker still starting when the pool went has nothing to report
    assert.is_nil(out:find("Pool worker", 1, true), out)
  end)
end)

describe("mproc.Pool options and bulk calls", function()
  it("rejects unknown options and numbers given as strings", function()
    local pool = Pool(1)
    assert.equal("bad argument #3 to 'apply_async' (unknown option 'callbak'; "
      .. "did you mean 'callback'?)",
      errmsg(pool.apply_async, pool, nap, { 1 }, { callbak = print }))
    assert.equal("bad argument #3 to 'map_async' (unknown option 'chunk_size'; "
      .. "did you mean 'chunksize'?)",
      errmsg(pool.map_async, pool, nap, { 1 }, { chunk_size = 2 }))
    assert.equal("bad argument #1 to 'Pool' ('maxtasksperchild' must be an integer, got string)",
      errmsg(mp.Pool, { maxtasksperchild = "12" }))
    assert.equal("bad argument #1 to 'Pool' ('processes' must be an integer, got a fraction)",
      errmsg(mp.Pool, 1.5))
    assert.equal("bad argument #3 to 'imap' (unknown option 'error'; did you mean 'errors'?)",
      errmsg(pool.imap, pool, nap, { 1 }, { error = "return" }))
  end)

  it("yields the items read before an input iterator raised, then its error", function()
    local pool = Pool(2)
    local i = 0
    local function items()
      i = i + 1
      if i == 4 then error("bad input 4") end
      return i
    end
    local got = {}
    local ok, err = pcall(function()
      for k, v in pool:imap(function(x) return x * 10 end, items) do got[k] = v end
    end)
    assert.is_false(ok)
    assert.matches("bad input 4", tostring(err))
    assert.same({ 10, 20, 30 }, got)
  end)

  it("returns per-item errors as values with errors = \"return\"", function()
    local pool = Pool(2)
    local seen, errs = {}, {}
    for k, v, err in pool:imap_unordered(function(x)
      if x == 3 then error("three") end
      if x == 5 then core.kill(getpid(), core.SIGKILL) end
      return x
    end, { 1, 2, 3, 4, 5, 6 }, { errors = "return" }) do
      if err then errs[k] = err.kind else seen[k] = v end
    end
    assert.same({ [1] = 1, [2] = 2, [4] = 4, [6] = 6 }, seen)
    assert.same({ [3] = "TaskError", [5] = "WorkerLost" }, errs)
  end)

  it("names its workers like Python and lists them as active children", function()
    local pool = Pool(2)
    local name = pool:apply(function() return mp.current_process().name end)
    -- Python's names per start method (the suite also runs under spawn)
    local prefix = ({ spawn = "Spawn", forkserver = "ForkServer" })[mp.get_start_method()]
      or "Fork"
    assert.matches("^" .. prefix .. "PoolWorker%-%d+$", name)
    local kids = mp.active_children()
    assert.equal(2, #kids)
    for _, w in ipairs(kids) do
      assert.matches("^" .. prefix .. "PoolWorker%-%d+$", w.name)
      assert.is_true(w.daemon)
      assert.is_true(w:is_alive())
    end
    local names = {}
    local function my_name() csleep(0.005) return mp.current_process().name end
    for _ = 1, 20 do names[pool:apply(my_name)] = true end
    for n in pairs(names) do assert.is_true(n == kids[1].name or n == kids[2].name) end
    pool:close()
    pool:join()
    assert.equal(0, #mp.active_children())
  end)

  it("refuses mp.register while a pool runs, saying why", function()
    local pool = Pool(1)
    local err = errmsg(mp.register, "spec.late", {})
    assert.matches("after a Pool started", err)
    pool:terminate()
    assert.is_table(mp.register("spec.late", {}))
  end)
end)

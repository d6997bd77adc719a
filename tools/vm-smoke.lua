-- tools/vm-smoke.lua: mproc.core alone on the VM that runs it (Lua 5.1,
-- LuaJIT, 5.3, 5.4; issue 18), without the Lua library: its own tiny slow
-- paths, which yield, check that a C method hands over to a Lua slow path
-- that may yield on every VM (lua_callk on 5.3/5.4, core.HANDOVER and
-- mproc.handover's wrapper on 5.1/LuaJIT).  `make smoke-vms`;
-- one VM: LUA_CPATH="./build-jit/?.so" LUA_PATH="./lua/?.lua" luajit tools/vm-smoke.lua
local core = require "mproc.core"
local class = require "mproc.handover"

local unpack = rawget(table, "unpack") or rawget(_G, "unpack")
local jit = rawget(_G, "jit")
local failed, passed = 0, 0

local function test(name, fn)
  local ok, err = pcall(fn)
  if ok then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL " .. name .. ": " .. tostring(err))
  end
end

local function eq(a, b, what)
  if a ~= b then
    error(("%s: expected %s, got %s"):format(what or "value", tostring(b), tostring(a)), 2)
  end
end

local function check(ok, ...)
  if ok == false then error(select(2, ...), 2) end
  return ...
end

local function raises(fn, pattern)
  local ok, e = pcall(fn)
  if ok then error("no error", 2) end
  if type(e) == "table" then e = e.kind .. ": " .. e.msg end
  if not tostring(e):find(pattern) then
    error(("error %q does not match %q"):format(tostring(e), pattern), 2)
  end
end

-- the tiny slow paths: each slice a yield inside a coroutine
local function pause()
  if coroutine.running() and select(2, coroutine.running()) ~= true then
    coroutine.yield("waiting")
  else
    core.sleep(0.001)
  end
end

local function fail(_, kind, msg)
  error({ kind = kind, msg = msg }, 0)
end

for _, tname in ipairs { "mproc.Lock", "mproc.RLock", "mproc.Semaphore", "mproc.Event" } do
  local m = class(tname)
  m._fail = fail
  m._block = function(obj, step, timeout)
    local deadline = timeout and core.now() + timeout
    while true do
      local r = { step(obj, 0.001) }
      if r[1] == false then fail(obj, r[2], r[3]) end
      if r[1] ~= nil then return unpack(r) end
      if deadline and core.now() >= deadline then return false end
      pause()
    end
  end
  m._guard_slow = function(obj, timeout)
    if not obj:acquire(timeout) then fail(obj, "Timeout", "guard") end
    return obj:_guard()
  end
end

for _, tname in ipairs { "mproc.Queue", "mproc.JoinableQueue", "mproc.SimpleQueue" } do
  local m = class(tname)
  m._fail = fail
  m._slow_get = function(q, _, max)
    while true do
      local ok, v, msg = q:_try_get(max)
      if ok then return v end
      if v then fail(q, v, msg) end
      pause()
    end
  end
  m._slow_put = function(q, frames, _, pushed)
    local pos, n, done = 1
    while true do
      pos, n, done = check(q:_put_frames(frames, pos))
      pushed = pushed + n
      if done then return end
      pause()
    end
  end
  m._slow_join = function(q)
    while q:_unfinished() > 0 do pause() end
    return true
  end
end

-- runs fn in a coroutine up to its first yield: must be "waiting"
local function suspended(fn)
  local co = coroutine.create(fn)
  local ok, what = coroutine.resume(co)
  assert(ok, what)
  eq(what, "waiting", "first yield")
  return function()
    local res = { coroutine.resume(co) }
    assert(res[1], res[2])
    eq(coroutine.status(co), "dead", "coroutine")
    return unpack(res, 2)
  end
end

test("lua_version", function()
  local want = jit and "LuaJIT" or _VERSION:match("%d+%.%d+")
  eq(core.lua_version, want, "core.lua_version")
  local old = _VERSION == "Lua 5.1"
  eq(type(core.HANDOVER), old and "userdata" or "nil", "core.HANDOVER")
end)

test("lock fast path and timeout", function()
  local l = core.Lock()
  eq(l:acquire(), true, "acquire")
  eq(l:acquire(0), false, "acquire(0) while held")
  eq(l:acquire(0.02), false, "acquire(0.02) through _block, outside a coroutine")
  l:release()
  eq(l:acquire(0), true, "acquire(0) free")
  l:release()
  l:close()
end)

test("lock slow path yields", function()
  local l = core.Lock()
  l:acquire()
  local resume = suspended(function() return l:acquire() end)
  l:release()
  eq(resume(), true, "acquire after the yield")
  l:release()
end)

test("event wait yields", function()
  local e = core.Event()
  local resume = suspended(function() return e:wait() end)
  e:set()
  eq(resume(), true, "wait")
end)

test("argument errors read as on 5.4", function()
  local l = core.Lock()
  local q = check(core.queue_new("Queue", 0, 0))
  local at = "^[^:]*vm%-smoke%.lua:%d+: "
  raises(function() l:acquire("x") end,
         at .. "bad argument #1 to 'acquire' %(number expected, got string%)$")
  raises(function() l.acquire(42) end,
         at .. "bad argument #1 to 'acquire' %(mproc.Lock expected, got number%)$")
  raises(function() q:get("x") end, at .. "bad argument #1 to 'get' %(number expected")
  raises(function() q.put() end,
         at .. "bad argument #1 to 'put' %(mproc.Queue expected, got no value%)$")
  raises(function() l:acquire(-5) end, at .. "bad argument #1 to 'acquire' %(timeout must be")
  q:close()
  l:close()
end)

test("queue put/get and handovers", function()
  local l_unheld = core.Lock()
  local q = check(core.queue_new("Queue", 1, 0))
  q:put({ a = 1, "x" })
  local v = q:get()
  eq(v.a, 1, "v.a")
  eq(v[1], "x", "v[1]")
  raises(function() q:get_nowait() end, "^Empty")
  -- get on an empty queue: _slow_get yields until a put
  local resume = suspended(function() return q:get() end)
  q:put(42)
  eq(resume(), 42, "get after the yield")
  -- put on a full queue: _slow_put yields until a get
  q:put(1)
  raises(function() q:put_nowait(3) end, "^Full")
  raises(function() q:put_nowait(coroutine.create(function() end)) end,
         "^SerializeError: value: cannot send a coroutine")
  raises(function() l_unheld:release() end, "cannot release un%-acquired lock")
  resume = suspended(function() return q:put(2) end)
  eq(q:get(), 1, "first")
  resume()
  eq(q:get(), 2, "second")
  q:close()
end)

test("joinable queue join yields", function()
  local q = check(core.queue_new("JoinableQueue", 0, 0))
  q:put("job")
  local resume = suspended(function() return q:join() end)
  eq(q:get(), "job", "job")
  q:task_done()
  resume()
  q:close()
end)

test("codec round trips", function()
  local function rt(v) return check(core.codec_loads(check(core.codec_dumps(v)))) end
  eq(rt("hello"), "hello", "string")
  eq(rt(("\0x"):rep(100000)), ("\0x"):rep(100000), "long binary string")
  eq(rt(12345), 12345, "integer")
  eq(rt(-2 ^ 53), -2 ^ 53, "-2^53")
  eq(rt(0.5), 0.5, "float")
  local zero = 0.5 - 0.5   -- 5.1 folds -0.0 and 0 into one constant
  eq(1 / rt(-zero) < 0, true, "-0.0 keeps its sign")
  eq(rt(2 ^ 63), 2 ^ 63, "2^63")
  eq(rt(1e300), 1e300, "1e300")
  eq(rt(1 / 0), 1 / 0, "inf")
  local x = rt(0 / 0)
  assert(x ~= x, "nan")
  eq(rt(true), true, "boolean")
  eq(rt(nil), nil, "nil")
  local t = { 1, 2, "three", k = { deep = { 4 } }, [true] = false }
  t.self = t
  local u = rt(t)
  eq(u[3], "three", "u[3]")
  eq(u.k.deep[1], 4, "u.k.deep[1]")
  eq(u[true], false, "u[true]")
  eq(u.self, u, "cycle")
  local up = 10
  local f = rt(function(a) return a + up end)
  eq(f(5), 15, "function with an upvalue")
  -- two closures sharing one upvalue
  local n = 0
  local pair = rt({ function() n = n + 1 end, function() return n end })
  pair[1]()
  local shared = pair[2]() == 1
  if core.lua_version == "5.1" then eq(shared, false, "shared upvalue (5.1: a copy)")
  else eq(shared, true, "shared upvalue") end
  raises(function() check(core.codec_dumps(coroutine.create(function() end))) end, "cannot send")
  raises(function() check(core.codec_loads("\255garbage")) end, "malformed")
end)

test("shared objects and messages with integers", function()
  local a = core.Array("int64", { 10, 20, 30 })
  eq(a[2], 20, "a[2]")
  a[3] = 2 ^ 40
  eq(a[3], 2 ^ 40, "a[3]")
  raises(function() return a[10] end, "array index 10 out of range %(1%.%.3%)")
  a:close()
  local v = core.Value("double", 1.5)
  eq(v:get(), 1.5, "Value")
  -- a user value set later (compat.c: objects share one empty table until
  -- then): each Value keeps its own lock
  local w = core.Value("double", 2.5)
  local lv, lw = v:get_lock(), w:get_lock()
  eq(v:get_lock() == lv and w:get_lock() == lw, true, "get_lock is the same object each time")
  eq(lv ~= lw, true, "two Values, two locks")
  v:close(); w:close()
  local l = core.Lock()
  local _, handle = getmetatable(l).__mproc_encode(l)
  assert(handle:find(":%d+:%d+$"), handle)
  l:close()
end)

test("pipe round trip", function()
  local a, b = check(core.pipe_new(true))
  local ok, sent = a:_send({ 1, "two", { 3 } })
  assert(ok and sent, "sent")
  local got
  for _ = 1, 100 do
    local rok, ready, val = b:_recv(false)
    assert(rok, ready)
    if ready then got = val break end
    core.poll_fd(val, "r", 0.01)
  end
  eq(got[2], "two", "got[2]")
  eq(got[3][1], 3, "got[3][1]")
  a:close()
  b:close()
end)

test("io files", function()
  eq(core.subprocess_file_fileno(io.stdout), 1, "fileno(io.stdout)")
  local f = io.tmpfile()
  assert(core.subprocess_file_fileno(f) > 2)
  f:close()
  eq(core.subprocess_file_fileno(f), nil, "fileno of a closed file")
  eq(core.subprocess_file_fileno({}), nil, "fileno of a table")
end)

test("no /dev/shm entry left", function()
  collectgarbage()
  collectgarbage()
  local ls = io.popen("ls /dev/shm 2>/dev/null")
  local pid = tostring(core.getpid())
  for name in ls:lines() do
    if name:find("^mproc%-q?" .. pid .. "%-") then error("left behind: " .. name) end
  end
  ls:close()
end)

print(("%s: %d passed, %d failed"):format(core.lua_version, passed, failed))
os.exit(failed == 0 and 0 or 1)

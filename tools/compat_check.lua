-- Checks of mproc.compat and of the scheduler that need no C module, for
-- every VM (tools/lua-versions.sh runs this with each).
local root = (arg and arg[0] or ""):match("^(.*)tools/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. package.path
local clock = 0
package.preload["mproc.core"] = function()   -- what sched needs, on a fake clock
  return {
    now = function() return clock end,
    sleep = function(s) clock = clock + s; return true end,
    poll_fd = function() return false end,
    poll_many = function() return false end,
  }
end
local c = require "mproc.compat"

-- tables, numbers, string.pack subset
local s = c.spack(">s4s4", "ab", "") .. c.spack(">I4", 258)
local a, b, pos = c.sunpack(">s4s4", s)
assert(a == "ab" and b == "" and pos == 11)
local n, p2 = c.sunpack(">I4", s, pos); assert(n == 258 and p2 == 15)
assert(c.math_type(3) == "integer" and c.math_type(3.5) == "float" and c.math_type("3") == nil)
assert(c.tointeger(4) == 4 and c.tointeger(4.5) == nil and c.tointeger("7") == 7)
assert(c.idiv(7, 2) == 3 and c.idiv(-7, 2) == -4)
local t = { 1, 2, 3, 4, 5 }; c.move(t, 1, 4, 2); assert(table.concat(t, ",") == "1,1,2,3,4")
t = { 1, 2, 3, 4, 5 }; c.move(t, 2, 5, 1); assert(table.concat(t, ",") == "2,3,4,5,5")
local pk = c.pack(1, nil, 3); assert(pk.n == 3 and select("#", c.unpack(pk, 1, pk.n)) == 3)
assert(c.fnv1a64("") == "cbf29ce484222325" and c.fnv1a64("a") == "af63dc4c8601ec8c")
assert(c.fnv1a64("foobar") == "85944171f73967e8")
assert(c.fnv1a64(("\255\0\128x"):rep(50)) == "61f85896979019b5")

-- calls: yield across pcall, running, xpcall arguments, load with env
local co = coroutine.create(function(x)
  local ok, v = c.pcall(function(y)
    local z = coroutine.yield(y + 1)
    return z * 2
  end, x)
  local ok2, e = c.pcall(function() coroutine.yield("again"); error("boom", 0) end)
  return ok, v, ok2, e
end)
local _, y = coroutine.resume(co, 10); assert(y == 11)
local _, y2 = coroutine.resume(co, 5); assert(y2 == "again")
local ok, r1, r2, r3, r4 = coroutine.resume(co)
assert(ok and r1 == true and r2 == 10 and r3 == false and r4 == "boom")
local main
co = coroutine.create(function()
  main = c.running()
  c.pcall(function() assert(c.running() == main) end)
end)
assert(coroutine.resume(co)); assert(main == co)
co = coroutine.create(function()
  local callable = setmetatable({}, { __call = function(_, x) return x + 1 end })
  local ok1, v1 = c.pcall(callable, 1)
  local ok2, e2 = c.pcall(42)
  return ok1 and v1 == 2 and not ok2 and type(e2) == "string"
end)
assert(select(2, coroutine.resume(co)) == true)
assert(select(2, c.xpcall(function(x1, x2) return x1 + x2 end, print, 2, 3)) == 5)
assert(c.load("return x", "=t", "t", { x = 9 })() == 9)
assert(c.load("\27Lua", "=b", "t") == nil)

-- a table's __gc
local hit = 0
do local _ = c.gc(setmetatable({}, { __gc = function() hit = hit + 1 end })) end
collectgarbage(); collectgarbage()
assert(hit == 1)

-- the scheduler: a wait inside pcall (errors.interruptible) suspends its task
local sched = require "mproc.sched"
local flag, log = false, {}
local r = sched.run(function(x)
  sched.spawn(function()
    local v = sched.wait_shared(function() if flag then return "got" end end, nil)
    log[#log + 1] = "waited:" .. tostring(v)
  end, { n = 0 })
  sched.spawn(function()
    sched.sleep(0.05)
    flag = true
    log[#log + 1] = "set"
  end, { n = 0 })
  local pok, v = c.pcall(sched.wait_shared, function() end, sched.deadline(0.2))
  log[#log + 1] = "main:" .. tostring(pok) .. ":" .. tostring(v)
  return x * 2
end, 21)
local got = table.concat(log, " ")
assert(r == 42 and got == "set waited:got main:true:false", got)
-- a run that ends early runs the deferred cleanup of a waiting task
local cleaned = false
local rok, err = pcall(sched.run, function()
  sched.spawn(function()
    sched.defer(function() cleaned = true end)
    sched.sleep(10)
  end, { n = 0 })
  sched.sleep(0.01)
  error("boom", 0)
end)
assert(not rok and err == "boom" and cleaned)
print(_VERSION .. (c.luajit and " (LuaJIT)" or "") .. ": compat_check ok")

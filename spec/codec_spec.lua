local mp = require "mproc"
local support = require "support"
local codec = require "mproc.codec"
local core = require "mproc.core"
local compat = require "mproc.compat"

-- Round trip through the public functions (functions allowed unless opts
-- say otherwise: most values here are trusted, made by this very process).
-- Lua 5.1 and LuaJIT: no _ENV (functions have environments) and no __gc
-- for tables
local NO_ENV = _VERSION == "Lua 5.1"
local PUC51 = NO_ENV and not compat.luajit

local TRUST = { functions = true }
local function rt(v, opts)
  return mp.loads(mp.dumps(v), opts or TRUST)
end

local NOFUNCS = "cannot receive a function here (functions are refused without "
  .. "{functions = true})"

-- The SerializeError raised by fn(...), or fails.
local function serr(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  assert(mp.is_error(e, "SerializeError"), "expected a SerializeError, got " .. tostring(e))
  return e.message
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs `code` in a fresh support.LUA (another process, so no shared identity
-- table, registrations or globals) with `data` readable as the global
-- INPUT; returns what the child printed.
local function in_lua(code, data)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data or "")
  f:close()
  local prelude = ("local f = io.open(%q, 'rb') INPUT = f:read('*a') f:close() "):format(path)
  local cmd = ("LUA_PATH=%s LUA_CPATH=%s timeout 30 %s -e %s 2>&1"):format(
    shell_quote(package.path), shell_quote(package.cpath), support.LUA,
    shell_quote(prelude .. code))
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

describe("mproc.codec", function()
  describe("mp.dumps() and mp.loads()", function()
    it("round-trip nil and booleans", function()
      assert.is_nil(rt(nil))
      assert.is_true(rt(true))
      assert.is_false(rt(false))
    end)

    it("round-trip binary strings of every header size", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs { "", "a", "\0", all, ("x"):rep(63), ("x"):rep(64),
          ("y"):rep(255), ("y"):rep(256), ("z"):rep(65535), ("z"):rep(65536) } do
        assert.equal(s, rt(s))
      end
    end)

    it("round-trips a 100 MiB string", function()
      local s = ("0123456789abcdef"):rep(100 * 2 ^ 20 / 16)
      local enc = mp.dumps(s)
      assert.is_true(#enc <= #s + 16)
      local r = mp.loads(enc)
      assert.equal(#s, #r)
      assert.is_true(r == s)
    end)

    it("is compact for small values", function()
      assert.equal(2, #mp.dumps(5))            -- version byte + one byte
      assert.equal(2, #mp.dumps(-3))
      assert.equal(2, #mp.dumps(true))
      assert.equal(5, #mp.dumps("abc"))        -- one byte of header
      assert.equal(1 + 2 + 200, #mp.dumps(("a"):rep(200)))
      assert.equal(1 + 3 + 3, #mp.dumps({ 1, 2, 3 }))   -- tag, count, nhash, items
    end)

    it("round-trips nested tables, lists with holes and any key type", function()
      local key = { "k" }
      local t = {
        1, 2, nil, 4, "five",
        name = "x", nested = { deeper = { deepest = { 1.5 } } },
        [0] = "zero", [-1] = "neg", [1.5] = "float", [true] = "yes", [false] = "no",
        [1e100] = "big", [key] = "table key", ["a b"] = "spaced",
      }
      local r = rt(t)
      assert.equal(1, r[1]); assert.equal(2, r[2]); assert.is_nil(r[3])
      assert.equal(4, r[4]); assert.equal("five", r[5])
      assert.equal("x", r.name)
      assert.equal(1.5, r.nested.deeper.deepest[1])
      assert.equal("zero", r[0]); assert.equal("neg", r[-1])
      assert.equal("float", r[1.5]); assert.equal("yes", r[true]); assert.equal("no", r[false])
      assert.equal("big", r[1e100]); assert.equal("spaced", r["a b"])
      local found
      for k, v in pairs(r) do
        if type(k) == "table" then found = k; assert.equal("table key", v) end
      end
      assert.same({ "k" }, found)
    end)

    it("round-trips sparse tables without padding them", function()
      local t = {}
      for i = 0, 40 do t[2 ^ i] = i end
      local s = mp.dumps(t)
      assert.is_true(#s < 1000)
      local r = mp.loads(s)
      for i = 0, 40 do assert.equal(i, r[2 ^ i]) end
      local n = 0
      for _ in pairs(r) do n = n + 1 end
      assert.equal(41, n)
    end)

    it("round-trips big lists and tables with many keys", function()
      local list, map = {}, {}
      for i = 1, 100000 do list[i] = i * 2 end
      for i = 1, 1000 do map["k" .. i] = { i } end
      local rl, rm = rt(list), rt(map)
      assert.equal(100000, #rl)
      assert.equal(200000, rl[100000])
      for i = 1, 1000 do assert.equal(i, rm["k" .. i][1]) end
    end)

    it("keeps shared references and cycles within one message", function()
      local shared = { "s" }
      local t = { a = shared, b = shared, list = { shared, shared } }
      t.self = t
      t[shared] = shared
      local r = rt(t)
      assert.equal(r, r.self)
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[1])
      assert.equal(r.a, r.list[2])
      assert.equal(r.a, r[r.a])
      assert.are_not.equal(shared, r.a)
      assert.same({ "s" }, r.a)
    end)

    it("copies again in each message", function()
      local shared = {}
      local a, b = rt(shared), rt(shared)
      assert.are_not.equal(a, b)
    end)

    it("sends metatables with their table, shared ones stay shared", function()
      local Point = {}
      Point.__index = Point
      function Point.norm2(p) return p.x * p.x + p.y * p.y end
      local pts = { setmetatable({ x = 1, y = 2 }, Point), setmetatable({ x = 3, y = 4 }, Point) }
      local r = rt(pts)
      assert.equal(5, r[1]:norm2())
      assert.equal(25, r[2]:norm2())
      assert.equal(getmetatable(r[1]), getmetatable(r[2]))
      assert.are_not.equal(Point, getmetatable(r[1]))
    end)

    it("uses the real metatable, ignoring __metatable and metamethods", function()
      local t = setmetatable({ a = 1 }, {
        __metatable = "locked",
        __index = function() error("no __index during encoding") end,
        __newindex = function() error("no __newindex during decoding") end,
        __pairs = function() error("no __pairs") end,
      })
      local r = rt(t)
      assert.equal(1, rawget(r, "a"))
      assert.equal("locked", getmetatable(r))
    end)

    it("sends Lua functions with their upvalues copied", function()
      local base, t = 10, { k = 5 }
      local function add(x) return x + base + t.k end
      local r = rt(add)
      assert.equal(16, r(1))
      base, t.k = 100, 100          -- copies: the sender's changes don't show
      assert.equal(16, r(1))
    end)

    it("keeps upvalues shared between closures of one message", function()
      local n = 0
      local function inc() n = n + 1; return n end
      local function get() return n end
      local r = rt({ inc = inc, get = get })
      r.inc(); r.inc()
      -- plain Lua 5.1 has no lua_upvaluejoin: each closure gets its own copy
      assert.equal(PUC51 and 0 or 2, r.get())
      assert.equal(0, n)
    end)

    it("sends recursive and nested closures", function()
      local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
      assert.equal(120, rt(fact)(5))
      local function maker(a) return function(b) return a .. b end end
      assert.equal("ab", rt(maker("a"))("b"))
      assert.equal(maker, rt({ maker, maker })[1] == nil and nil or maker)
      local two = rt({ maker, maker })
      assert.equal(two[1], two[2])
    end)

    it("binds _ENV and the global table to the receiver's globals", function()
      local function uses_globals() return tostring, _G end
      local r = rt(uses_globals)
      local ts, g = r()
      assert.equal(tostring, ts)
      assert.equal(_G, g)
      assert.equal(_G, rt(_G))
      assert.equal(_G, rt({ env = _G }).env)
      local out = in_lua([[
        GREETING = "child globals"
        local f = require("mproc").loads(INPUT, { functions = true })
        print(f())
      ]], mp.dumps(function() return GREETING, _G == _ENV end))  -- luacheck: ignore 113
      -- before 5.2 there is no _ENV (a function's globals are its environment,
      -- the receiver's here too): `_ENV` is an unset global
      assert.equal("child globals\t" .. (NO_ENV and "false" or "true") .. "\n", out)
    end)

    it("binds any _ENV upvalue to the receiver's globals", function()
      if NO_ENV then return end   -- 5.1 and LuaJIT: `local _ENV` is an ordinary local
      local f
      do
        local _ENV = { codec_spec_x = 42, _G = _G }  -- luacheck: ignore 211
        f = function() return codec_spec_x, _G end  -- luacheck: ignore 113
      end
      assert.equal(42, f())
      _G.codec_spec_x = "global x"
      local ok, gx, g = pcall(rt(f))
      _G.codec_spec_x = nil
      assert.is_true(ok)
      assert.equal("global x", gx)
      assert.equal(_G, g)
      assert.is_true(#mp.dumps(f) < 400)
    end)

    it("keeps line numbers in tracebacks of functions it sent", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local f = function() error("boom") end
      local ok, e = pcall(rt(f))
      assert.is_false(ok)
      assert.matches("codec_spec.lua:" .. line .. ": boom", e, 1, true)
    end)

    it("sends C functions reachable from package.loaded by name", function()
      local r = rt({ math.sqrt, string.format, print, io.write, table.concat, core.now })
      assert.equal(math.sqrt, r[1])
      assert.equal(string.format, r[2])
      assert.equal(print, r[3])
      assert.equal(io.write, r[4])
      assert.equal(table.concat, r[5])
      assert.equal(core.now, r[6])
      assert.is_true(#mp.dumps(math.sqrt) < 16)
      -- (before 5.3 every number is a double, printed without ".0")
      assert.equal(math.type and "2.0" or "2",
        in_lua([[print(require("mproc").loads(INPUT, { functions = true })(4))]],
        mp.dumps(math.sqrt)):match("^(.-)\n"))
    end)

    it("sends modules in package.loaded by name", function()
      assert.equal(string, rt(string))
      assert.equal(math, rt({ m = math }).m)
      local codec_mod = rt(codec)
      assert.equal(codec, codec_mod)
      local str = string
      local function up() return str end
      assert.equal(string, rt(up)())
      assert.is_true(#mp.dumps(string) < 16)
    end)

    it("notices modules loaded after its first use", function()
      local mod = { hello = function() return "hi" end }
      package.loaded["codec_spec_late_module"] = mod
      local function user() return mod end
      assert.equal(mod, rt(user)())
      package.loaded["codec_spec_late_module"] = nil
    end)

    it("accepts an empty message only as an error", function()
      assert.matches("malformed data %(empty%)", serr(mp.loads, ""))
    end)
  end)

  describe("mp.register()", function()
    it("sends a registered value by name", function()
      local config = mp.register("codec_spec.config", { depth = 3 })
      assert.equal(config, rt(config))
      assert.equal(config, rt({ c = config, d = config }).d)
      assert.is_true(#mp.dumps(config) < 32)
    end)

    it("sends registered C functions and userdata", function()
      local it = string.gmatch("a b", "%a")
      mp.register("codec_spec.iter", it)
      assert.equal(it, rt(it))
      local tmp = io.tmpfile()
      finally(function() support.close(tmp) end)
      mp.register("codec_spec.tmpfile", tmp)
      assert.equal(tmp, rt({ out = tmp }).out)
    end)

    it("returns the value it registered", function()
      local t = {}
      assert.equal(t, mp.register("codec_spec.ret", t))
    end)

    it("fails to receive a name the receiver has not registered", function()
      local t = mp.register("codec_spec.unknown", {})
      local out = in_lua([[
        local mp = require("mproc")
        local ok, e = pcall(mp.loads, INPUT)
        print(e.kind, e.message)
      ]], mp.dumps({ x = t }))
      assert.equal('SerializeError\tcannot receive "codec_spec.unknown" here '
        .. "(not registered with mp.register)\n", out)
    end)

    it("checks its arguments", function()
      assert.has_error(function() mp.register(1, {}) end,
        "bad argument #1 to 'register' (string expected, got number)")
      assert.has_error(function() mp.register() end,
        "bad argument #1 to 'register' (string expected, got no value)")
      assert.has_error(function() mp.register("", {}) end,
        "bad argument #1 to 'register' (name must not be empty)")
      assert.has_error(function() mp.register("x", 5) end,
        "bad argument #2 to 'register' (table, function or userdata expected, got number)")
      assert.has_error(function() mp.register("x") end,
        "bad argument #2 to 'register' (table, function or userdata expected, got no value)")
    end)
  end)

  describe("unsendable values", function()
    it("raise SerializeError naming the path", function()
      local ud = io.stdout
      assert.equal("args[2].config.on_done: cannot send a userdata",
        serr(codec.encode, { 1, { config = { on_done = ud } } }, "args"))
      assert.equal("value: cannot send a userdata", serr(mp.dumps, ud))
      assert.equal('value["a b"][10]: cannot send a userdata',
        serr(mp.dumps, { ["a b"] = { [10] = ud } }))
      assert.equal('value["end"]: cannot send a userdata', serr(mp.dumps, { ["end"] = ud }))
      assert.equal("value[true]: cannot send a userdata", serr(mp.dumps, { [true] = ud }))
      assert.equal("value[1.5]: cannot send a userdata", serr(mp.dumps, { [1.5] = ud }))
      assert.equal("value[<table>]: cannot send a userdata", serr(mp.dumps, { [{}] = ud }))
      assert.equal('value["a\\"b\\n"]: cannot send a userdata',
        serr(mp.dumps, { ['a"b\n'] = ud }))
      assert.equal("value[-7]: cannot send a userdata", serr(mp.dumps, { [-7] = ud }))
    end)

    it("name keys, metatables and upvalues in the path", function()
      local ud = io.stdout
      assert.equal("value.t<key>: cannot send a userdata", serr(mp.dumps, { t = { [ud] = 1 } }))
      assert.equal("value<metatable>.__index: cannot send a userdata",
        serr(mp.dumps, setmetatable({}, { __index = ud })))
      local function f() return ud end
      assert.equal("value.cb<upvalue ud>: cannot send a userdata", serr(mp.dumps, { cb = f }))
    end)

    it("name the kind of value", function()
      assert.equal("value.co: cannot send a coroutine",
        serr(mp.dumps, { co = coroutine.create(function() end) }))
      if debug.upvalueid then   -- a light userdata at hand (not on plain 5.1)
        local light = debug.upvalueid(function() return rt end, 1)
        assert.equal("value: cannot send a light userdata", serr(mp.dumps, light))
      end
      assert.equal("value.it: cannot send a C function (not found in package.loaded; "
        .. "use mp.register)", serr(mp.dumps, { it = string.gmatch("", "") }))
    end)

    it("are found before anything is written", function()
      local buf_ok = mp.dumps({ 1, 2, 3 })
      serr(mp.dumps, { 1, 2, io.stdout })
      assert.equal(buf_ok, mp.dumps({ 1, 2, 3 }))
    end)

    it("stop at 1000 levels of nesting", function()
      local function nest(n)
        local t = {}
        local cur = t
        for _ = 2, n do cur.x = {}; cur = cur.x end
        return t
      end
      local ok1000 = rt(nest(1000))
      assert.is_table(ok1000.x)
      local msg = serr(mp.dumps, nest(1001))
      assert.matches("^value%.x%.x.*: nesting deeper than 1000 levels$", msg)
      local cyc = {}
      cyc.self = cyc
      assert.equal(cyc, rt(cyc).self and rt(cyc).self.self and cyc)
    end)
  end)

  describe("mproc objects", function()
    local Thing = {}
    Thing.__index = Thing
    Thing.__mproc_encode = function(o) return "codec_spec.Thing", "handle:" .. o.n end
    local function thing(n) return setmetatable({ n = n }, Thing) end
    after_each(function() core.codec_register_reftype("codec_spec.Thing", nil) end)

    it("come back as the very same object in the same process", function()
      local a, b = thing(1), thing(2)
      local r = rt({ a, b, a })
      assert.equal(a, r[1])
      assert.equal(b, r[2])
      assert.equal(a, r[3])
      assert.equal(a, rt(a))
      assert.equal(mp.dumps(a), mp.dumps(a))      -- a stable identity
    end)

    it("are rebuilt by the registered decoder elsewhere", function()
      local a = thing(7)
      local s = mp.dumps({ a, a, x = a })
      core.codec_forget_ids()                   -- as in an unrelated process
      local calls = {}
      codec.register_reftype("codec_spec.Thing", function(h)
        calls[#calls + 1] = h
        return setmetatable({ n = tonumber(h:match("%d+")), remote = true }, Thing)
      end)
      local r = mp.loads(s)
      assert.same({ "handle:7" }, calls)
      assert.are_not.equal(a, r[1])
      assert.is_true(r[1].remote)
      assert.equal(7, r[1].n)
      assert.equal(r[1], r[2])
      assert.equal(r[1], r.x)
      assert.equal(r[1], mp.loads(s)[1])          -- the same id: the same object
      assert.same({ "handle:7" }, calls)
      assert.equal(r[1], rt(r[1]))
    end)

    it("are rebuilt in another process", function()
      local s = mp.dumps({ thing(3) })
      local out = in_lua([[
        local core = require("mproc.core")
        local mp = require("mproc")
        core.codec_register_reftype("codec_spec.Thing", function(h) return { h = h } end)
        print(mp.loads(INPUT)[1].h)
      ]], s)
      assert.equal("handle:3\n", out)
    end)

    it("fail to arrive where no decoder is registered", function()
      local s = mp.dumps(thing(1))
      core.codec_forget_ids()
      assert.equal("cannot receive a codec_spec.Thing here (no decoder registered for it)",
        serr(mp.loads, s))
    end)

    it("report a failing decoder", function()
      local s = mp.dumps(thing(1))
      core.codec_forget_ids()
      core.codec_register_reftype("codec_spec.Thing", function() error("gone", 0) end)
      assert.equal("cannot receive a codec_spec.Thing (gone)", serr(mp.loads, s))
      core.codec_register_reftype("codec_spec.Thing", function() return nil end)
      assert.equal("cannot receive a codec_spec.Thing (its decoder returned nil)",
        serr(mp.loads, s))
    end)

    it("report a failing __mproc_encode with the path", function()
      local Bad = { __mproc_encode = function() error("no handle", 0) end }
      assert.equal("value.lock: cannot send a table (__mproc_encode failed: no handle)",
        serr(mp.dumps, { lock = setmetatable({}, Bad) }))
      local Odd = { __mproc_encode = function() return 1 end }
      assert.equal("value[1]: cannot send a table (__mproc_encode must return two strings)",
        serr(mp.dumps, { setmetatable({}, Odd) }))
    end)

    it("may encode and decode inside __mproc_encode and the decoder", function()
      local Nested = {}
      Nested.__mproc_encode = function(o)
        return "codec_spec.Nested", mp.dumps({ inner = o.inner, f = math.floor })
      end
      local obj = setmetatable({ inner = { 1, 2, { 3 } } }, Nested)
      local s = mp.dumps({ obj, { 4, obj } })
      core.codec_forget_ids()
      core.codec_register_reftype("codec_spec.Nested", function(h, functions)
        return setmetatable(mp.loads(h, { functions = functions }), Nested)
      end)
      assert.equal("cannot receive a codec_spec.Nested (SerializeError: " .. NOFUNCS .. ")",
        serr(mp.loads, s))
      local r = mp.loads(s, TRUST)
      assert.same({ 1, 2, { 3 } }, r[1].inner)
      assert.equal(math.floor, r[1].f)
      assert.equal(r[1], r[2][2])
      core.codec_register_reftype("codec_spec.Nested", nil)
    end)

    it("work for userdata", function()
      local mt = getmetatable(io.stderr)
      mt.__mproc_encode = function() return "codec_spec.File", "stderr" end
      local ok, r = pcall(rt, { f = io.stderr })
      mt.__mproc_encode = nil
      assert.is_true(ok, tostring(r))
      assert.equal(io.stderr, r.f)
    end)
  end)

  describe("mp.loads without {functions = true} (untrusted bytes)", function()
    -- Bytes that run code when the decoded value is collected: a table
    -- whose metatable has a bytecode __gc (set after setmetatable, so our
    -- own copy is not marked for finalization).
    local function gc_bomb()
      local mt = {}
      local t = setmetatable({ 1 }, mt)
      mt.__gc = function() PWNED = "ran" end  -- luacheck: ignore 111
      return mp.dumps(t)
    end

    it("refuses bytecode, C functions by name and registered functions", function()
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps(function() end)))
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps({ a = { function() end } })))
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps({ math.sqrt })))
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps(print)))
      local it = string.gmatch("a", "%a")
      mp.register("codec_spec.default_fn", it)
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps({ it })))
      assert.equal(NOFUNCS, serr(mp.loads, mp.dumps(gc_bomb)))
      assert.equal(NOFUNCS, serr(mp.loads, gc_bomb()))
      -- data, modules and registered tables still decode
      assert.same({ 1, { a = "b" } }, mp.loads(mp.dumps({ 1, { a = "b" } })))
      assert.equal(string, mp.loads(mp.dumps(string)))
    end)

    it("never runs a bytecode __gc from its input, on decode or collect", function()
      local s = gc_bomb()
      rawset(_G, "PWNED", nil)
      local ok = pcall(mp.loads, s)
      collectgarbage(); collectgarbage()
      assert.is_false(ok)
      assert.is_nil(rawget(_G, "PWNED"))
      -- and in a fresh process, where nothing else could hold the table
      local out = in_lua([[
        local mp = require("mproc")
        local ok, e = pcall(mp.loads, INPUT)
        print(ok, ok and "" or e.message)
        e = nil
        collectgarbage(); collectgarbage()
        print(PWNED)
        e = mp.loads(INPUT, { functions = true })   -- trusted: it does run
        e = nil
        collectgarbage(); collectgarbage()
        print(PWNED)
      ]], s)
      -- 5.1 and LuaJIT run no __gc of a table at all
      assert.equal("false\t" .. NOFUNCS .. "\nnil\n" .. (NO_ENV and "nil" or "ran") .. "\n", out)
    end)

    it("refuses a Barrier's action too, even inside {functions = false}", function()
      local b = mp.Barrier(1, function() return "action" end)
      local out = in_lua([[
        local mp = require("mproc")
        for _, opts in ipairs({ {}, { functions = false }, { functions = true } }) do
          local ok, e = pcall(mp.loads, INPUT, opts)
          print(ok, ok and "" or e.message)
        end
      ]], mp.dumps(b))
      b:close()
      assert.equal("false\tcannot receive a mproc.Barrier (SerializeError: " .. NOFUNCS .. ")\n"
        .. "false\tcannot receive a mproc.Barrier (SerializeError: " .. NOFUNCS .. ")\n"
        .. "true\t\n", out)
    end)

    it("checks the option", function()
      assert.has_error(function() mp.loads(mp.dumps(1), { functions = "yes" }) end,
        "bad argument #2 to 'loads' (functions must be a boolean, got string)")
      assert.equal(1, mp.loads(mp.dumps(1), { functions = false }))
    end)
  end)

  describe("functions = false", function()
    it("rejects function values", function()
      local msg = NOFUNCS
      assert.equal(msg, serr(mp.loads, mp.dumps(function() end), { functions = false }))
      assert.equal(msg, serr(mp.loads, mp.dumps({ a = { function() end } }),
        { functions = false }))
      assert.equal(msg, serr(mp.loads, mp.dumps({ math.sqrt }), { functions = false }))
    end)

    it("accepts data", function()
      assert.same({ 1, { a = "b" } }, rt({ 1, { a = "b" } }, { functions = false }))
      assert.equal(string, rt(string, { functions = false }))
      assert.equal(3, rt(function() return 3 end, { functions = true })())
    end)
  end)

  describe("malformed input", function()
    local samples = {}
    setup(function()
      local cyc = { 1 }
      cyc.self = cyc
      local up = 1
      local Point = { __index = {} }
      for _, v in ipairs {
        0, -1, 300, -70000, math.mininteger or -2 ^ 53, 1.5, "", "abc", ("x"):rep(300), true,
        { 1, 2, 3 }, { a = 1, b = { c = "d", [2.5] = false } }, cyc,
        { cyc, cyc }, setmetatable({ 1 }, Point), string, math.sqrt, _G,
        function() return up end,
      } do
        samples[#samples + 1] = mp.dumps(v)
      end
    end)

    -- Decoding may succeed or raise SerializeError, nothing else.
    local function safe(s, opts)
      local ok, e = pcall(mp.loads, s, opts)
      if not ok and not mp.is_error(e, "SerializeError") then
        error("unexpected error: " .. tostring(e))
      end
      return ok
    end

    it("refuses wrong versions and trailing bytes", function()
      assert.equal("malformed data (format version 9, expected 1)",
        serr(mp.loads, "\9\0"))
      assert.equal("malformed data (trailing bytes at byte 2)", serr(mp.loads, "\1\0\0"))
      assert.equal("malformed data (unknown tag at byte 1)", serr(mp.loads, "\1\223"))
      assert.equal("malformed data (bad reference at byte 1)", serr(mp.loads, "\1\212\1"))
    end)

    it("raises SerializeError on every truncation of valid encodings", function()
      for _, s in ipairs(samples) do
        for n = 0, #s - 1 do
          assert.is_false(safe(s:sub(1, n)))
        end
      end
    end)

    it("survives single-byte mutations", function()
      math.randomseed(1234)
      for _, s in ipairs(samples) do
        for _ = 1, 300 do
          local i = math.random(#s)
          local m = s:sub(1, i - 1) .. string.char(math.random(0, 255)) .. s:sub(i + 1)
          safe(m, { functions = false })
        end
      end
    end)

    it("survives random bytes", function()
      math.randomseed(4321)
      for _ = 1, 5000 do
        local t = { "\1" }
        for j = 1, math.random(0, 40) do t[j + 1] = string.char(math.random(0, 255)) end
        safe(table.concat(t), { functions = false })
      end
    end)

    it("refuses lengths and counts larger than the data", function()
      assert.matches("malformed data", serr(mp.loads, "\1\203\255\255\255\255\255\255\255\127"))
      assert.matches("malformed data", serr(mp.loads, "\1\204\255\255\255\255\15\0"))
      assert.matches("malformed data", serr(mp.loads, "\1\204\0\200"))
      assert.matches("malformed data",
        serr(mp.loads, "\1\204" .. ("\128"):rep(10) .. "\1\0"))
      assert.matches("malformed data %(nesting deeper than 1000 levels%)",
        serr(mp.loads, "\1" .. ("\204\1\0"):rep(1200)))
      assert.matches("malformed data %(nil or NaN table key",
        serr(mp.loads, "\1\204\0\1\192\1"))
      assert.matches("malformed data %(nil or NaN table key",
        serr(mp.loads, "\1\204\0\1\199\0\0\0\0\0\0\248\127\1"))   -- a NaN key
    end)
  end)

  describe("mp.loads()", function()
    it("checks its arguments", function()
      assert.has_error(function() mp.loads() end,
        "bad argument #1 to 'loads' (string expected, got no value)")
      assert.has_error(function() mp.loads(5) end,
        "bad argument #1 to 'loads' (string expected, got number)")
      assert.has_error(function() mp.loads("x", 5) end,
        "bad argument #2 to 'loads' (table expected, got number)")
    end)
  end)

  describe("core.codec_dumps() and core.codec_loads()", function()
    it("return status first instead of raising", function()
      local ok, s = core.codec_dumps({ 1, "x" })
      assert.is_true(ok)
      assert.same({ true, { 1, "x" } }, { core.codec_loads(s) })
      assert.same({ false, "SerializeError", "args.f: cannot send a userdata" },
        { core.codec_dumps({ f = io.stdout }, "args") })
      assert.same({ false, "SerializeError", "malformed data (empty)" }, { core.codec_loads("") })
      assert.same({ false, "SerializeError", NOFUNCS },
        { core.codec_loads((select(2, core.codec_dumps(print))), true) })
    end)
  end)

  describe("codec.encode() and codec.decode()", function()
    it("encode with a root name and decode", function()
      assert.same({ 1, "a" }, codec.decode(codec.encode({ 1, "a" }, "args")))
      local co = coroutine.create(function() end)
      local function fn() return co end
      assert.equal("task.fn<upvalue co>: cannot send a coroutine",
        serr(codec.encode, { fn = fn }, "task"))
      assert.equal(NOFUNCS, serr(codec.decode, codec.encode(print), true))
      assert.equal(print, codec.decode(codec.encode(print)))   -- our own frames
    end)
  end)

  describe("errors that keep their cause (issue 13)", function()
    local Thing = {}
    Thing.__mproc_encode = function(o) return "codec_spec.Thing2", "h" .. o.n end
    after_each(function() core.codec_register_reftype("codec_spec.Thing2", nil) end)

    it("a decoder's error object keeps its kind and message", function()
      local s = mp.dumps(setmetatable({ n = 1 }, Thing))
      core.codec_forget_ids()
      core.codec_register_reftype("codec_spec.Thing2", function()
        error(setmetatable({ kind = "OSError", message = "segment is gone" }, mp.Error), 0)
      end)
      assert.equal("cannot receive a codec_spec.Thing2 (OSError: segment is gone)",
        serr(mp.loads, s))
      core.codec_register_reftype("codec_spec.Thing2",
        function() error({ message = "plain" }, 0) end)
      assert.equal("cannot receive a codec_spec.Thing2 (plain)", serr(mp.loads, s))
      core.codec_register_reftype("codec_spec.Thing2", function() error(true, 0) end)
      assert.equal("cannot receive a codec_spec.Thing2 (error object is a boolean value)",
        serr(mp.loads, s))
    end)

    it("a Value that went away says why", function()
      local v = mp.Value("int32", 1)
      local s = mp.dumps(v)
      core.codec_forget_ids()
      v:close()
      assert.matches("^cannot receive a mproc%.Value %(OSError: .*no longer exists%)$",
        serr(mp.loads, s))
    end)

    it("an __mproc_encode error object keeps its message", function()
      local Bad = { __mproc_encode = function()
        error(setmetatable({ kind = "Closed", message = "it is closed" }, mp.Error), 0)
      end }
      assert.equal("value.x: cannot send a table (__mproc_encode failed: Closed: it is closed)",
        serr(mp.dumps, { x = setmetatable({}, Bad) }))
    end)
  end)

  describe("deep nesting (issue 13)", function()
    local function nest(n)
      local t = {}
      local cur = t
      for _ = 2, n do cur[1] = {}; cur = cur[1] end
      return t
    end
    local function depth(v)
      local d = 0
      while type(v) == "table" do d = d + 1; v = v[1] end
      return d
    end

    it("1000 levels go both ways, in a coroutine too", function()
      assert.equal(1000, depth(rt(nest(1000))))
      assert.equal(1000, depth(coroutine.wrap(function() return rt(nest(1000)) end)()))
      assert.equal(1000, depth(codec.decode(codec.encode(nest(1000)))))
    end)

    it("1001 levels fail cleanly with a short path", function()
      local msg = serr(mp.dumps, nest(1001))
      assert.equal("value[1][1][1][1][1][1]...[1][1][1][1]: nesting deeper than 1000 levels", msg)
      msg = serr(mp.dumps, nest(5000))
      assert.equal("value[1][1][1][1][1][1]...[1][1][1][1]: nesting deeper than 1000 levels", msg)
      -- a short path is printed whole
      local t = { a = { b = { c = io.stdout } } }
      assert.equal("value.a.b.c: cannot send a userdata", serr(mp.dumps, t))
    end)

    it("a message claiming 1001 levels fails to decode", function()
      local s = "\1" .. ("\204\1\0"):rep(1001) .. "\0"
      assert.equal("malformed data (nesting deeper than 1000 levels)", serr(mp.loads, s))
      local ok = "\1" .. ("\204\1\0"):rep(1000) .. "\0"
      assert.equal(1000, depth(mp.loads(ok)))
    end)

    it("a deep value in a pool task's arguments names a short path", function()
      local msg = serr(codec.encode, { nest(1001) }, "args")
      assert.equal("args[1][1][1][1][1][1]...[1][1][1][1]: nesting deeper than 1000 levels", msg)
    end)
  end)
end)

describe("mproc.codec on each Lua version (issue 18)", function()
  -- the name a refusal gives each VM (the byte after a function's tag)
  local VMS = { "Lua 5.1", "LuaJIT", "Lua 5.2", "Lua 5.3", "Lua 5.4" }
  local SELF = core.lua_version == "LuaJIT" and "LuaJIT" or "Lua " .. core.lua_version

  it("keeps integers exact and numbers' values on every VM", function()
    for _, i in ipairs { 0, 1, -1, 127, 128, -33, -129, 65536, 2 ^ 31, -2 ^ 31, 2 ^ 32,
        2 ^ 53, -2 ^ 53 } do
      local r = rt(i)
      assert.equal(i, r)
      assert.equal(compat.math_type(i), compat.math_type(r))
    end
    if math.type then   -- 5.3+: the subtype travels
      assert.equal("float", math.type(rt(1.0)))
      assert.equal("integer", math.type(rt(1)))
    else                -- 5.1 and LuaJIT: every number is a double
      assert.equal(1, rt(1.0))
    end
    -- (on 5.1 a literal -0.0 may share the constant 0 of its function)
    assert.equal(-math.huge, 1 / rt(tonumber("-0.0")), "-0.0 keeps its sign")
    local nan = rt(0 / 0)
    assert.is_true(nan ~= nan)
    assert.equal(math.huge, rt(math.huge))
  end)

  it("writes a frame without functions the same on every VM", function()
    assert.equal("\1\204\3\0\1\129a\199\0\0\0\0\0\0\248\063", mp.dumps({ 1, "a", 1.5 }))
    -- an integer, whichever VM made it, is an integer where the VM has them
    assert.equal(7, mp.loads("\1\195\7"))
    assert.equal(2 ^ 53, mp.loads("\1\198\0\0\0\0\0\0\032\0"))
  end)

  it("refuses a function made by another VM, naming both", function()
    local s = mp.dumps({ f = function() return 1 end })
    local at = s:find("\206", 1, true)   -- T_FUNC, then the VM's byte
    assert.equal(SELF, VMS[s:byte(at + 1)])
    assert.equal(1, mp.loads(s, TRUST).f())
    for vm, name in ipairs(VMS) do
      if name ~= SELF then
        local other = s:sub(1, at) .. string.char(vm) .. s:sub(at + 2)
        assert.equal("cannot receive a function made by " .. name .. " here (this is "
          .. SELF .. ": functions cross only between processes of the same Lua version)",
          serr(mp.loads, other, TRUST))
      end
    end
    assert.matches("cannot receive a function made by an unknown Lua here",
      serr(mp.loads, s:sub(1, at) .. "\99" .. s:sub(at + 2), TRUST))
  end)

  it("refuses LuaJIT FFI cdata naming its path, unless registered", function()
    if not compat.luajit then return end   -- cdata exists on LuaJIT only
    local ffi = require "ffi"
    local e = serr(mp.dumps, { cfg = { ffi.new("int", 3) } })
    assert.equal("value.cfg[1]: cannot send a LuaJIT FFI cdata (send it by mp.register's name)", e)
    assert.matches("value<key>: cannot send a LuaJIT FFI cdata",
      serr(mp.dumps, { [ffi.new("int64_t", 1)] = 1 }))
    local buf = ffi.new("int[2]")
    mp.register("spec.codec.cdata", buf)
    assert.equal(buf, mp.loads(mp.dumps({ buf }))[1])
  end)
end)

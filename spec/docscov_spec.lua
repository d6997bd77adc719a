-- tools/docscov.lua (issue 17): a public method without its own heading in
-- its class's docs page fails the check.  Each case runs docscov on a copy
-- of the checkout with one change.
local mp = require "mproc"
local sp = mp.subprocess
local support = require "support"

local ROOT = os.getenv("PWD")

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function copy()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(("mkdir -p %s && cp -r %s %s %s %s"):format(sh_quote(dir),
    sh_quote(ROOT .. "/lua"), sh_quote(ROOT .. "/src"), sh_quote(ROOT .. "/docs"), sh_quote(dir))))
  return dir
end

local function append(path, text)
  local f = assert(io.open(path, "a"))
  f:write(text)
  f:close()
end

local function edit(path, from, to)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  local n
  s, n = s:gsub(from, to, 1)
  assert(n == 1, "pattern not found in " .. path)
  f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

-- Runs docscov on dir: exit code, stdout .. stderr.
local function docscov(dir)
  local r = sp.run({ "env", "LUA_CPATH=" .. package.cpath, support.LUA,
    ROOT .. "/tools/docscov.lua", dir }, { capture = true, timeout = 60 })
  os.execute("rm -rf " .. sh_quote(dir))
  return r.returncode, r.stdout .. r.stderr
end

describe("tools/docscov.lua", function()
  it("passes the checkout as it is", function()
    local code, out = docscov(copy())
    assert.equal(0, code, out)
    assert.matches("all documented", out)
  end)

  it("fails on a Lua class method without a heading", function()
    local dir = copy()
    edit(dir .. "/lua/mproc/pool.lua", "\nfunction Pool:join%(",
      "\nfunction Pool:frobnicate() end\n%0")
    local code, out = docscov(dir)
    assert.equal(1, code, out)
    assert.matches(
      "lua/mproc/pool.lua:Pool frobnicate %(a heading pool:frobnicate%( in docs/pool.md%)", out)
  end)

  it("fails on a method documented only under another class", function()
    -- the old check took any heading with ":close(" for every class
    local dir = copy()
    edit(dir .. "/lua/mproc/pool.lua", "\nfunction Pool:join%(", "\nfunction Pool:drain() end\n%0")
    append(dir .. "/docs/queue.md", "\n### q:drain()\n")
    local code, out = docscov(dir)
    assert.equal(1, code, out)
    assert.matches("Pool drain", out)
  end)

  it("fails on a C method without a heading", function()
    local dir = copy()
    edit(dir .. "/src/lua/queue.c", '{"qsize",', '{"peek", q_qsize}, {"qsize",')
    local code, out = docscov(dir)
    assert.equal(1, code, out)
    assert.matches("src/lua/queue.c:queue_methods peek", out)
  end)

  it("fails on a class it does not know, and on a missing proxy method", function()
    local dir = copy()
    append(dir .. "/lua/mproc/widget.lua",
      "local Widget = {}\nfunction Widget:spin() end\nreturn Widget\n")
    edit(dir .. "/docs/managers.md", "`setdefault%(k, v%)`, ", "")
    local code, out = docscov(dir)
    assert.equal(1, code, out)
    assert.matches("lua/mproc/widget.lua:Widget: a class docscov does not know", out)
    assert.matches("SDict setdefault", out)
  end)

  it("fails on a module function without a heading", function()
    local dir = copy()
    edit(dir .. "/docs/result.md", "### mp%.gather%(", "### gather(")
    local code, out = docscov(dir)
    assert.equal(1, code, out)
    assert.matches("mp%.gather", out)
  end)
end)

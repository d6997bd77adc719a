-- Fails when a public function or method has no entry in docs/*.md.
--
-- Module-level names: every public field of `require "mproc"` (and
-- mp.cluster.Pool) needs a heading containing `mp.name`.
--
-- Methods are read statically: every luaL_Reg table of the C bindings
-- (src/lua/*.c) and every class table of the Lua layer
-- (`function Class:m(` / `function Class.m(` in lua/).  Each table is listed
-- below with the docs file and the variable its headings use; each public
-- method (no leading "_") needs its own heading there: Pool:close needs
-- "pool:close(" in docs/pool.md.  A table or class this list does not know
-- fails the run, so a new class is placed (or declared internal) on purpose.
--
-- usage: lua5.4 tools/docscov.lua [ROOT]   (ROOT: a checkout, default ".")
local ROOT = arg and arg[1] or "."

-- [file:table] = { doc = "docs file", vars = { heading variables } }, or
-- false for tables that are not public classes.  `section`: methods
-- listed in the prose of that heading's section (manager proxies, whose
-- methods mirror Python's and are listed under the constructor).
local CLASSES = {
  ["src/lua/pipe.c:methods"] = { doc = "pipe.md", vars = { "conn" } },
  ["src/lua/queue.c:queue_methods"] = { doc = "queue.md", vars = { "q" } },
  ["src/lua/queue.c:joinable_extra"] = { doc = "queue.md", vars = { "q" } },
  ["src/lua/queue.c:simple_methods"] = { doc = "queue.md", vars = { "q" } },
  ["src/lua/shared.c:value_m"] = { doc = "shared.md", vars = { "v" } },
  ["src/lua/shared.c:array_m"] = { doc = "shared.md", vars = { "a" } },
  ["src/lua/shared.c:shm_m"] = { doc = "shared.md", vars = { "s" } },
  ["src/lua/lock.c:lock_m"] = { doc = "sync.md", vars = { "lock" } },
  ["src/lua/lock.c:rlock_m"] = { doc = "sync.md", vars = { "rlock", "lock" } },
  ["src/lua/lock.c:sem_m"] = { doc = "sync.md", vars = { "sem" } },
  -- a guard's :close() (what <close> does, for the VMs without it)
  ["src/lua/lock.c:guard_m"] = { doc = "sync.md", section = "### lock:guard(" },
  ["src/lua/cond.c:event_m"] = { doc = "sync.md", vars = { "event" } },
  ["src/lua/cond.c:cond_m"] = { doc = "sync.md", vars = { "cond" } },
  ["src/lua/cond.c:barrier_m"] = { doc = "sync.md", vars = { "barrier" } },
  ["lua/mproc/pipe.lua:Conn"] = { doc = "pipe.md", vars = { "conn" } },
  ["lua/mproc/pool.lua:Pool"] = { doc = "pool.md", vars = { "pool" } },
  -- the cluster pool has the local pool's API, documented once
  ["lua/mproc/cluster.lua:Pool"] = { doc = "pool.md", vars = { "pool" } },
  -- the parent side's methods of Pool (all "_" today: sched's source interface)
  ["lua/mproc/pool/dispatch.lua:Pool"] = { doc = "pool.md", vars = { "pool" } },
  ["lua/mproc/pool/dispatch.lua:WorkerInfo"] = { doc = "pool.md", section = "## How it works" },
  ["lua/mproc/result.lua:AsyncResult"] = { doc = "result.md", vars = { "r" } },
  ["lua/mproc/process.lua:Process"] = { doc = "process.md", vars = { "p", "mp.Process" } },
  ["lua/mproc/progress.lua:Bar"] = { doc = "coroutines.md", vars = { "bar" } },
  ["lua/mproc/subprocess.lua:Popen"] = { doc = "subprocess.md", vars = { "p" } },
  ["lua/mproc/subprocess.lua:Stream"] = { doc = "subprocess.md",
    vars = { "stream", "stdin", "stdout" } },
  ["lua/mproc/sync.lua:Bar"] = { doc = "sync.md", vars = { "barrier" } },
  ["lua/mproc/sync.lua:Cond"] = { doc = "sync.md", vars = { "cond" } },
  ["lua/mproc/manager.lua:BaseManager"] = { doc = "managers.md", vars = { "m" } },
  ["lua/mproc/manager.lua:Manager"] = { doc = "managers.md", vars = { "m" } },
  ["lua/mproc/manager/objects.lua:SDict"] = { doc = "managers.md", section = "### m:dict(" },
  ["lua/mproc/manager/objects.lua:SList"] = { doc = "managers.md", section = "### m:list(" },
  ["lua/mproc/manager/objects.lua:SNamespace"] = { doc = "managers.md",
    section = "### m:Namespace(" },
  ["lua/mproc/manager/objects.lua:SQueue"] = { doc = "managers.md", section = "### m:Queue(",
    also = "### m:JoinableQueue(" },
  ["lua/mproc/manager/objects.lua:SLock"] = { doc = "managers.md", section = "### m:Lock(" },
  ["lua/mproc/manager/objects.lua:SEvent"] = { doc = "managers.md", section = "### m:Event(" },
  ["lua/mproc/manager/objects.lua:SValue"] = { doc = "managers.md", section = "### m:Value(" },
}
-- Not classes users hold: module function tables (checked as mp.* names
-- at run time), metamethod tables, and internal handles (all "_" methods,
-- or documented as internal: mproc.redis.Conn in docs/cluster.md).
local INTERNAL = {
  "funcs", "meta", "metamethods", "queue_meta", "value_meta", "array_meta",
  "shm_meta", "lock_mt", "sem_mt", "event_mt", "cond_mt", "barrier_mt", "guard_mt",
  "nc_meta", "board_meta",
  "src/lua/net.c:nc_methods", "src/lua/pool.c:board_methods", "src/lua/poll.c:methods",
  "src/lua/subprocess.c:methods", "src/lua/redis.c:methods",
  "M", "Job", "Link", "lua/mproc/errors.lua:Error",
  "lua/mproc/forkserver.lua:Child",   -- what Process holds for a forkserver child
}
for _, k in ipairs(INTERNAL) do CLASSES[k] = CLASSES[k] or false end

local function lines_of(cmd)
  local out, p = {}, assert(io.popen(cmd))
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function slurp(path)
  local f = assert(io.open(ROOT .. "/" .. path))
  local s = f:read("*a")
  f:close()
  return s
end

-- docs: per file, its headings and each heading's section text
local docs, all_headings = {}, {}
for _, path in ipairs(lines_of("cd " .. ROOT .. " && ls docs/*.md")) do
  local file = path:match("[^/]+$")
  local d = { headings = {}, sections = {} }
  local cur
  for line in io.lines(ROOT .. "/" .. path) do
    if line:match("^#+%s") then
      d.headings[#d.headings + 1] = line
      all_headings[#all_headings + 1] = line
      cur = { head = line, text = {} }
      d.sections[#d.sections + 1] = cur
    elseif cur then
      cur.text[#cur.text + 1] = line
    end
  end
  docs[file] = d
end

local missing, checked = {}, 0
local function miss(what) missing[#missing + 1] = what end

local function heading_has(list, needle)
  for _, h in ipairs(list) do
    if h:find(needle, 1, true) then return true end
  end
  return false
end

local function section_has(d, head, name)
  for _, s in ipairs(d.sections) do
    if s.head:find(head, 1, true) then
      local body = table.concat(s.text, "\n")
      if body:find("`" .. name .. "(", 1, true) or body:find(":" .. name .. "(", 1, true)
         or body:find("`" .. name .. "`", 1, true) then
        return true
      end
    end
  end
  return false
end

local function check_method(key, spec, name)
  if name:match("^_") then return end
  checked = checked + 1
  local d = docs[spec.doc]
  if not d then return miss(("%s: docs/%s does not exist"):format(key, spec.doc)) end
  if spec.section then
    if section_has(d, spec.section, name) or (spec.also and section_has(d, spec.also, name)) then
      return
    end
    return miss(("%s %s (in docs/%s under %q)"):format(key, name, spec.doc, spec.section))
  end
  for _, v in ipairs(spec.vars) do
    if heading_has(d.headings, v .. ":" .. name .. "(") then return end
  end
  miss(("%s %s (a heading %s:%s( in docs/%s)"):format(key, name, spec.vars[1], name, spec.doc))
end

local function place(key, short)
  local spec = CLASSES[key]
  if spec == nil then spec = CLASSES[short] end
  if spec == nil then
    miss(("%s: a class docscov does not know (add it to tools/docscov.lua)"):format(key))
  end
  return spec
end

-- C: luaL_Reg tables
for _, path in ipairs(lines_of("cd " .. ROOT .. " && ls src/lua/*.c")) do
  local src = slurp(path)
  for tname, body in src:gmatch("luaL_Reg%s+([%w_]+)%s*%[%]%s*=%s*(%b{})") do
    local key = path .. ":" .. tname
    local spec = place(key, tname)
    if spec then
      for m in body:gmatch('{%s*"([%w_]+)"') do check_method(key, spec, m) end
    end
  end
end

-- Lua: class tables
for _, path in ipairs(lines_of("cd " .. ROOT .. " && find lua -name '*.lua' | sort")) do
  local seen = {}
  for line in io.lines(ROOT .. "/" .. path) do
    local cls, m = line:match("^function%s+([%a_][%w_]*)[:.]([%a_][%w_]*)%s*%(")
    if cls then
      local key = path .. ":" .. cls
      if seen[key] == nil then seen[key] = place(key, cls) or false end
      if seen[key] then check_method(key, seen[key], m) end
    end
  end
end

-- module-level names, at run time
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
local mp = require "mproc"
local function need(needle, what)
  checked = checked + 1
  if not heading_has(all_headings, needle) then miss(what) end
end
for name, v in pairs(mp) do
  if not name:match("^_") then
    need("mp." .. name .. (type(v) == "function" and "(" or ""), "mp." .. name)
  end
end
if pcall(require, "mproc.cluster") then need("mp.cluster.Pool(", "mp.cluster.Pool") end

table.sort(missing)
if #missing > 0 then
  io.stderr:write("docscov: not documented:\n  ", table.concat(missing, "\n  "), "\n")
  os.exit(1)
end
print(("docscov: %d public names and methods, all documented"):format(checked))

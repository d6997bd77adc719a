-- Fails when a public function or method has no entry in docs/*.md.
-- An entry is a heading ("### ...") containing `mp.name` for a module-level
-- name, or `:method(` for a method.  Methods are found on the classes that
-- mp exports (tables) and on the C metatables registered as "mproc.*".
local mp = require "mproc"

local headings = {}
local p = io.popen("ls docs/*.md")
for file in p:lines() do
  for line in io.lines(file) do
    if line:match("^#+%s") then headings[#headings + 1] = line end
  end
end
p:close()

local function documented(needle)
  for _, h in ipairs(headings) do
    if h:find(needle, 1, true) then return true end
  end
  return false
end

local missing, seen = {}, {}
local function need(needle, what)
  if seen[needle] then return end
  seen[needle] = true
  if not documented(needle) then missing[#missing + 1] = what end
end

local function methods_of(tname, t)
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then
      need(":" .. k .. "(", tname .. ":" .. k)
    end
  end
end

for name, v in pairs(mp) do
  if not name:match("^_") then
    if type(v) == "function" then
      need("mp." .. name .. "(", "mp." .. name)
    elseif type(v) == "table" and name ~= "Error" and name ~= "subprocess" then
      need("mp." .. name, "mp." .. name)
      methods_of(name, v)
    elseif type(v) == "table" then
      need("mp." .. name, "mp." .. name)
    end
  end
end
-- mp.cluster loads on first use (and only with hiredis); its Pool has the
-- local Pool's methods.  mproc.redis.Conn is internal (docs/cluster.md).
local has_cluster, cluster = pcall(require, "mproc.cluster")
if has_cluster then
  need("mp.cluster.Pool(", "mp.cluster.Pool")
  methods_of("cluster.Pool", cluster.PoolClass)
end
for k, v in pairs(debug.getregistry()) do
  if type(k) == "string" and k:match("^mproc%.") and type(v) == "table"
     and type(v.__index) == "table" and k ~= "mproc.buf" and k ~= "mproc.redis.Conn" then
    methods_of(k, v.__index)
  end
end

table.sort(missing)
if #missing > 0 then
  io.stderr:write("docscov: no docs/ heading for:\n  ", table.concat(missing, "\n  "), "\n")
  os.exit(1)
end
print(("docscov: %d public names, all documented"):format((function()
  local n = 0 for _ in pairs(seen) do n = n + 1 end return n end)()))

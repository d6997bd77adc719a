-- mproc run: loading and checking a jobs file, and the hash of a job's
-- definition that --resume compares.  Every problem is one line naming the
-- file and the job, raised as a table {bad_input = msg} (exit status 2).
local compat = require "mproc.compat"

local math_type = compat.math_type
local M = {}

local FIELDS = {
  name = true, cmd = true, fn = true, deps = true, retries = true,
  timeout = true, env = true, cwd = true,
}

local function bad(file, fmt, ...)
  error({ bad_input = file .. ": " .. fmt:format(...) }, 0)
end

local function who(job, i)
  if type(job) == "table" and type(job.name) == "string" and job.name ~= "" then
    return ("job '%s'"):format(job.name)
  end
  return ("job #%d"):format(i)
end

-- (the job's name is formatted only when there is something to say)
local function bad_job(file, job, i, fmt, ...)
  bad(file, "%s: " .. fmt, who(job, i), ...)
end

local function check_job(file, job, i)
  if type(job) ~= "table" then bad(file, "job #%d: a table expected, got %s", i, type(job)) end
  for k in pairs(job) do
    if not FIELDS[k] then
      bad_job(file, job, i,
        "unknown field '%s' (fields: name, cmd, fn, deps, retries, timeout, env, cwd)", tostring(k))
    end
  end
  local name = job.name
  if type(name) ~= "string" or name == "" then
    bad_job(file, job, i, "'name' must be a non-empty string")
  end
  -- the name is a file name under the log directory
  if not name:match("^[%w_][%w%._%-]*$") then
    bad_job(file, job, i, "'name' may only hold letters, digits, '.', '_' and '-' "
      .. "and must not start with '.' or '-'")
  end
  if job.cmd == nil and job.fn == nil then
    bad_job(file, job, i, "needs 'cmd' (a shell line or an argv list) or 'fn' (a function)")
  end
  if job.cmd ~= nil and job.fn ~= nil then bad_job(file, job, i, "has both 'cmd' and 'fn'") end
  local cmd = job.cmd
  if cmd ~= nil then
    if type(cmd) == "table" then
      if #cmd == 0 then bad_job(file, job, i, "'cmd' is an empty argv list") end
      for k, a in pairs(cmd) do
        if math_type(k) ~= "integer" or k < 1 or k > #cmd then
          bad_job(file, job, i, "'cmd' must be a list of strings")
        end
        if type(a) ~= "string" and type(a) ~= "number" then
          bad_job(file, job, i, "'cmd'[%d] must be a string, got %s", k, type(a))
        end
      end
    elseif type(cmd) ~= "string" or cmd == "" then
      bad_job(file, job, i, "'cmd' must be a non-empty string or an argv list, got %s", type(cmd))
    end
  end
  if job.fn ~= nil and type(job.fn) ~= "function" then
    bad_job(file, job, i, "'fn' must be a function, got %s", type(job.fn))
  end
  if job.deps ~= nil then
    if type(job.deps) ~= "table" then
      bad_job(file, job, i, "'deps' must be a list of job names")
    end
    for k, d in pairs(job.deps) do
      if math_type(k) ~= "integer" or type(d) ~= "string" then
        bad_job(file, job, i, "'deps' must be a list of job names")
      end
    end
  end
  local r = job.retries
  if r ~= nil and (math_type(r) ~= "integer" or r < 0) then
    bad_job(file, job, i, "'retries' must be an integer >= 0")
  end
  local t = job.timeout
  if t ~= nil and (type(t) ~= "number" or t ~= t or t <= 0) then
    bad_job(file, job, i, "'timeout' must be a number of seconds > 0")
  end
  if job.env ~= nil then
    if type(job.env) ~= "table" then
      bad_job(file, job, i, "'env' must be a table name -> value")
    end
    for k, v in pairs(job.env) do
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
        bad_job(file, job, i, "'env' has a bad variable name %s", tostring(k))
      end
      if type(v) ~= "string" and type(v) ~= "number" then
        bad_job(file, job, i, "'env'.%s must be a string, got %s", k, type(v))
      end
    end
  end
  if job.cwd ~= nil and (type(job.cwd) ~= "string" or job.cwd == "") then
    bad_job(file, job, i, "'cwd' must be a non-empty string")
  end
end

-- Finds a cycle (a list of names a -> b -> ... -> a) or nil.
local function find_cycle(list, byname)
  local mark, stack = {}, {}
  local function visit(job)
    mark[job.name] = "open"
    stack[#stack + 1] = job.name
    for _, d in ipairs(job.deps) do
      if mark[d] == "open" then
        local cyc, on = {}, false
        for _, n in ipairs(stack) do
          if n == d then on = true end
          if on then cyc[#cyc + 1] = n end
        end
        cyc[#cyc + 1] = d
        return cyc
      elseif not mark[d] then
        local c = visit(byname[d])
        if c then return c end
      end
    end
    stack[#stack] = nil
    mark[job.name] = "done"
    return nil
  end
  for _, job in ipairs(list) do
    if not mark[job.name] then
      local c = visit(job)
      if c then return c end
    end
  end
  return nil
end

-- Loads and checks `file`; returns the list of jobs (copies with `deps`
-- always a list) and a table name -> job.
function M.load(file)
  local chunk, err = loadfile(file, "t")
  if not chunk then
    local f = io.open(file, "r")
    if not f then bad(file, "cannot open the jobs file") end
    f:close()
    error({ bad_input = err }, 0)
  end
  local ok, spec = pcall(chunk)
  if not ok then error({ bad_input = file .. ": error while loading: " .. tostring(spec) }, 0) end
  if type(spec) ~= "table" then
    bad(file, "must return a table { jobs = { ... } }, got %s", type(spec))
  end
  for k in pairs(spec) do
    if k ~= "jobs" then bad(file, "unknown top-level field '%s' (only 'jobs')", tostring(k)) end
  end
  if type(spec.jobs) ~= "table" then bad(file, "'jobs' must be a list of job tables") end
  local list, byname = {}, {}
  local n = #spec.jobs
  for k in pairs(spec.jobs) do
    if math_type(k) ~= "integer" or k < 1 or k > n then
      bad(file, "'jobs' must be a list (found key %s)", tostring(k))
    end
  end
  for i, job in ipairs(spec.jobs) do
    check_job(file, job, i)
    if byname[job.name] then
      bad(file, "job '%s': duplicate name (also job #%d)", job.name, byname[job.name].index)
    end
    -- every field (check_job allows no other) named in the constructor,
    -- nil or not: the table is made with room for the runner's state too,
    -- instead of growing (and being rehashed) field by field
    local copy = { name = job.name, cmd = job.cmd, fn = job.fn, deps = {},
      retries = job.retries, timeout = job.timeout, env = job.env, cwd = job.cwd, index = i }
    for _, d in ipairs(job.deps or {}) do copy.deps[#copy.deps + 1] = d end
    list[#list + 1] = copy
    byname[job.name] = copy
  end
  local seen = {}   -- dep name -> the job it was last seen in (one table for all)
  for _, job in ipairs(list) do
    for _, d in ipairs(job.deps) do
      if not byname[d] then
        bad(file, "job '%s': dep '%s' is not a job in this file", job.name, d)
      end
      if d == job.name then bad(file, "job '%s': depends on itself", job.name) end
      if seen[d] == job then bad(file, "job '%s': dep '%s' listed twice", job.name, d) end
      seen[d] = job
    end
  end
  local cyc = find_cycle(list, byname)
  if cyc then bad(file, "job '%s': dependency cycle %s", cyc[1], table.concat(cyc, " -> ")) end
  return list, byname
end

-- FNV-1a, 64 bits, as 16 hex digits: enough to notice a changed
-- definition (the same digits on every VM)
local fnv = compat.fnv1a64

local function canon(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = canon(k) .. "=" .. canon(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "function" then
    -- stripped bytecode: moving a function in the file does not change it
    local ok, code = pcall(string.dump, v, true)
    return "fn:" .. (ok and code or tostring(v))
  elseif t == "string" then
    return ("%q"):format(v)
  end
  return tostring(v)
end

-- The definition that decides whether a succeeded job runs again.
function M.hash(job)
  local deps = {}
  for _, d in ipairs(job.deps) do deps[#deps + 1] = d end
  table.sort(deps)
  return fnv(canon({ name = job.name, cmd = job.cmd, fn = job.fn, env = job.env,
    cwd = job.cwd, deps = deps }))
end

-- A topological order (file order where the deps allow).
function M.order(list, byname)
  local out, done = {}, {}
  local function add(job)
    if done[job.name] then return end
    done[job.name] = true
    for _, d in ipairs(job.deps) do add(byname[d]) end
    out[#out + 1] = job
  end
  for _, job in ipairs(list) do add(job) end
  return out
end

return M

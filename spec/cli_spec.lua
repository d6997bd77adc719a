-- The `mproc` command, run as users run it: bin/mproc as a subprocess, in a
-- temporary directory, with jobs files written by the spec.
local mp = require "mproc"
local support = require "support"
local sp = mp.subprocess

local ROOT = os.getenv("PWD")
local MPROC = ROOT .. "/bin/mproc"
-- the same modules as this spec (build/ or build-asan/), as absolute paths
local function absolute(paths)
  return (paths:gsub("%./", ROOT .. "/"))
end
local CPATH = absolute(package.cpath)

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local dir   -- a fresh directory per test

local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
end

local function read(name)
  return support.read_file(name:sub(1, 1) == "/" and name or (dir .. "/" .. name))
end

local function exists(name)
  local f = io.open(dir .. "/" .. name, "r")
  if f then f:close() return true end
  return false
end

-- Runs `mproc args...` in dir; returns exit status, stdout, stderr.
local function mproc(args, timeout)
  local argv = { "env", "LUA_CPATH=" .. CPATH, MPROC }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = sp.run(argv, { cwd = dir, capture = true, timeout = timeout or 60 })
  return r.returncode, r.stdout, r.stderr
end

-- A minimal JSON reader (objects, arrays, strings, numbers, literals).
local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16))
          pos = pos + 6
        else
          out[#out + 1] = ({ n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" })[e] or e
          pos = pos + 2
        end
      else
        assert(c ~= "", "unterminated string")
        out[#out + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return t end
      while true do
        ws()
        local k = str()
        ws()
        assert(s:sub(pos, pos) == ":", "':' expected at " .. pos)
        pos = pos + 1
        t[k] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        assert(d == ",", "',' expected at " .. pos)
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        assert(d == ",", "',' expected at " .. pos)
      end
    elseif c == '"' then
      return str()
    elseif s:find("^true", pos) then pos = pos + 4 return true
    elseif s:find("^false", pos) then pos = pos + 5 return false
    elseif s:find("^null", pos) then pos = pos + 4 return nil
    end
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    assert(num and #num > 0, "bad JSON at " .. pos .. ": " .. s:sub(pos, pos + 20))
    pos = pos + #num
    return tonumber(num)
  end
  local v = value()
  ws()
  assert(pos > #s, "trailing text after JSON")
  return v
end

local function by_name(summary)
  local t = {}
  for _, j in ipairs(summary.jobs) do t[j.name] = j end
  return t
end

-- A mark for the command lines of one test's jobs: `sleep 31<mark>` sleeps
-- 31.x seconds, and the digits are this spec process's and the test's.
local function unique(n)
  return (".%d%05d9"):format(n, mp.getpid() % 100000)
end

-- Processes whose command line holds `mark`.
local function procs_with(mark)
  local found = {}
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") then
      local cmd = (support.read_file("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
      if cmd:find(mark, 1, true) and not cmd:find("ls /proc", 1, true) then
        found[#found + 1] = pid .. " " .. cmd
      end
    end
  end
  p:close()
  return found
end

local function no_procs_with(mark)
  return support.wait_until(function() return #procs_with(mark) == 0 end, 5)
end

describe("mproc (command)", function()
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. sh_quote(dir)))
  end)
  after_each(function()
    os.execute("rm -rf " .. sh_quote(dir))
  end)

  describe("help and usage", function()
    it("prints the usage for help and --help, exit 0", function()
      local code, out = mproc({ "help" })
      assert.equal(0, code)
      assert.matches("mproc run JOBS.lua", out, 1, true)
      code, out = mproc({ "--help" })
      assert.equal(0, code)
      assert.matches("--keep-going", out, 1, true)
    end)

    it("rejects an unknown command, an unknown option and a missing file with exit 2", function()
      local code, _, err = mproc({ "frobnicate" })
      assert.equal(2, code)
      assert.matches("unknown command 'frobnicate'", err, 1, true)
      write("jobs.lua", "return { jobs = {} }")
      code, _, err = mproc({ "run", "jobs.lua", "--keepgoing" })
      assert.equal(2, code)
      assert.matches("unknown option '--keepgoing'", err, 1, true)
      code, _, err = mproc({ "run" })
      assert.equal(2, code)
      assert.matches("no jobs file given", err, 1, true)
      code, _, err = mproc({ "run", "jobs.lua", "-j", "0" })
      assert.equal(2, code)
      assert.matches("-j must be an integer >= 1", err, 1, true)
      code, _, err = mproc({ "run", "jobs.lua", "--timeout", "soon" })
      assert.equal(2, code)
      assert.matches("--timeout must be a number", err, 1, true)
      code, _, err = mproc({ "run", "nothere.lua" })
      assert.equal(2, code)
      assert.matches("nothere.lua: cannot open the jobs file", err, 1, true)
    end)

    it("--url: cluster support is not available (exit 2) without mproc.cluster", function()
      if pcall(require, "mproc.cluster") then return end
      write("jobs.lua", "return { jobs = { { name = 'a', cmd = 'touch ran' } } }")
      local code, _, err = mproc({ "run", "jobs.lua", "--url", "redis://127.0.0.1:6379/0" })
      assert.equal(2, code)
      assert.matches("cluster support is not available", err, 1, true)
      assert.is_false(exists("ran"))
    end)

    it("--url runs shell and Lua jobs on mproc.cluster's Pool when it loads", function()
      if pcall(require, "mproc.cluster") then return end
      -- a stand-in with the Pool API (the cluster issue brings the real one)
      assert(os.execute("mkdir -p " .. sh_quote(dir .. "/fake/mproc")))
      write("fake/mproc/cluster.lua", [[
local mp = require "mproc"
return { Pool = function(opts)
  assert(opts.url == "redis://example:6379/0")
  io.open("pool-made", "w"):close()
  return mp.Pool(2)
end }]])
      write("jobs.lua", [[
return { jobs = {
  { name = "sh", cmd = "echo remote-out; echo remote-err >&2" },
  { name = "bad", cmd = "exit 5" },
  { name = "lua", fn = function() print("from lua") end, deps = { "sh" } },
} }]])
      local r = sp.run({ "env", "LUA_CPATH=" .. CPATH, "LUA_PATH=" .. dir .. "/fake/?.lua;;", MPROC,
        "run", "jobs.lua", "--url", "redis://example:6379/0", "--keep-going", "--json" },
        { cwd = dir, capture = true, timeout = 60 })
      assert.equal(1, r.returncode, r.stderr)
      assert.is_true(exists("pool-made"))
      local j = by_name(json_decode(r.stdout))
      assert.equal("ok", j.sh.status)
      assert.equal("remote-out\n", read(".mproc/logs/sh.out"))
      assert.equal("remote-err\n", read(".mproc/logs/sh.err"))
      assert.equal("failed", j.bad.status)
      assert.equal(5, j.bad.exit_code)
      assert.equal("ok", j.lua.status)
      assert.equal("from lua\n", read(".mproc/logs/lua.out"))
    end)

    it("--url runs shell and Lua jobs on real `mproc worker`s (private redis-server)", function()
      if not (pcall(require, "mproc.cluster")
              and support.exec_status(os.execute("command -v redis-server >/dev/null 2>&1"))) then
        return pending("redis-server or mproc.redis (libhiredis-dev) is not installed")
      end
      local sock = dir .. "/redis.sock"
      local server = support.redis_server(sock, dir)
      local worker = sp.Popen({ "env", "LUA_CPATH=" .. CPATH, "MPROC_AUTHKEY=k", MPROC, "worker",
        "--url", "unix:" .. sock, "--processes", "2" }, { stdout = "devnull", stderr = "devnull" })
      write("jobs.lua", [[
return { jobs = {
  { name = "sh", cmd = "echo remote-out; echo remote-err >&2" },
  { name = "bad", cmd = "exit 5" },
  { name = "lua", fn = function() print("from lua") end, deps = { "sh" } },
} }]])
      local r = sp.run({ "env", "LUA_CPATH=" .. CPATH, "MPROC_AUTHKEY=k", MPROC, "run", "jobs.lua",
        "--url", "unix:" .. sock, "--keep-going", "--json" }, { cwd = dir, capture = true,
        timeout = 60 })
      worker:terminate()
      worker:wait(15)
      server:terminate()
      server:wait(10)
      assert.equal(1, r.returncode, r.stderr)
      local j = by_name(json_decode(r.stdout))
      assert.equal("ok", j.sh.status)
      assert.equal("remote-out\n", read(".mproc/logs/sh.out"))
      assert.equal("remote-err\n", read(".mproc/logs/sh.err"))
      assert.equal("failed", j.bad.status)
      assert.equal(5, j.bad.exit_code)
      assert.equal("ok", j.lua.status)
      assert.equal("from lua\n", read(".mproc/logs/lua.out"))
      -- no authkey: said before anything runs
      local code, _, err = mproc({ "run", "jobs.lua", "--url", "unix:" .. sock })
      assert.equal(2, code)
      assert.matches("no authkey", err, 1, true)
    end)

    it("worker: cluster support is not available (exit 2) without mproc.cluster.worker", function()
      if pcall(require, "mproc.cluster.worker") then return end
      local code, _, err = mproc({ "worker", "--url", "redis://127.0.0.1:6379/0" })
      assert.equal(2, code)
      assert.matches("mproc worker: cluster support is not available", err, 1, true)
    end)
  end)

  describe("validation before anything runs", function()
    local cases = {
      { "a cycle", [[{ name = "a", cmd = "true", deps = {"c"} },
        { name = "b", cmd = "true", deps = {"a"} }, { name = "c", cmd = "true", deps = {"b"} }]],
        "dependency cycle a -> c -> b -> a" },
      { "a missing dep", [[{ name = "a", cmd = "true", deps = {"nope"} }]],
        "job 'a': dep 'nope' is not a job in this file" },
      { "a duplicate name", [[{ name = "a", cmd = "true" }, { name = "a", cmd = "false" }]],
        "job 'a': duplicate name" },
      { "an unknown field", [[{ name = "a", cmd = "true", depz = {} }]],
        "job 'a': unknown field 'depz'" },
      { "a bad retries", [[{ name = "a", cmd = "true", retries = "2" }]],
        "job 'a': 'retries' must be an integer >= 0" },
      { "a bad timeout", [[{ name = "a", cmd = "true", timeout = -1 }]],
        "job 'a': 'timeout' must be a number of seconds > 0" },
      { "a bad env", [[{ name = "a", cmd = "true", env = { X = {} } }]],
        "job 'a': 'env'.X must be a string" },
      { "a job with neither cmd nor fn", [[{ name = "a" }]],
        "job 'a': needs 'cmd'" },
      { "a job with both cmd and fn", [[{ name = "a", cmd = "true", fn = print }]],
        "job 'a': has both 'cmd' and 'fn'" },
      { "a job without a name", [[{ cmd = "true" }]],
        "job #2: 'name' must be a non-empty string" },
      { "a name that is not a file name", [[{ name = "../x", cmd = "true" }]],
        "job '../x': 'name' may only hold" },
      { "an empty argv", [[{ name = "a", cmd = {} }]],
        "job 'a': 'cmd' is an empty argv list" },
      { "a self dependency", [[{ name = "a", cmd = "true", deps = {"a"} }]],
        "job 'a': depends on itself" },
      -- (b's dep 'x' is also a's: listed twice is within one job only)
      { "a dep listed twice", [[{ name = "x", cmd = "true" },
        { name = "a", cmd = "true", deps = {"x"} },
        { name = "b", cmd = "true", deps = {"x", "x"} }]],
        "job 'b': dep 'x' listed twice" },
    }
    for _, c in ipairs(cases) do
      it("reports " .. c[1] .. " naming the file and the job, exit 2", function()
        write("jobs.lua", "return { jobs = {\n"
          .. "{ name = 'marker', cmd = 'touch ran' },\n" .. c[2] .. "\n} }\n")
        local code, out, err = mproc({ "run", "jobs.lua" })
        assert.equal(2, code)
        assert.equal("", out)
        assert.matches("^mproc run: jobs.lua: ", err)
        assert.matches(c[3], err, 1, true)
        assert.equal(1, select(2, err:gsub("\n", "")), "one line: " .. err)
        assert.is_false(exists("ran"))
      end)
    end

    it("reports a syntax error, an error while loading and a bad top level, exit 2", function()
      write("jobs.lua", "return { jobs = { { name = 'a', cmd = 'true' } }")
      local code, _, err = mproc({ "run", "jobs.lua" })
      assert.equal(2, code)
      assert.matches("jobs.lua:1:", err, 1, true)
      write("jobs.lua", "error('no config here')")
      code, _, err = mproc({ "run", "jobs.lua" })
      assert.equal(2, code)
      assert.matches("jobs.lua: error while loading: jobs.lua:1: no config here", err, 1, true)
      write("jobs.lua", "return { jobs = {}, job = {} }")
      code, _, err = mproc({ "run", "jobs.lua" })
      assert.equal(2, code)
      assert.matches("jobs.lua: unknown top-level field 'job'", err, 1, true)
      write("jobs.lua", "return 42")
      code, _, err = mproc({ "run", "jobs.lua" })
      assert.equal(2, code)
      assert.matches("jobs.lua: must return a table", err, 1, true)
    end)
  end)

  describe("running", function()
    it("runs jobs after their deps, logs their output, exit 0", function()
      write("jobs.lua", [[
local function step(name)
  return ("echo start-%s >> order; sleep 0.1; echo %s-out; echo %s-err >&2; echo end-%s >> order")
    :format(name, name, name, name)
end
return { jobs = {
  { name = "c", cmd = step("c"), deps = { "b" } },
  { name = "b", cmd = step("b"), deps = { "a" } },
  { name = "a", cmd = step("a") },
  { name = "d", cmd = step("d"), deps = { "a", "b" } },
} }]])
      local code, out, err = mproc({ "run", "jobs.lua", "-j", "4" })
      assert.equal(0, code, err)
      assert.equal("", out)
      local order = read("order")
      local function at(s) return assert(order:find(s, 1, true), s) end
      assert.is_true(at("end-a") < at("start-b"))
      assert.is_true(at("end-b") < at("start-c"))
      assert.is_true(at("end-b") < at("start-d"))
      assert.equal("a-out\n", read(".mproc/logs/a.out"))
      assert.equal("a-err\n", read(".mproc/logs/a.err"))
      -- not a terminal: one line per start and end
      assert.matches("mproc: start a\n", err, 1, true)
      assert.matches("mproc: ok c (", err, 1, true)
      assert.matches("mproc: 4 ok, 0 failed, 0 skipped, 0 cached in", err, 1, true)
    end)

    it("never runs more than -j jobs at once (timestamps written by the jobs)", function()
      local jobs = {}
      for i = 1, 6 do
        jobs[#jobs + 1] = ("{ name = 'j%d', cmd = 'echo \"s $(date +%%s%%N)\" >> times; "
          .. "sleep 0.3; echo \"e $(date +%%s%%N)\" >> times' },"):format(i)
      end
      write("jobs.lua", "return { jobs = {\n" .. table.concat(jobs, "\n") .. "\n} }")
      for _, j in ipairs({ 2, 3 }) do
        os.remove(dir .. "/times")
        local code, _, err = mproc({ "run", "jobs.lua", "-j", tostring(j) })
        assert.equal(0, code, err)
        local ev = {}
        for kind, t in read("times"):gmatch("(%a) (%d+)") do
          ev[#ev + 1] = { t = tonumber(t), d = kind == "s" and 1 or -1 }
        end
        assert.equal(12, #ev)
        table.sort(ev, function(a, b) if a.t ~= b.t then return a.t < b.t end return a.d < b.d end)
        local cur, max = 0, 0
        for _, e in ipairs(ev) do cur = cur + e.d; max = math.max(max, cur) end
        assert.is_true(max <= j, ("%d at once with -j %d"):format(max, j))
        assert.is_true(max >= 2, "jobs ran in parallel")
      end
    end)

    it("retries a failing job (its own retries, then --retries) and reports attempts", function()
      write("jobs.lua", [[
return { jobs = {
  { name = "flaky", retries = 2,
    cmd = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]" },
  { name = "bad", cmd = "echo attempt >> bad-count; echo nope >&2; exit 7" },
} }]])
      local code, out, err = mproc({ "run", "jobs.lua", "--keep-going", "--retries", "1",
        "--json" })
      assert.equal(1, code)
      local s = by_name(json_decode(out))
      assert.equal("ok", s.flaky.status)
      assert.equal(3, s.flaky.attempts)
      assert.equal("failed", s.bad.status)
      assert.equal(2, s.bad.attempts)
      assert.equal(7, s.bad.exit_code)
      assert.equal("attempt\nattempt\n", read("bad-count"))
      assert.matches("mproc: retry flaky: attempt 2", err, 1, true)
      -- the tail of a failed job's stderr is shown
      assert.matches("FAILED bad (exit 7; 2 attempts", err, 1, true)
      assert.matches("| nope", err, 1, true)
    end)

    it("ends a job at its timeout with its whole process group", function()
      local mark = unique(1)
      write("jobs.lua", ([[
return { jobs = {
  { name = "slow", timeout = 0.5, cmd = "sleep 31%s & sleep 32%s; echo never" },
  { name = "stubborn", timeout = 0.5, cmd = "trap '' TERM; sleep 33%s; echo never" },
  { name = "after", deps = { "slow" }, cmd = "touch ran" },
} }]]):format(mark, mark, mark))
      local t0 = mp.now and mp.now() or os.time()
      local code, out = mproc({ "run", "jobs.lua", "--keep-going", "--json" }, 30)
      local took = (mp.now and mp.now() or os.time()) - t0
      assert.equal(1, code)
      assert.is_true(took < 15, "took " .. took)
      local s = by_name(json_decode(out))
      assert.equal("failed", s.slow.status)
      assert.matches("timed out after 0.5 s", s.slow.error, 1, true)
      assert.equal("failed", s.stubborn.status)
      assert.equal("skipped", s.after.status)
      assert.is_false(exists("ran"))
      assert.is_true(no_procs_with(mark), table.concat(procs_with(mark), "\n"))
      -- a global --timeout applies to jobs without their own
      write("jobs.lua", "return { jobs = { { name = 'x', cmd = 'sleep 34" .. mark .. "' } } }")
      code = mproc({ "run", "jobs.lua", "--timeout", "0.3" }, 30)
      assert.equal(1, code)
      assert.is_true(no_procs_with(mark))
    end)

    it("kills what a job leaves running in its group when it ends", function()
      local mark = unique(3)
      write("jobs.lua", ([[
return { jobs = {
  { name = "ok-bg", cmd = "sleep 61%s > /dev/null 2>&1 & echo started" },
  { name = "bad-bg", cmd = "sleep 62%s > /dev/null 2>&1 & exit 3" },
} }]]):format(mark, mark))
      local code, _, err = mproc({ "run", "jobs.lua", "--keep-going" })
      assert.equal(1, code, err)
      assert.is_true(no_procs_with(mark), table.concat(procs_with(mark), "\n"))
    end)

    it("passes env and cwd to shell jobs; an argv cmd gets no shell", function()
      assert(os.execute("mkdir -p " .. sh_quote(dir .. "/sub")))
      write("jobs.lua", [[
return { jobs = {
  { name = "e", cmd = "echo $GREETING $HOME_SET > out", env = { GREETING = "hi", HOME_SET = 1 },
    cwd = "sub" },
  { name = "v", cmd = { "sh", "-c", "echo \"$1\" > argv", "x", "a b;c" } },
} }]])
      local code, _, err = mproc({ "run", "jobs.lua" })
      assert.equal(0, code, err)
      assert.equal("hi 1\n", read("sub/out"))
      assert.equal("a b;c\n", read("argv"))
    end)

    it("no --keep-going: nothing starts after a failure, dependents skipped (exit 1)", function()
      write("jobs.lua", [[
return { jobs = {
  { name = "bad", cmd = "exit 1" },
  { name = "dep", cmd = "touch dep-ran", deps = { "bad" } },
  { name = "late", cmd = "touch late-ran", deps = { "slowok" } },
  { name = "slowok", cmd = "sleep 0.3" },
} }]])
      local code, out = mproc({ "run", "jobs.lua", "-j", "2", "--json" })
      assert.equal(1, code)
      local s = by_name(json_decode(out))
      assert.equal("failed", s.bad.status)
      assert.equal("skipped", s.dep.status)
      assert.equal("ok", s.slowok.status)      -- was running: it finished
      assert.equal("skipped", s.late.status)   -- not started after the failure
      assert.is_false(exists("dep-ran"))
      assert.is_false(exists("late-ran"))
      -- with --keep-going the independent branch goes on
      code, out = mproc({ "run", "jobs.lua", "-j", "2", "--json", "--keep-going" })
      assert.equal(1, code)
      s = by_name(json_decode(out))
      assert.equal("ok", s.late.status)
      assert.equal("skipped", s.dep.status)
    end)

    it("--json prints one summary object on stdout", function()
      write("jobs.lua", [[
return { jobs = {
  { name = "a", cmd = "true" },
  { name = "b", cmd = "exit 3", deps = { "a" } },
  { name = "c", cmd = "true", deps = { "b" } },
} }]])
      local code, out = mproc({ "run", "jobs.lua", "--json" })
      assert.equal(1, code)
      local s = json_decode(out)
      assert.equal("jobs.lua", s.file)
      assert.equal(1, s.exit)
      assert.equal("number", type(s.seconds))
      assert.same({ ok = 1, failed = 1, skipped = 1, cached = 0, interrupted = 0 }, s.counts)
      assert.equal(3, #s.jobs)
      local j = by_name(s)
      assert.same({ "ok", 1, 0 }, { j.a.status, j.a.attempts, j.a.exit_code })
      assert.same({ "failed", 1, 3 }, { j.b.status, j.b.attempts, j.b.exit_code })
      assert.same({ "skipped", 0 }, { j.c.status, j.c.attempts })
      assert.equal("number", type(j.a.seconds))
    end)

    it("--dry-run shows the plan and runs nothing", function()
      write("jobs.lua", [[
return { jobs = {
  { name = "b", cmd = "touch ran-b", deps = { "a" } },
  { name = "a", cmd = { "touch", "ran-a" } },
  { name = "f", fn = function() end },
} }]])
      local code, out = mproc({ "run", "jobs.lua", "--dry-run" })
      assert.equal(0, code)
      assert.matches("would run a: touch ran%-a\nwould run b %(after a%): touch ran%-b\n", out)
      assert.matches("would run f: <lua function>", out, 1, true)
      assert.is_false(exists("ran-a"))
      assert.is_false(exists("ran-b"))
      assert.is_false(exists(".mproc"))
      code, out = mproc({ "run", "jobs.lua", "--dry-run", "--json" })
      assert.equal(0, code)
      local s = json_decode(out)
      assert.is_true(s.dry_run)
      assert.equal("would_run", by_name(s).b.status)
      assert.same({ "a" }, by_name(s).b.deps)
    end)

    it("runs examples/jobs.lua, then with --resume skips it all", function()
      local code, _, err = mproc({ "run", ROOT .. "/examples/jobs.lua", "-j", "4",
        "--resume", "state.lua" })
      assert.equal(0, code, err)
      assert.equal("4 files, 8000 lines\n", read(".mproc/example/summary.txt"))
      assert.equal("summary: 8000 lines checked\n", read(".mproc/logs/summary.out"))
      local out
      code, out = mproc({ "run", ROOT .. "/examples/jobs.lua", "--resume", "state.lua", "--json" })
      assert.equal(0, code)
      assert.equal(14, json_decode(out).counts.cached)
    end)

    it("writes logs to --log-dir", function()
      write("jobs.lua", "return { jobs = { { name = 'a', cmd = 'echo hi' } } }")
      local code = mproc({ "run", "jobs.lua", "--log-dir", "logs/here" })
      assert.equal(0, code)
      assert.equal("hi\n", read("logs/here/a.out"))
    end)
  end)

  describe("--resume", function()
    local function jobs(b_cmd)
      write("jobs.lua", ([[
return { jobs = {
  { name = "a", cmd = "echo a >> runs" },
  { name = "b", cmd = %q, deps = { "a" } },
  { name = "c", cmd = "echo c >> runs", deps = { "b" } },
  { name = "d", cmd = "echo d >> runs" },
  { name = "f", fn = function() return true end },
} }]]):format(b_cmd))
    end

    it("skips succeeded jobs; a changed job and its dependents run again", function()
      jobs("echo b >> runs")
      local code, _, err = mproc({ "run", "jobs.lua", "--resume", "state.lua", "-j", "1" })
      assert.equal(0, code, err)
      assert.equal("a\nb\nc\nd\n", read("runs"))
      os.remove(dir .. "/runs")
      local out
      code, out = mproc({ "run", "jobs.lua", "--resume", "state.lua", "--json" })
      assert.equal(0, code)
      assert.is_nil(read("runs"))
      assert.equal(5, json_decode(out).counts.cached)
      jobs("echo B >> runs")
      code, out = mproc({ "run", "jobs.lua", "--resume", "state.lua", "--json", "-j", "1" })
      assert.equal(0, code)
      assert.equal("B\nc\n", read("runs"))
      local s = by_name(json_decode(out))
      assert.equal("cached", s.a.status)
      assert.equal("ok", s.b.status)
      assert.equal("cached", s.d.status)
    end)

    it("runs a failed job again and keeps what succeeded", function()
      jobs("exit 1")
      local code = mproc({ "run", "jobs.lua", "--resume", "state.lua", "--keep-going", "-j", "1" })
      assert.equal(1, code)
      assert.equal("a\nd\n", read("runs"))
      os.remove(dir .. "/runs")
      jobs("echo b >> runs")
      code = mproc({ "run", "jobs.lua", "--resume", "state.lua", "-j", "1" })
      assert.equal(0, code)
      assert.equal("b\nc\n", read("runs"))
    end)

    it("rejects a state file that is not one (exit 2)", function()
      jobs("true")
      write("state.lua", "garbage(")
      local code, _, err = mproc({ "run", "jobs.lua", "--resume", "state.lua" })
      assert.equal(2, code)
      assert.matches("state.lua: not a mproc state file", err, 1, true)
    end)
  end)

  describe("Lua function jobs", function()
    -- issue 15's bench: two new files per job cost more than a short Lua
    -- job (1 000 diamonds ran 1.41x the same work by hand on a Pool)
    it("make their logs only when they write or fail; a previous run's go", function()
      write("jobs.lua", [[
return { jobs = {
  { name = "quiet", fn = function() return true end },
  { name = "talks", fn = function() io.write("a", 1, "\n"); print("b") end },
} }]])
      -- as a previous run left them
      os.execute("cd " .. sh_quote(dir) .. " && mkdir -p .mproc/logs"
        .. " && echo stale > .mproc/logs/quiet.out && echo stale > .mproc/logs/quiet.err")
      assert.is_true(exists(".mproc/logs/quiet.out"))
      local code, _, err = mproc({ "run", "jobs.lua" }, 40)
      assert.equal(0, code, err)
      assert.is_false(exists(".mproc/logs/quiet.out"))
      assert.is_false(exists(".mproc/logs/quiet.err"))
      assert.equal("a1\nb\n", read(".mproc/logs/talks.out"))
      assert.is_false(exists(".mproc/logs/talks.err"))
    end)

    it("a retry's logs replace the failed attempt's, in a log directory made by the run", function()
      -- (a first attempt in a new log directory has no old logs to remove:
      -- a later attempt has)
      write("jobs.lua", [[
return { jobs = {
  { name = "again", retries = 1, fn = function(job)
      if job.attempt == 1 then print("first attempt"); error("once") end
    end },
} }]])
      assert.is_false(exists("new-logs"))
      local code, _, err = mproc({ "run", "jobs.lua", "--log-dir", "new-logs/sub" }, 40)
      assert.equal(0, code, err)
      assert.matches("retry again: attempt 2", err, 1, true)
      assert.is_false(exists("new-logs/sub/again.out"))
      assert.is_false(exists("new-logs/sub/again.err"))
    end)

    it("run on a pool: print goes to .out, an error fails the job with its traceback", function()
      write("jobs.lua", [[
local mp = require "mproc"
return { jobs = {
  { name = "hello",
    fn = function(job) print("hello from", job.name, job.attempt, job.out ~= nil) end },
  { name = "boom", fn = function() error("kaboom") end, deps = { "hello" } },
  { name = "no", fn = function() return false end },
  { name = "slow", fn = function() mp.sleep(30) end, timeout = 0.5 },
  { name = "after", cmd = "touch ran", deps = { "boom" } },
} }]])
      local code, out, err = mproc({ "run", "jobs.lua", "--keep-going", "--json" }, 40)
      assert.equal(1, code, err)
      local s = by_name(json_decode(out))
      assert.equal("ok", s.hello.status)
      assert.equal("hello from\thello\t1\ttrue\n", read(".mproc/logs/hello.out"))
      assert.equal("failed", s.boom.status)
      assert.matches("jobs.lua:5: kaboom", read(".mproc/logs/boom.err"), 1, true)
      assert.matches("jobs.lua:5: kaboom", err, 1, true)
      assert.equal("failed", s.no.status)
      assert.equal("returned false", s.no.error)
      assert.equal("failed", s.slow.status)
      assert.matches("timed out", s.slow.error, 1, true)
      assert.equal("skipped", s.after.status)
      assert.is_false(exists("ran"))
    end)
  end)

  describe("signals", function()
    local function start(args)
      local argv = { "env", "LUA_CPATH=" .. CPATH, MPROC, "run" }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      return sp.Popen(argv, { cwd = dir, stdout = "devnull", stderr = "devnull" })
    end

    for _, sig in ipairs({ { "SIGINT", 2 }, { "SIGTERM", 15 } }) do
      it(sig[1] .. ": nothing new starts, running groups end, state written, exit 130", function()
        local mark = unique(sig[2])
        write("jobs.lua", ([[
local mp = require "mproc"
return { jobs = {
  { name = "quick", cmd = "touch quick-ran" },
  { name = "s1", cmd = "sleep 41%s & sleep 42%s", deps = { "quick" } },
  { name = "s2", cmd = "trap '' TERM; touch s2-up; sleep 43%s", deps = { "quick" } },
  { name = "lua", fn = function() mp.sleep(30) end, deps = { "quick" } },
  { name = "next", cmd = "touch next-ran", deps = { "s1" } },
  { name = "queued", cmd = "touch queued-ran", deps = { "quick" } },
} }]]):format(mark, mark, mark))
        local p = start({ "jobs.lua", "-j", "3", "--resume", "state.lua", "--json" })
        assert.is_true(support.wait_until(function()
          return #procs_with(mark) >= 3 and exists("s2-up")
        end, 20), "jobs did not start")
        local t0 = os.time()
        p:send_signal(sig[2])
        local ok, code = pcall(p.wait, p, 20)
        if not ok then p:kill() p:wait() end
        assert.is_true(ok, "mproc did not end after " .. sig[1])
        assert.equal(130, code)
        assert.is_true(os.time() - t0 < 15)
        assert.is_true(no_procs_with(mark), table.concat(procs_with(mark), "\n"))
        assert.is_false(exists("next-ran"))
        assert.is_false(exists("queued-ran"))
        assert.matches('%["quick"%] = "%x+"', read("state.lua"))
        assert.is_nil(read("state.lua"):find("s1", 1, true))
      end)
    end
  end)

  describe("on a terminal (under tmux)", function()
    local function tmux_ok()
      return support.exec_status(os.execute("command -v tmux >/dev/null 2>&1")) == true
    end

    it("redraws a live area in place and shows a failed job's stderr", function()
      assert.is_true(tmux_ok(), "tmux is needed (make test installs it)")
      write("jobs.lua", [[
return { jobs = {
  { name = "broken", cmd = "echo broken-detail-text >&2; exit 4" },
  { name = "slow1", cmd = "sleep 3" },
  { name = "slow2", cmd = "sleep 3" },
  { name = "later", cmd = "true", deps = { "slow1" } },
} }]])
      local sock = "mproc-spec-" .. mp.getpid() .. "-" .. os.time()
      local function tmux(args)
        return sp.run(("tmux -L %s %s"):format(sock, args),
          { shell = true, capture = true, timeout = 10 })
      end
      local cmd = ("cd %s && env LUA_CPATH=%s %s run jobs.lua -j 2 --keep-going; "
        .. "echo EXIT=$?; sleep 30")
        :format(sh_quote(dir), sh_quote(CPATH), sh_quote(MPROC))
      local ok, err = pcall(function()
        local r = tmux("-f /dev/null new-session -d -x 100 -y 30 " .. sh_quote(cmd))
        assert.equal(0, r.returncode, r.stderr)
        local screen
        assert.is_true(support.wait_until(function()
          screen = tmux("capture-pane -p").stdout or ""
          return screen:find("running 2", 1, true) ~= nil and screen:find("slow2", 1, true) ~= nil
        end, 15), "no live area: " .. tostring(screen))
        -- the area: progress line, counts, the running jobs with elapsed time
        assert.matches("jobs %[[#.]+%]", screen)
        assert.matches("slow1%s+00:0%d", screen)
        assert.matches("broken-detail-text", screen, 1, true)
        assert.matches("FAILED broken", screen, 1, true)
        -- no line per job on a terminal: one area redrawn, not appended
        local _, nareas = screen:gsub("ok %d+  failed", "")
        assert.equal(1, nareas)
        assert.is_true(support.wait_until(function()
          screen = tmux("capture-pane -p").stdout or ""
          return screen:find("EXIT=", 1, true) ~= nil
        end, 20), "did not finish: " .. tostring(screen))
        assert.matches("EXIT=1", screen, 1, true)
        assert.matches("100%% 4/4", screen)
        assert.matches("mproc: 3 ok, 1 failed, 0 skipped, 0 cached", screen, 1, true)
        _, nareas = screen:gsub("ok %d+  failed", "")
        assert.equal(1, nareas)
      end)
      tmux("kill-server")
      assert(ok, err)
    end)

    it("Ctrl-C at the terminal stops the run: exit 130, no job left", function()
      assert.is_true(tmux_ok(), "tmux is needed (make test installs it)")
      local mark = unique(7)
      write("jobs.lua", ([[
return { jobs = {
  { name = "s1", cmd = "sleep 51%s" },
  { name = "s2", cmd = "trap '' INT TERM; sleep 52%s" },
  { name = "s3", cmd = "touch s3-ran", deps = { "s1" } },
} }]]):format(mark, mark))
      local sock = "mproc-spec-" .. mp.getpid() .. "-c" .. os.time()
      local function tmux(args)
        return sp.run(("tmux -L %s %s"):format(sock, args),
          { shell = true, capture = true, timeout = 10 })
      end
      local cmd = ("cd %s && env LUA_CPATH=%s %s run jobs.lua -j 2; echo EXIT=$?; sleep 30")
        :format(sh_quote(dir), sh_quote(CPATH), sh_quote(MPROC))
      local ok, err = pcall(function()
        local r = tmux("-f /dev/null new-session -d -x 100 -y 30 " .. sh_quote(cmd))
        assert.equal(0, r.returncode, r.stderr)
        assert.is_true(support.wait_until(function() return #procs_with(mark) >= 2 end, 15),
          "jobs did not start")
        tmux("send-keys C-c")
        local screen
        assert.is_true(support.wait_until(function()
          screen = tmux("capture-pane -p").stdout or ""
          return screen:find("EXIT=", 1, true) ~= nil
        end, 20), "did not stop: " .. tostring(screen))
        assert.matches("EXIT=130", screen, 1, true)
        assert.matches("mproc: SIGINT: stopping", screen, 1, true)
        assert.matches("2 interrupted", screen, 1, true)
        assert.is_true(no_procs_with(mark), table.concat(procs_with(mark), "\n"))
        assert.is_false(exists("s3-ran"))
      end)
      tmux("kill-server")
      assert(ok, err)
    end)
  end)
end)

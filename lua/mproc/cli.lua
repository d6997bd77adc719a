-- The `mproc` command (bin/mproc): `mproc run jobs.lua ...` runs a jobs file
-- (docs/cli.md is the contract), `mproc worker ...` serves a cluster queue.
-- Shell jobs start in a session of their own (Popen's start_new_session:
-- setsid in the spawned child, no extra program), so a timeout or an
-- interrupt ends the whole process group.
local mp = require "mproc"
local core = require "mproc.core"
local sched = require "mproc.sched"
local jobsfile = require "mproc.cli.jobs"
local status = require "mproc.cli.status"
local compat = require "mproc.compat"

local now = core.now
local idiv, math_type, unpack, move = compat.idiv, compat.math_type, compat.unpack, compat.move
-- a wait inside mp.run under pcall: Lua 5.1 cannot yield through pcall
local wpcall = compat.pcall
local M = {}

local GRACE = 2          -- seconds between SIGTERM and SIGKILL for a group
local SIGKILL = 9
local SIGTERM = core.SIGTERM

local USAGE = [[
usage: mproc run JOBS.lua [-j N] [--keep-going] [--dry-run] [--retries N]
                          [--timeout S] [--log-dir DIR] [--resume STATE]
                          [--url redis://...] [--json]
       mproc worker --url redis://HOST:PORT/DB [--queue NAME] [--processes N]
                    [--authkey-file F] [-v]
       mproc help

Runs the jobs of a Lua jobs file in parallel, each as soon as its deps have
succeeded (docs/cli.md). Exit status: 0 all succeeded, 1 some failed or were
skipped, 2 bad input, 130 interrupted.
]]

local Usage = {}   -- error marker: bad command line (exit 2)
local ARRAY = {}   -- metatable marking a table that json() writes as a list

local function usage_error(fmt, ...)
  error(setmetatable({ msg = fmt:format(...) }, Usage), 0)
end

-- {{{ command line
local function parse_run(argv)
  local o = { keep_going = false, dry_run = false, json = false, log_dir = ".mproc/logs" }
  local i = 1
  local function value(name, inline)
    if inline then return inline end
    i = i + 1
    local v = argv[i]
    if v == nil then usage_error("option %s needs a value", name) end
    return v
  end
  local function int(name, v, min)
    local n = compat.tointeger(tonumber(v))
    if not n or n < min then usage_error("%s must be an integer >= %d, got '%s'", name, min, v) end
    return n
  end
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-j" or name == "--jobs" then
      o.jobs = int("-j", value(name, inline), 1)
    elseif a:match("^%-j%d+$") then
      o.jobs = int("-j", a:sub(3), 1)
    elseif name == "--keep-going" or name == "-k" then o.keep_going = true
    elseif name == "--dry-run" or name == "-n" then o.dry_run = true
    elseif name == "--json" then o.json = true
    elseif name == "--retries" then o.retries = int("--retries", value(name, inline), 0)
    elseif name == "--timeout" then
      local v = value(name, inline)
      local t = tonumber(v)
      if not t or t ~= t or t <= 0 then
        usage_error("--timeout must be a number of seconds > 0, got '%s'", v)
      end
      o.timeout = t
    elseif name == "--log-dir" then o.log_dir = value(name, inline)
    elseif name == "--resume" then o.resume = value(name, inline)
    elseif name == "--url" then o.url = value(name, inline)
    elseif name == "-h" or name == "--help" then o.help = true
    elseif a:sub(1, 1) == "-" and a ~= "-" then usage_error("unknown option '%s'", a)
    elseif o.file == nil then o.file = a
    else usage_error("unexpected argument '%s' (one jobs file only)", a) end
    i = i + 1
  end
  if not o.help and o.file == nil then usage_error("no jobs file given") end
  return o
end
-- }}}

-- {{{ small helpers
local function json_str(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r' }
    return map[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if v == nil or v == json then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if math_type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return ("%.3f"):format(v)
  elseif t == "string" then return json_str(v)
  elseif t == "table" then
    if v[1] ~= nil or getmetatable(v) == ARRAY then
      local parts = {}
      for _, x in ipairs(v) do parts[#parts + 1] = json(x) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local oa, ob = (v.__order or {})[a] or 99, (v.__order or {})[b] or 99
      if oa ~= ob then return oa < ob end
      return a < b
    end)
    local parts = {}
    for _, k in ipairs(keys) do
      if k ~= "__order" then parts[#parts + 1] = json_str(k) .. ":" .. json(v[k]) end
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return json_str(tostring(v))
end
M._json = json

-- "dir", "missing" (nothing there: ENOENT) or nil (a file, no access...)
local function dir_state(path)
  local f, _, errno = io.open(path .. "/.", "r")
  if f then
    f:close()
    return "dir"
  end
  return errno == 2 and "missing" or nil
end

local function mkdir_p(dir)
  if dir_state(dir) == "dir" then return true end
  return compat.succeeded("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
end

local function read_state(path)
  local f = io.open(path, "r")
  if not f then return {} end
  local s = f:read("*a")
  f:close()
  local chunk = compat.load(s, "=" .. path, "t", {})
  local ok, t = pcall(chunk or error)
  if not ok or type(t) ~= "table" or type(t.jobs) ~= "table" then
    error({ bad_input = path .. ": not a mproc state file (remove it to start afresh)" }, 0)
  end
  return t.jobs
end

local function write_state(path, done)
  local names = {}
  for name in pairs(done) do names[#names + 1] = name end
  table.sort(names)
  local parts = { "-- mproc run --resume state: succeeded jobs and the hash of their definition\n",
    "return { version = 1, jobs = {\n" }
  for _, name in ipairs(names) do
    parts[#parts + 1] = ("  [%q] = %q,\n"):format(name, done[name])
  end
  parts[#parts + 1] = "} }\n"
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  f:write(table.concat(parts))
  f:close()
  return os.rename(tmp, path)
end
-- }}}

-- {{{ running one attempt
-- Runs in a pool worker: print and io.write go to the job's .out file
-- (info.out).  logs false (a cluster worker, on another machine): what
-- print writes is sent back as a third result.  fresh: the job can have
-- no logs yet (its first attempt, in a log directory this run made).
local function fn_runner(fn, info, logs, fresh)
  local out_path = logs and info.out
  -- Its logs are made when it first writes (print, io.write) or fails: a
  -- new file can cost more than a short job.  A previous run's or
  -- attempt's go first (a failed unlink costs a few microseconds too).
  if logs and not fresh then
    os.remove(out_path)
    os.remove(info.err)
  end
  local buf = {}
  local out
  local saved_print, saved_write = print, io.write
  local function put(...)
    if not out_path then
      for k = 1, select("#", ...) do buf[#buf + 1] = (select(k, ...)) end
      return
    end
    if out == nil then out = io.open(out_path, "w") or false end
    if out then
      out:write(...)
      out:flush()
    end
  end
  rawset(_G, "print", function(...)
    local n, parts = select("#", ...), {}
    for k = 1, n do parts[k] = tostring((select(k, ...))) end
    put(table.concat(parts, "\t"), "\n")
  end)
  rawset(io, "write", function(...)
    local n, parts = select("#", ...), {}
    for k = 1, n do
      local v = select(k, ...)
      if type(v) ~= "string" and type(v) ~= "number" then
        error(("bad argument #%d to 'write' (string expected, got %s)"):format(k, type(v)), 2)
      end
      parts[k] = v
    end
    put(unpack(parts, 1, n))
    return io.stdout
  end)
  local ok, r = compat.xpcall(fn, debug.traceback, info)
  rawset(_G, "print", saved_print)
  rawset(io, "write", saved_write)
  if out then out:close() end
  local captured = table.concat(buf)
  if not ok then
    -- the frames below the job's own function are ours and the pool's
    r = tostring(r)
    -- (on Lua 5.1 compat.xpcall adds a tail call line just above)
    local cut = r:find("\n\t%(tail call%): %?\n\t%[C%]: in function 'xpcall'")
      or r:find("\n\t%[C%]: in function 'xpcall'")
    return false, cut and r:sub(1, cut - 1) or r, captured
  end
  if r == false then return false, "returned false", captured end
  return true, nil, captured
end

-- On a cluster worker: a shell job, its output sent back.
local function remote_shell(argv, opts)
  local sp = require("mproc").subprocess
  -- (a plain pcall: this function travels to the worker, and a worker's
  -- task is no mp.run task)
  local ok, r = pcall(sp.run, argv, opts)
  if not ok then return { error = tostring(r) } end
  return { returncode = r.returncode, stdout = r.stdout, stderr = r.stderr }
end

local function shell_argv(job)
  local argv = {}
  if job.env then
    local keys = {}
    for k in pairs(job.env) do keys[#keys + 1] = k end
    table.sort(keys)
    argv[#argv + 1] = "env"
    for _, k in ipairs(keys) do argv[#argv + 1] = k .. "=" .. tostring(job.env[k]) end
  end
  if type(job.cmd) == "string" then
    argv[#argv + 1] = "/bin/sh"; argv[#argv + 1] = "-c"; argv[#argv + 1] = job.cmd
  else
    for _, a in ipairs(job.cmd) do argv[#argv + 1] = tostring(a) end
  end
  return argv
end

local function write_file(path, s)
  local f = io.open(path, "w")
  if f then f:write(s or "") f:close() end
end
-- }}}

local function run_cmd(o)
  -- --url: the cluster issue provides mproc.cluster; until then, say so.
  local cluster
  if o.url then
    local ok, mod = pcall(require, "mproc.cluster")
    if not ok or type(mod) ~= "table" or type(mod.Pool) ~= "function" then
      io.stderr:write("mproc run: --url: cluster support is not available "
        .. "(the module mproc.cluster is not installed)\n")
      return 2
    end
    cluster = mod
  end

  local list, byname = jobsfile.load(o.file)
  local order = jobsfile.order(list, byname)
  local nprocs = o.jobs or mp.cpu_count()
  local prev = o.resume and read_state(o.resume) or {}

  -- Per job run state.
  local hashes, done_state = {}, {}
  for _, job in ipairs(order) do
    job.retries = job.retries or o.retries or 0
    job.timeout = job.timeout or o.timeout
    job.status, job.attempts, job.seconds = "pending", 0, 0
    job.out_path = o.log_dir .. "/" .. job.name .. ".out"
    job.err_path = o.log_dir .. "/" .. job.name .. ".err"
    if o.resume then hashes[job.name] = jobsfile.hash(job) end
    -- cached: it and every dep succeeded before with the same definitions
    local cached = o.resume and prev[job.name] == hashes[job.name]
    for _, d in ipairs(job.deps) do
      if byname[d].status ~= "cached" then cached = false end
    end
    if cached then job.status = "cached"; done_state[job.name] = hashes[job.name] end
  end

  if o.dry_run then
    local out = {}
    for _, job in ipairs(order) do
      local what = type(job.cmd) == "string" and job.cmd
        or job.cmd and table.concat(shell_argv({ cmd = job.cmd }), " ")
        or "<lua function>"
      if o.json then
        out[#out + 1] = { name = job.name,
          status = job.status == "cached" and "cached" or "would_run",
          deps = setmetatable(job.deps, ARRAY) }
      else
        io.stdout:write(("%-9s %s%s: %s\n"):format(
          job.status == "cached" and "cached" or "would run",
          job.name, #job.deps > 0 and (" (after " .. table.concat(job.deps, ", ") .. ")") or "",
          what))
      end
    end
    if o.json then
      io.stdout:write(json({ file = o.file, dry_run = true, jobs = out }), "\n")
    end
    return 0
  end

  -- a log directory made now holds no logs of earlier runs to remove
  local fresh_logs = dir_state(o.log_dir) == "missing"
  if not mkdir_p(o.log_dir) then
    io.stderr:write(("mproc run: cannot create the log directory %s\n"):format(o.log_dir))
    return 2
  end

  local run = { total = #order, t0 = now(), running = {}, nrunning = 0,
    counts = { ok = 0, failed = 0, skipped = 0, cached = 0, interrupted = 0 } }
  local ui = status.new(run, {})
  local stopping, interrupted, stop_at = false, false, nil
  local state_dirty = false

  local nfn = 0
  for _, job in ipairs(order) do
    if job.status == "cached" then run.counts.cached = run.counts.cached + 1 end
    if job.fn or cluster then nfn = nfn + 1 end
  end
  local pool
  if cluster and nfn > 0 then
    local ok, p = wpcall(cluster.Pool, { url = o.url })
    if not ok then
      io.stderr:write("mproc run: --url: ", tostring(p), "\n")
      return 2
    end
    pool = p
  elseif nfn > 0 then
    pool = mp.Pool(math.min(nprocs, nfn))
  end

  local dependents = {}
  for _, job in ipairs(order) do
    for _, d in ipairs(job.deps) do
      dependents[d] = dependents[d] or {}
      table.insert(dependents[d], job)
    end
  end

  local function finish(job, st, why)
    job.status, job.why = st, why
    run.counts[st] = run.counts[st] + 1
  end

  local function skip_dependents(job)
    for _, dj in ipairs(dependents[job.name] or {}) do
      if dj.status == "pending" then
        finish(dj, "skipped", ("dep '%s' %s"):format(job.name,
          job.status == "failed" and "failed" or "was " .. job.status))
        ui.ended(dj, {})
        skip_dependents(dj)
      end
    end
  end

  -- One attempt of a shell job: returns ok, why, exit code.
  local function attempt_shell(job)
    local outf, e1 = io.open(job.out_path, "w")
    local errf, e2 = io.open(job.err_path, "w")
    if not outf or not errf then
      if outf then outf:close() end
      if errf then errf:close() end
      return false, "cannot open its log files: " .. tostring(e1 or e2)
    end
    local ok, p = pcall(mp.subprocess.Popen, shell_argv(job),
      { stdin = "devnull", stdout = outf, stderr = errf, cwd = job.cwd,
        start_new_session = true })
    outf:close()
    if not ok then
      local msg = tostring(p)
      errf:write("mproc: cannot start the job: ", msg, "\n")
      errf:close()
      return false, "could not start (" .. msg .. ")"
    end
    errf:close()
    job.pid = p.pid
    local deadline = job.timeout and (job.started + job.timeout)
    local term_at, timed_out = nil, false
    while true do
      local w = wpcall(p.wait, p, 0.2)
      if w then break end
      local t = now()
      if not term_at and (stopping and interrupted or (deadline and t >= deadline)) then
        timed_out = not interrupted
        core.kill(-p.pid, SIGTERM)
        term_at = t
      elseif term_at and t - term_at >= GRACE then
        core.kill(-p.pid, SIGKILL)
      end
    end
    -- whatever the job left in its group goes with it
    core.kill(-p.pid, SIGKILL)
    job.pid = nil
    local code = p.returncode
    job.exit_code = code
    if timed_out then return false, ("timed out after %g s"):format(job.timeout), code end
    if code == 0 then return true, nil, 0 end
    if code < 0 then return false, ("killed by signal %d"):format(-code), code end
    return false, ("exit %d"):format(code), code
  end

  -- Submits one attempt of a job to the pool; returns its AsyncResult.
  local function submit_pool(job)
    if job.fn then
      local args = { job.fn, { name = job.name, attempt = job.attempt, env = job.env,
        cwd = job.cwd, out = job.out_path, err = job.err_path }, not cluster,
        fresh_logs and job.attempt == 1 }
      if cluster then write_file(job.err_path, "") end
      return pool:apply_async(fn_runner, args, { timeout = job.timeout })
    end
    local argv = shell_argv(job)
    return pool:apply_async(remote_shell, { argv, { capture = true, cwd = job.cwd,
      timeout = job.timeout } })
  end

  -- The outcome of a finished pool attempt: ok, why, exit code.
  local function pool_outcome(job, r)
    local ok, a, b, captured = wpcall(r.get, r)
    if ok and cluster and job.fn then write_file(job.out_path, captured or "") end
    if job.cmd then
      if not ok then return false, tostring(a) end
      write_file(job.out_path, a.stdout)
      write_file(job.err_path, (a.stderr or "") .. (a.error and (a.error .. "\n") or ""))
      job.exit_code = a.returncode
      if a.error then return false, a.error end
      if a.returncode == 0 then return true, nil, 0 end
      return false, ("exit %d"):format(a.returncode), a.returncode
    end
    if ok and a then return true end
    if ok then
      write_file(job.err_path, tostring(b) .. "\n")
      return false, b == "returned false" and b or ("error: " .. tostring(b):match("[^\n]*"))
    end
    write_file(job.err_path, tostring(a) .. "\n")
    if mp.is_error(a, "Timeout") then return false, ("timed out after %g s"):format(job.timeout) end
    if mp.is_error(a, "WorkerLost") then return false, "its worker process died" end
    return false, tostring(a)
  end

  local function attempt_pool(job)
    local r = submit_pool(job)
    while not r:wait(0.2) do
      if stopping and interrupted then return false, "interrupted" end
    end
    return pool_outcome(job, r)
  end

  local pump, succeeded

  local function attempt_begins(job, attempt)
    job.attempt, job.attempts = attempt, attempt
    job.started = now()
    if attempt == 1 then job.first_start = job.started end
  end

  -- why: the previous attempt's failure
  local function announce(job, why)
    if job.attempt > 1 then ui.retry(job, { why = why }) else ui.started(job) end
  end

  -- Whether attempt `attempt` (ok, why) was the job's last one.
  local function last_attempt(job, attempt, ok)
    return ok or (stopping and interrupted) or attempt > job.retries
  end

  -- The job's last attempt ended: why is nil when it succeeded.
  local function job_ended(job, why)
    job.seconds = now() - job.first_start
    run.running[job] = nil
    run.nrunning = run.nrunning - 1
    if interrupted and why ~= nil then
      finish(job, "interrupted", "interrupted")
    elseif why == nil then
      finish(job, "ok")
      done_state[job.name] = hashes[job.name]
      state_dirty = true
      succeeded(job)
    else
      finish(job, "failed", why)
      if not o.keep_going then stopping = true end
    end
    ui.ended(job, { why = why })
    if job.status ~= "ok" then skip_dependents(job) end
    pump()
  end

  -- A shell job, or any job on a cluster: a task that waits for each
  -- attempt in turn.
  local function run_job(job)
    local attempt, why = 0, nil
    repeat
      attempt = attempt + 1
      attempt_begins(job, attempt)
      announce(job, why)
      local ok, w
      local okc, e = wpcall(function()
        if cluster then ok, w = attempt_pool(job) else ok, w = attempt_shell(job) end
      end)
      if not okc then ok, w = false, "mproc error: " .. tostring(e) end
      why = w
    until last_attempt(job, attempt, ok)
    job_ended(job, why)
  end

  -- A Lua function job on the local pool: no task of its own, each
  -- attempt's result calls back (the runner's cost per job is about that
  -- of a task submitted by hand).  fn_attempt[r]: the job r is an attempt of.
  local fn_attempt = {}
  local start_fn
  local function fn_done(r)
    local job = fn_attempt[r]
    if not job then return end   -- ended by an interrupt meanwhile
    fn_attempt[r] = nil
    local okc, ok, why = wpcall(pool_outcome, job, r)
    if not okc then ok, why = false, "mproc error: " .. tostring(ok) end
    if last_attempt(job, job.attempt, ok) then return job_ended(job, why) end
    start_fn(job, job.attempt + 1, why)
  end
  start_fn = function(job, attempt, why)
    while true do
      attempt_begins(job, attempt)
      local okc, r = wpcall(submit_pool, job)
      -- (said once the worker can start: nothing else is said in between)
      announce(job, why)
      if okc then
        fn_attempt[r] = job
        r:add_done_callback(fn_done)
        return
      end
      why = "mproc error: " .. tostring(r)
      if last_attempt(job, attempt, false) then return job_ended(job, why) end
      attempt = attempt + 1
    end
  end

  -- Jobs whose deps have all succeeded wait in a heap ordered by their
  -- place in `order`, so they start in that order; a job's count of
  -- unfinished deps drops as each dep succeeds (no rescan of the list per
  -- finished job: 10 000 jobs would cost 10 000 scans).
  local heap = {}
  local function push(job)
    local i = #heap + 1
    heap[i] = job
    while i > 1 do
      local up = idiv(i, 2)
      if heap[up].idx <= job.idx then break end
      heap[i], heap[up] = heap[up], job
      i = up
    end
  end
  local function pop()
    local n = #heap
    local top, last = heap[1], heap[n]
    heap[n] = nil
    n = n - 1
    if n > 0 then
      local i = 1
      while true do
        local c = 2 * i
        if c > n then break end
        if c < n and heap[c + 1].idx < heap[c].idx then c = c + 1 end
        if heap[c].idx >= last.idx then break end
        heap[i] = heap[c]
        i = c
      end
      heap[i] = last
    end
    return top
  end
  for k, job in ipairs(order) do
    job.idx, job.waiting = k, 0
    for _, d in ipairs(job.deps) do
      if byname[d].status ~= "cached" then job.waiting = job.waiting + 1 end
    end
    if job.status == "pending" and job.waiting == 0 then push(job) end
  end
  succeeded = function(job)
    local djs = dependents[job.name]
    for i = 1, djs and #djs or 0 do
      local dj = djs[i]
      dj.waiting = dj.waiting - 1
      if dj.waiting == 0 and dj.status == "pending" then push(dj) end
    end
  end

  -- (not re-entered: a job that ends while it starts calls pump again)
  local pumping = false
  pump = function()
    if pumping then return end
    pumping = true
    while not stopping and run.nrunning < nprocs and #heap > 0 do
      local job = pop()
      if job.status == "pending" and not run.running[job] then
        run.running[job] = true
        -- the live area may be drawn before the task starts: it shows
        -- the running jobs' elapsed time
        job.started = now()
        run.nrunning = run.nrunning + 1
        if job.fn and not cluster then start_fn(job, 1) else mp.spawn(run_job, job) end
      end
    end
    pumping = false
  end

  local sigin = os.getenv("MPROC_SIGNALS_ON_STDIN") == "1"
  local function interrupt(sig)
    if interrupted then return end
    interrupted, stopping, stop_at = true, true, now()
    ui.note(("mproc: %s: stopping, terminating %d running job%s"):format(
      sig, run.nrunning, run.nrunning == 1 and "" or "s"))
    for job in pairs(run.running) do
      if job.pid then core.kill(-job.pid, SIGTERM) end
    end
    if pool then pcall(pool.terminate, pool) end
    -- the local pool's Lua jobs have no task to notice: they end here
    local cut = {}
    for r, job in pairs(fn_attempt) do cut[#cut + 1] = job; fn_attempt[r] = nil end
    table.sort(cut, function(a, b) return a.idx < b.idx end)
    for _, job in ipairs(cut) do job_ended(job, "interrupted") end
  end

  -- The main task wakes every TICK (status, state file, the end of a
  -- grace period), on a line from the launcher (sigin) and as soon as the
  -- last running job has ended: a fixed sleep would add up to a TICK to
  -- every run.
  local TICK = 0.1
  local function idle() return run.nrunning == 0 end
  local stdin_fds = { 0 }
  local function stdin_fd() return stdin_fds end
  local function stdin_ready() return core.poll_fd(0, "r", 0) end
  local function idle_or_stdin() return idle() or stdin_ready() end
  local last_save = now()
  local main_ok, main_err = pcall(mp.run, function()
    pump()
    while run.nrunning > 0 or (not stopping and (function()
      for _, job in ipairs(order) do if job.status == "pending" then return true end end
      return false
    end)()) do
      -- (nothing running: a plain tick, not a wait that ends at once)
      local busy = run.nrunning > 0
      if sigin then
        sched.wait_many(stdin_fd, busy and idle_or_stdin or stdin_ready, sched.deadline(TICK))
        if stdin_ready() then
          local l = io.stdin:read("*l")
          interrupt(l and l:match("%u+") and ("SIG" .. l:match("%u+")) or "supervisor gone")
          sigin = false
        end
      elseif busy then
        sched.wait_event(idle, sched.deadline(TICK))
      else
        mp.sleep(TICK)
      end
      if stopping and interrupted and now() - stop_at > GRACE + 1 then
        for job in pairs(run.running) do
          if job.pid then core.kill(-job.pid, SIGKILL) end
        end
      end
      if o.resume and state_dirty and now() - last_save > 1 then
        write_state(o.resume, done_state)
        state_dirty, last_save = false, now()
      end
      ui.tick()
    end
  end)
  if pool then
    if interrupted or not main_ok then pcall(pool.terminate, pool) else pcall(pool.close, pool) end
    pcall(pool.join, pool)
  end
  if not main_ok then
    -- a bug of ours: leave nothing running
    for job in pairs(run.running) do
      if job.pid then core.kill(-job.pid, SIGKILL) end
    end
    error(main_err, 0)
  end

  for _, job in ipairs(order) do
    if job.status == "pending" then
      finish(job, "skipped", interrupted and "interrupted before it started"
        or "not started after a failure (use --keep-going)")
    end
  end
  if o.resume then
    local ok, err = write_state(o.resume, done_state)
    if not ok then
      io.stderr:write("mproc run: cannot write the state file: ", tostring(err), "\n")
    end
  end

  local c = run.counts
  local code = interrupted and 130 or ((c.failed + c.skipped + c.interrupted) > 0 and 1 or 0)
  local elapsed = now() - run.t0
  ui.finish(("mproc: %d ok, %d failed, %d skipped, %d cached%s in %.2f s"):format(
    c.ok, c.failed, c.skipped, c.cached,
    c.interrupted > 0 and (", %d interrupted"):format(c.interrupted) or "", elapsed))
  if o.json then
    local js = {}
    for _, job in ipairs(list) do
      js[#js + 1] = { __order = { name = 1, status = 2, attempts = 3, seconds = 4, exit_code = 5 },
        name = job.name, status = job.status, attempts = job.attempts,
        seconds = job.seconds, exit_code = job.exit_code, error = job.why,
        kind = job.fn and "fn" or "cmd" }
    end
    io.stdout:write(json({ __order = { file = 1, exit = 2, seconds = 3, counts = 4, jobs = 5 },
      file = o.file, exit = code, seconds = elapsed, counts = c, jobs = js }), "\n")
  end
  io.stdout:flush()
  return code
end

local function worker_cmd(argv)
  local ok, mod = pcall(require, "mproc.cluster.worker")
  if not ok or type(mod) ~= "table" or type(mod.main) ~= "function" then
    io.stderr:write("mproc worker: cluster support is not available (mproc.cluster.worker: "
      .. (tostring(mod):match("[^\n]*")) .. ")\n")
    return 2
  end
  return mod.main(argv)
end

-- argv: the command's arguments (argv[1] is the subcommand).  Returns the
-- exit status.
function M.main(argv)
  local cmd = argv[1]
  local rest = move(argv, 2, #argv, 1, {})
  if cmd == nil or cmd == "help" or cmd == "--help" or cmd == "-h" then
    io.stdout:write(USAGE)
    return cmd == nil and 2 or 0
  elseif cmd == "worker" then
    return worker_cmd(rest)
  elseif cmd ~= "run" then
    io.stderr:write(("mproc: unknown command '%s'\n"):format(cmd), USAGE)
    return 2
  end
  local ok, r = pcall(function()
    local o = parse_run(rest)
    if o.help then io.stdout:write(USAGE) return 0 end
    return run_cmd(o)
  end)
  if ok then return r end
  if getmetatable(r) == Usage then
    io.stderr:write("mproc run: ", r.msg, "\n(mproc help for the usage)\n")
    return 2
  elseif type(r) == "table" and r.bad_input then
    io.stderr:write("mproc run: ", r.bad_input, "\n")
    return 2
  end
  io.stderr:write("mproc run: internal error: ", tostring(r), "\n")
  return 2
end

return M

-- `mproc worker` (API.md "Cluster"): a local mp.Pool fed from a Redis
-- stream.  See lua/mproc/cluster.lua for the entry format.
--
-- The loop: publish what the local pool finished (result, acknowledge,
-- delete in one MULTI); read new entries (XREADGROUP, a blocking read left
-- pending while tasks run, so both wake the loop); claim entries whose
-- holder let their lease run out (XPENDING IDLE, then XCLAIM with the
-- entry's lease as min-idle-time: two workers cannot both win); renew our
-- own leases (a script that XCLAIMs JUSTID only what we still hold).  A
-- task whose local worker died is handed back (its idle time set past any
-- lease) and claimed again, by us or another worker; a claim past the
-- task's max_deliveries answers WorkerLost instead and files the entry in
-- <queue>:dead.
local mp = require "mproc"
local core = require "mproc.core"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local cluster = require "mproc.cluster"
local redis = require "mproc.redis"

local now, fields, GROUP = core.now, cluster.fields, cluster.GROUP
local bytes_equal = cluster.bytes_equal

local M = {}

local SCAN_EVERY = 0.25     -- seconds between looks for expired leases
local GIVE_BACK_IDLE = 1e9  -- ms: an entry handed back is claimable at once
local DEFAULT_LEASE = 30000

local RENEW_SCRIPT = [[
local out = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out + 1] = ARGV[i]
  end
end
return out]]

local function min_deadline(a, b)
  if b == nil or a < b then return a end
  return b
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or "host"
end

-- serve{url, queue, authkey, processes, verbose, signals, log}: runs until
-- SIGTERM/SIGINT (signals = true) or opts.stop() returns true.
function M.serve(o)
  local u = cluster.parse_url(o.url, "serve")
  local queue, key = o.queue or "mproc", o.authkey
  local log = o.log or io.stderr
  local verbose = o.verbose
  local nproc = o.processes or mp.cpu_count()
  local cap = nproc * 2
  if o.signals then redis.catch_signals() end
  local function stopping()
    return (o.signals and redis.signalled() ~= nil) or (o.stop and o.stop())
  end
  local link = cluster.new_link(u)
  local ilink = cluster.new_link(u, 12)  -- intake: a pending XREADGROUP
  local me = ("%s:%d:%s"):format(hostname(), core.getpid(), hex(core.random_bytes(3)))
  local dead_key, rprefix = queue .. ":dead", queue .. ":r:"

  local pool = mp.Pool(nproc)
  local held, nheld = {}, 0      -- eid -> {tid, c, lease, maxd, r, t0}
  local leases = {}              -- eid -> lease ms (entries seen pending)
  local intake = false           -- the ilink generation of a pending read
  local intake_reply, intake_got = nil, false
  local next_scan, next_renew = 0, 0

  local function say(fmt, ...)
    if verbose then log:write(("mproc worker %s: " .. fmt .. "\n"):format(me, ...)) log:flush() end
  end

  local function dead_argv(eid, f, reason)
    local argv = { "XADD", dead_key, "MAXLEN", "~", "10000", "*", "reason", reason, "id", eid }
    if f then
      for k, v in pairs(f) do argv[#argv + 1] = "f." .. k; argv[#argv + 1] = v end
    end
    return argv
  end

  -- Files the entry in <queue>:dead; a client named by it hears why.
  local function refuse(eid, f, reason)
    local cmds = { dead_argv(eid, f, reason), { "XACK", queue, GROUP, eid },
                   { "XDEL", queue, eid } }
    if f and f.t and f.c and f.c:sub(1, #rprefix) == rprefix then
      cmds[#cmds + 1] = { "XADD", f.c, "*", "t", f.t, "refused", reason }
      cmds[#cmds + 1] = { "EXPIRE", f.c, 86400 }
    end
    link:pipe(cmds)
    say("refused entry %s: %s", eid, reason)
  end

  -- Stores the outcome d of the task, then acknowledges it.
  local function publish(eid, tid, c, d, extra)
    local cmds = { { "MULTI" },
      { "XADD", c, "*", "t", tid, "d", d, "s", cluster.result_sig(key, c, tid, d) },
      { "EXPIRE", c, 86400 } }
    if extra then cmds[#cmds + 1] = extra end
    cmds[#cmds + 1] = { "XACK", queue, GROUP, eid }
    cmds[#cmds + 1] = { "XDEL", queue, eid }
    cmds[#cmds + 1] = { "EXEC" }
    local reps = link:pipe(cmds)
    local ex = reps[#reps]
    if type(ex) ~= "table" or ex.err then
      errors.raise("OSError", ("redis %s: storing a result failed: %s"):format(u.addr,
        type(ex) == "table" and ex.err or "transaction aborted"), { address = u.addr })
    end
  end

  local function error_payload(kind, msg, f)
    local body = { k = kind, m = msg, f = f }
    local ok, s = core.dumps(body, "error", true)
    if not ok and f then
      body.f = { traceback = f.traceback, value = f.value ~= nil
        and errors.error_text(f.value) or nil }
      ok, s = core.dumps(body, "error", true)
    end
    if not ok then s = select(2, core.dumps({ k = kind, m = msg }, "error", true)) end
    return "\0" .. s
  end

  -- Hands the entry back: anyone's next scan claims it (a delivery more).
  local function give_back(eid)
    link:cmd { "XCLAIM", queue, GROUP, me, "0", eid, "IDLE", ("%d"):format(GIVE_BACK_IDLE),
               "JUSTID" }
    leases[eid] = 0
    next_scan = 0
  end

  -- An entry delivered for the `deliveries`-th time.
  local function take(eid, raw, deliveries)
    local f = fields(raw)
    if not f then  -- deleted meanwhile (a cancelled task)
      link:pipe { { "XACK", queue, GROUP, eid }, { "XDEL", queue, eid } }
      return
    end
    if not (f.t and f.c and f.h and f.d and f.s) then return refuse(eid, f, "unsigned entry") end
    if not bytes_equal(f.s, cluster.task_sig(key, queue, f.t, f.c, f.h, f.d)) then
      return refuse(eid, f, "bad signature (another authkey?)")
    end
    local lease, maxd, timeout = f.h:match("^(%d+) (%d+) (%S+)$")
    lease, maxd, timeout = tonumber(lease), tonumber(maxd), tonumber(timeout)
    if not lease then return refuse(eid, f, "malformed header") end
    if deliveries > maxd then
      local msg = ("the task was delivered %d times (max_deliveries = %d): each worker that "
        .. "took it died or stalled"):format(deliveries - 1, maxd)
      publish(eid, f.t, f.c, error_payload("WorkerLost", msg, { deliveries = deliveries - 1 }),
        dead_argv(eid, f, "max_deliveries"))
      say("task %s (%s) lost after %d deliveries", f.t, eid, deliveries - 1)
      return
    end
    local r = pool:apply_async(cluster.run_task, { f.d }, { timeout = timeout })
    held[eid] = { tid = f.t, c = f.c, lease = lease, r = r, t0 = now() }
    nheld = nheld + 1
    leases[eid] = lease
    say("task %s (%s) started, delivery %d", f.t, eid, deliveries)
  end

  -- Publishes what the local pool finished.
  local function harvest()
    for eid, h in pairs(held) do
      local r = h.r
      if r:ready() then
        local ok, v = pcall(r.get, r)
        local d, what
        if ok then
          d, what = "\1" .. v, "ok"
        elseif errors.is_error(v, "WorkerLost") then
          held[eid], leases[eid] = nil, 0
          nheld = nheld - 1
          give_back(eid)
          say("task %s (%s): its local worker died; handed back", h.tid, eid)
        else
          local kind, msg, fl = "TaskError", errors.error_text(v), nil
          if errors.is_error(v) then
            kind, msg = v.kind, v.message
            fl = { value = v.value, traceback = v.traceback, where = v.where }
            if kind == "TaskError" and errors.is_error(v.value, "SerializeError") then
              kind, msg, fl = "SerializeError", v.value.message, nil
            end
          end
          d, what = error_payload(kind, msg, fl), kind
        end
        if d then
          publish(eid, h.tid, h.c, d)
          held[eid], leases[eid] = nil, nil
          nheld = nheld - 1
          say("task %s (%s) %s in %.3f s", h.tid, eid, what, now() - h.t0)
        end
      end
    end
  end

  local function on_intake(rep)
    if type(rep) ~= "table" then return end
    local s = rep[1]
    local entries = type(s) == "table" and s[2]
    if type(entries) ~= "table" then return end
    for i = 1, entries.n or #entries do
      local e = entries[i]
      take(e[1], e[2], 1)
    end
  end

  local function poll_intake()
    if not intake then return end
    if intake ~= ilink.gen or not ilink:fileno() then intake = false return end
    local got, rep = ilink:try_reply()
    if got then
      intake = false
      intake_got, intake_reply = true, rep
    end
  end

  -- Entries whose lease ran out: claim them (as many as we have room for).
  local function scan()
    local room = cap - nheld
    if room <= 0 then return end
    local pend = link:cmd { "XPENDING", queue, GROUP, "IDLE", "100", "-", "+", "100" }
    for i = 1, pend.n or #pend do
      if room <= 0 then break end
      local p = pend[i]
      local eid, idle, count = p[1], p[3], p[4]
      if not held[eid] then
        local lease = leases[eid]
        if not lease then
          local rng = link:cmd { "XRANGE", queue, eid, eid }
          local f = fields(rng[1] and rng[1][2])
          lease = f and f.h and tonumber(f.h:match("^(%d+)")) or DEFAULT_LEASE
          leases[eid] = lease
        end
        if idle >= lease then
          local got = link:cmd { "XCLAIM", queue, GROUP, me, ("%d"):format(lease), eid }
          if type(got) == "table" and got[1] then
            room = room - 1
            take(eid, got[1][2], count + 1)
          elseif type(got) == "table" then
            -- the entry is gone (deleted): drop it from the pending list
            link:cmd { "XACK", queue, GROUP, eid }
          end
        end
      end
    end
  end

  local function renew()
    local lease_min
    local argv = { "EVAL", RENEW_SCRIPT, "1", queue, GROUP, me }
    for eid, h in pairs(held) do
      argv[#argv + 1] = eid
      if not lease_min or h.lease < lease_min then lease_min = h.lease end
    end
    if lease_min then
      local kept = {}
      for _, eid in ipairs(link:cmd(argv)) do kept[eid] = true end
      for eid, h in pairs(held) do
        if not kept[eid] and not h.lost then
          h.lost = true
          say("task %s (%s): lease lost to another worker", h.tid, eid)
        end
      end
    end
    next_renew = now() + (lease_min or 3000) / 3000
  end

  local function step(stop)
    harvest()
    if intake_got then
      intake_got = false
      local rep = intake_reply
      intake_reply = nil
      if stop then  -- read just before the signal: back to the stream
        if type(rep) == "table" and type(rep[1]) == "table" then
          for _, e in ipairs(rep[1][2] or {}) do give_back(e[1]) end
        end
      else
        on_intake(rep)
      end
    end
    if not stop then
      if now() >= next_scan then
        next_scan = now() + SCAN_EVERY
        scan()
      end
      if not intake and nheld < cap then
        ilink:append { "XREADGROUP", "GROUP", GROUP, me, "COUNT", cap - nheld, "BLOCK", "1000",
                       "STREAMS", queue, ">" }
        intake = ilink.gen
      end
    end
    if nheld > 0 and now() >= next_renew then renew() end
    -- wait for a local result, the intake's reply, or the next timer
    local deadline = min_deadline(now() + SCAN_EVERY, nheld > 0 and next_renew or nil)
    sched.wait_many(function()
      local fd = intake and ilink:fileno()
      return { fd or nil }, false
    end, function()
      if stopping() and not stop then return true end
      poll_intake()
      if intake_got then return true end
      for _, h in pairs(held) do if h.r._done then return true end end
      return false
    end, deadline)
  end

  local function guarded(stop)
    local ok, err = pcall(step, stop)
    if ok then return true end
    if errors.is_error(err, "OSError") then
      log:write(("mproc worker: %s (retrying)\n"):format(err.message))
      log:flush()
      intake = false
      ilink:close()
      link:close()
      core.sleep(0.5)
      -- a Redis that came back empty has no group: make it again
      pcall(cluster.ensure_group, link, queue)
      return false
    end
    if errors.is_error(err, "Interrupted") then return true end
    error(err, 0)
  end

  -- until the group exists (Redis may not be up yet)
  while not stopping() do
    local ok, err = pcall(cluster.ensure_group, link, queue)
    if ok then break end
    if not errors.is_error(err, "OSError") then error(err, 0) end
    log:write(("mproc worker: %s (retrying)\n"):format(err.message))
    log:flush()
    core.sleep(0.5)
  end
  say("serving queue %s at %s with %d processes", queue, u.addr, nproc)
  while not stopping() do guarded(false) end
  -- stopping: finish the running tasks for a while, then hand back the rest
  local grace_end = now() + (o.grace or 5)
  while nheld > 0 and now() < grace_end do guarded(true) end
  while intake and now() < grace_end + 2 do guarded(true) end
  pcall(function()
    harvest()
    for eid in pairs(held) do give_back(eid) end
  end)
  pool:terminate()
  link:close()
  ilink:close()
  say("stopped")
  return 0
end

-- {=====================================================================
-- The command line
-- ======================================================================

local USAGE = [[
usage: mproc worker --url URL [--queue NAME] [--processes N] [--authkey-file F] [-v]

Serves the tasks of a cluster queue (mp.cluster.Pool) with a local pool of
N processes (default: the CPU count).  The authkey comes from --authkey-file
or MPROC_AUTHKEY.  Ends cleanly on SIGTERM or SIGINT.
]]

function M.main(argv)
  local o = { queue = "mproc", signals = true }
  local i = 1
  local function bad(msg)
    io.stderr:write("mproc worker: ", msg, "\n", USAGE)
    return 2
  end
  local keyfile
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local function value()
      if inline then return inline end
      i = i + 1
      return argv[i]
    end
    if name == "--url" then o.url = value()
    elseif name == "--queue" then o.queue = value()
    elseif name == "--processes" or name == "-j" then
      local v = value()
      o.processes = math.tointeger(tonumber(v or ""))
      if not o.processes or o.processes < 1 then
        return bad("--processes must be an integer >= 1")
      end
    elseif name == "--authkey-file" then keyfile = value()
    elseif name == "-v" or name == "--verbose" then o.verbose = true
    elseif name == "-h" or name == "--help" then io.stdout:write(USAGE) return 0
    else return bad(("unknown option '%s'"):format(a)) end
    i = i + 1
  end
  if not o.url then return bad("--url is required") end
  if not o.queue or o.queue == "" then return bad("--queue needs a name") end
  if keyfile then
    local f, err = io.open(keyfile, "rb")
    if not f then return bad("cannot read the authkey file: " .. err) end
    o.authkey = f:read("a"):gsub("[\r\n]+$", "")
    f:close()
  else
    o.authkey = os.getenv("MPROC_AUTHKEY")
  end
  if not o.authkey or o.authkey == "" then
    return bad("no authkey (--authkey-file F or MPROC_AUTHKEY)")
  end
  local ok, err = pcall(cluster.parse_url, o.url, "worker")
  if not ok then return bad(tostring(err):gsub("^.-%(", "("):gsub("^%((.*)%)$", "%1")) end
  return M.serve(o)
end

-- }=====================================================================

return M

-- `mproc worker` (API.md "Cluster"): a local mp.Pool fed from a Redis
-- stream.  See lua/mproc/cluster.lua for the entry format.
--
-- The loop: publish what the local pool finished (results, acknowledge,
-- delete in one MULTI); read new entries (XREADGROUP, a blocking read left
-- pending while tasks run, so both wake the loop; first deliveries run in
-- batches, one local pool task each, sized from the measured task time); claim entries whose
-- holder let their lease run out (XPENDING IDLE, then XCLAIM with the
-- entry's lease as min-idle-time: two workers cannot both win); renew our
-- own leases (a script that XCLAIMs JUSTID only what we still hold).  A
-- task whose local worker died is handed back (its idle time set past any
-- lease) and claimed again, by us or another worker; a claim past the
-- task's max_deliveries answers WorkerLost instead and files the entry in
-- <queue>:dead.
local mp = require "mproc"
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local cluster = require "mproc.cluster"
local redis = require "mproc.redis"

local now, fields, GROUP = core.now, cluster.fields, cluster.GROUP
local bytes_equal = cluster.bytes_equal
local spack, concat, tmove, idiv = compat.spack, table.concat, compat.move, compat.idiv
local pcall = compat.pcall  -- a wait in it may yield (mp.run)

local M = {}

local SCAN_EVERY = 0.25     -- seconds between looks for expired leases
local BATCH_SECONDS = 0.02  -- a batch of tasks (one local pool task) runs about this long
local MAX_BATCH = 64        -- tasks per batch at most
local RESULT_BYTES = 1048576  -- 2^20: a result entry holds several results up to about this size
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
  local h = f and f:read("*l")
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
  if o.signals then redis.catch_signals() end
  local function stopping()
    return (o.signals and redis.signalled() ~= nil) or (o.stop and o.stop())
  end
  local link = cluster.new_link(u)
  local ilink = cluster.new_link(u, 12)  -- intake: a pending XREADGROUP
  local me = ("%s:%d:%s"):format(hostname(), core.getpid(), hex(core.net_random_bytes(3)))
  local dead_key, rprefix = queue .. ":dead", queue .. ":r:"

  local pool = mp.Pool(nproc)
  local held, nheld = {}, 0      -- eid -> {tid, c, lease, unit, lost}
  local units = {}               -- unit -> true: {r, eids, t0} a local pool task
  local leases = {}              -- eid -> lease ms (entries seen pending)
  local intake = false           -- the ilink generation of a pending read
  local intake_reply, intake_got = nil, false
  local next_scan, next_renew = 0, 0
  local est                      -- seconds per task (moving average), once known

  local function say(fmt, ...)
    if verbose then log:write(("mproc worker %s: " .. fmt .. "\n"):format(me, ...)) log:flush() end
  end

  -- Tasks per local pool task, and entries held at most: one task each
  -- until a batch has told how long a task takes, then as many as run in
  -- about BATCH_SECONDS (at most MAX_BATCH).
  local function batch_size()
    if not est then return 1 end
    return math.max(1, math.min(MAX_BATCH, math.floor(BATCH_SECONDS / math.max(est, 1e-7))))
  end
  local function cap() return nproc * 2 * batch_size() end

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

  -- Stores the outcomes {eid, tid, c, d} (one result entry per client
  -- stream), then acknowledges and deletes their entries: one MULTI.
  local function publish(outs, extra)
    local by_c, order = {}, {}
    local ack, del = { "XACK", queue, GROUP }, { "XDEL", queue }
    for _, out in ipairs(outs) do
      local c = out.c
      local list = by_c[c]
      if not list then list = {}; by_c[c] = list; order[#order + 1] = c end
      list[#list + 1] = spack(">s4s4", out.tid, out.d)
      ack[#ack + 1], del[#del + 1] = out.eid, out.eid
    end
    local cmds = { { "MULTI" } }
    local function add(c, r)
      cmds[#cmds + 1] = { "XADD", c, "*", "r", r, "s", cluster.result_sig(key, c, r) }
    end
    for _, c in ipairs(order) do
      local list, from, size = by_c[c], 1, 0
      for i, part in ipairs(list) do  -- large results: an entry of about RESULT_BYTES each
        if size > 0 and size + #part > RESULT_BYTES then
          add(c, concat(list, "", from, i - 1))
          from, size = i, 0
        end
        size = size + #part
      end
      add(c, concat(list, "", from, #list))
      cmds[#cmds + 1] = { "EXPIRE", c, 86400 }
    end
    if extra then cmds[#cmds + 1] = extra end
    cmds[#cmds + 1] = ack
    cmds[#cmds + 1] = del
    cmds[#cmds + 1] = { "EXEC" }
    local reps = link:pipe(cmds)
    local ex = reps[#reps]
    if type(ex) ~= "table" or ex.err then
      errors.raise("OSError", ("redis %s: storing a result failed: %s"):format(u.addr,
        type(ex) == "table" and ex.err or "transaction aborted"), { address = u.addr })
    end
  end

  -- Hands the entries back: anyone's next scan claims them (a delivery more).
  local function give_back(eids)
    if #eids == 0 then return end
    local argv = { "XCLAIM", queue, GROUP, me, "0" }
    for _, eid in ipairs(eids) do argv[#argv + 1] = eid; leases[eid] = 0 end
    argv[#argv + 1] = "IDLE"
    argv[#argv + 1] = ("%d"):format(GIVE_BACK_IDLE)
    argv[#argv + 1] = "JUSTID"
    link:cmd(argv)
    next_scan = 0
  end

  -- An entry delivered for the `deliveries`-th time: checked, then
  -- {eid, tid, c, d, lease, timeout} to run, or nil (dealt with here).
  local function take(eid, raw, deliveries)
    local f = fields(raw)
    if not f then  -- deleted meanwhile (a cancelled task)
      link:pipe { { "XACK", queue, GROUP, eid }, { "XDEL", queue, eid } }
      return nil
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
      publish({ { eid = eid, tid = f.t, c = f.c,
                  d = cluster.error_payload("WorkerLost", msg, { deliveries = deliveries - 1 }) } },
        dead_argv(eid, f, "max_deliveries"))
      say("task %s (%s) lost after %d deliveries", f.t, eid, deliveries - 1)
      return nil
    end
    return { eid = eid, tid = f.t, c = f.c, d = f.d, lease = lease, timeout = timeout,
             again = deliveries > 1 }
  end

  -- Runs the tasks as one local pool task.
  local function start_unit(list, timeout)
    local ds, eids = {}, {}
    for i, t in ipairs(list) do ds[i], eids[i] = t.d, t.eid end
    local unit = { eids = eids, t0 = now(),
                   r = pool:apply_async(cluster.run_batch, { ds }, { timeout = timeout }) }
    units[unit] = true
    for _, t in ipairs(list) do
      held[t.eid] = { tid = t.tid, c = t.c, lease = t.lease, unit = unit }
      nheld = nheld + 1
      leases[t.eid] = t.lease
    end
    say("tasks %s started (%d)", eids[1], #eids)
  end

  -- Starts the tasks: first deliveries without a timeout in batches (one
  -- per local process, at most batch_size() each), the others alone (a
  -- task that kills its worker then takes no other task with it).
  local function dispatch(list)
    local batch = {}
    for _, t in ipairs(list) do
      if t.timeout or t.again then start_unit({ t }, t.timeout)
      else batch[#batch + 1] = t end
    end
    local n = #batch
    if n == 0 then return end
    local size = math.min(batch_size(), idiv(n + nproc - 1, nproc))
    for i = 1, n, size do start_unit(tmove(batch, i, math.min(n, i + size - 1), 1, {})) end
  end

  -- Publishes what the local pool finished.
  local function harvest()
    local outs, done, lost = {}, {}, {}
    for unit in pairs(units) do
      local r = unit.r
      if r:ready() then
        local ok, v = pcall(r.get, r)
        local eids = unit.eids
        if ok and type(v) == "table" and v.n == #eids then
          if type(v.dt) == "number" and v.dt >= 0 then
            local per = v.dt / #eids
            est = est and est * 0.7 + per * 0.3 or per
          end
          for i, eid in ipairs(eids) do
            local h = held[eid]
            outs[#outs + 1] = { eid = eid, tid = h.tid, c = h.c, d = v[i] }
          end
          done[#done + 1] = unit
        elseif not ok and errors.is_error(v, "WorkerLost") then
          for _, eid in ipairs(eids) do lost[#lost + 1] = eid end
          done[#done + 1] = unit
          say("tasks %s (%d): their local worker died; handed back", eids[1], #eids)
        else
          local kind, msg, fl = "TaskError", errors.error_text(v), nil
          if not ok and errors.is_error(v) then
            kind, msg = v.kind, v.message
            fl = { value = v.value, traceback = v.traceback, where = v.where }
            if kind == "TaskError" and errors.is_error(v.value, "SerializeError") then
              kind, msg, fl = "SerializeError", v.value.message, nil
            end
          elseif ok then
            kind, msg = "RemoteError", "a batch of tasks returned a malformed result"
          end
          local d = cluster.error_payload(kind, msg, fl)
          for _, eid in ipairs(eids) do
            local h = held[eid]
            outs[#outs + 1] = { eid = eid, tid = h.tid, c = h.c, d = d }
          end
          done[#done + 1] = unit
        end
      end
    end
    if #done == 0 then return end
    if #outs > 0 then publish(outs) end
    for _, out in ipairs(outs) do
      leases[out.eid] = nil
      if verbose then
        say("task %s (%s) %s in %.3f s", out.tid, out.eid,
          out.d:byte(1) == 1 and "ok" or "failed", now() - held[out.eid].unit.t0)
      end
    end
    for _, unit in ipairs(done) do
      units[unit] = nil
      for _, eid in ipairs(unit.eids) do
        held[eid] = nil
        nheld = nheld - 1
      end
    end
    give_back(lost)
  end

  local function on_intake(rep)
    if type(rep) ~= "table" then return end
    local s = rep[1]
    local entries = type(s) == "table" and s[2]
    if type(entries) ~= "table" then return end
    local list = {}
    for i = 1, entries.n or #entries do
      local e = entries[i]
      list[#list + 1] = take(e[1], e[2], 1)
    end
    dispatch(list)
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
    local room = cap() - nheld
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
            local t = take(eid, got[1][2], count + 1)
            if t then t.again = true; dispatch({ t }) end
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
          local eids = {}
          for _, e in ipairs(rep[1][2] or {}) do eids[#eids + 1] = e[1] end
          give_back(eids)
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
      if not intake and nheld < cap() then
        ilink:append { "XREADGROUP", "GROUP", GROUP, me, "COUNT", cap() - nheld, "BLOCK", "1000",
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
      for unit in pairs(units) do if unit.r._done then return true end end
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
    local eids = {}
    for eid in pairs(held) do eids[#eids + 1] = eid end
    give_back(eids)
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
      o.processes = compat.tointeger(tonumber(v or ""))
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
    o.authkey = f:read("*a"):gsub("[\r\n]+$", "")
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

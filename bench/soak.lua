-- Queue soak (issue 12 item 1): 4 producers x 4 consumers on one mp.Queue,
-- messages of 1 B - 2 MiB carrying an id and a checksum, one producer and
-- one consumer SIGKILLed and restarted every KILL_EVERY seconds.  At the end
-- it counts what went wrong and exits 1 when anything did.
--
-- usage: lua5.4 bench/soak.lua [seconds]      (or lua5.3, lua5.1, luajit)
--         (or SOAK_SECONDS; default 180)
--   SOAK_KILL_EVERY  seconds between kills (default: 20, or seconds/4.5 for
--                    runs shorter than 90 s)
--   SOAK_SEED        random seed (default: time)
--   SOAK_RSS_LIMIT_MIB  allowed RSS growth (default 16; looser under ASan)
--   SOAK_TOLERATE_ORPHANS=1  do not fail on spill segments orphaned by a
--                    killed process (they are still counted and printed)
--
-- How it works.  Producer incarnations (the first four, then one per
-- restart) are numbered; message ids are (incarnation, seq).  A producer
-- stores seq into committed[incarnation] (an mp.Array slot, survives its
-- death) right after q:put returned.  A consumer appends "G\n" to its own
-- log file before each q:get and "inc seq verdict\n" after it checked the
-- message (one unbuffered write each, so they survive SIGKILL).
--
-- Counts, per message id:
--   lost        a committed message (seq <= committed[inc]) that no consumer
--               recorded, beyond what killed consumers may have taken: a
--               consumer killed with an open "G" (no record after its last
--               G) may have taken one message; the allowance is the number
--               of such consumers.  lost = max(0, missing - allowance).
--   duplicated  recorded more than once (each extra record counts).
--   corrupted   length, checksum or content differ from what the id says,
--               or an id nobody could have put (seq beyond committed + 1,
--               or committed + 1 of a producer that was not killed: the put
--               of a killed producer may have finished before its counter
--               was written, so that one message is fine).
--   hangs       a process that made no progress for HANG seconds (every
--               put/get has a timeout and a heartbeat follows it), a
--               process that did not end within HANG seconds after being
--               told to, or the whole run past its deadline.
--   crashes     a process that ended on its own with a non-zero status or
--               raised anything but Empty/Full.
--   rss         growth of the long-lived processes (the parent, producer 1
--               and consumer 1 are never killed) between the end of the
--               warm-up and the end of the run, read from /proc/self/statm
--               after a full collection; over RSS_LIMIT is a failure.
--   shm         /dev/shm entries named mproc-<pid>... or mproc-q<pid>...
--               for a pid of this run: orphans = spill segments of the
--               queue present once it was drained, before it is closed
--               (a process killed between creating a big message's segment
--               and publishing it, or between taking it and unlinking it);
--               after_cleanup = left once the parent closed everything;
--               after_exit = left once the parent process exited.
local mp = require "mproc"
local core = require "mproc.core"
local compat = require "mproc.compat"

local unpack, idiv = compat.unpack, compat.idiv

local NPROD, NCONS = 4, 4
local MAXSIZE = 2 * 1024 * 1024
local HANG = 10            -- seconds without progress that count as a hang
-- SOAK_RSS_LIMIT_MIB: AddressSanitizer keeps freed blocks in quarantine
-- (up to 256 MiB), so a run under it needs a looser bound.
local RSS_LIMIT = (tonumber(os.getenv("SOAK_RSS_LIMIT_MIB")) or 16) * 1024 * 1024
local QUEUE_MAX = 32       -- bounds the queue's memory (<= 64 MiB of payload)

local function now() return core.now() end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function rss_bytes()
  local s = read("/proc/self/statm")
  return (tonumber(s:match("^%d+ (%d+)")) or 0) * 4096
end

-- {=================================================================
-- Messages
-- ==================================================================

-- 1/4 uniform over 1..2 MiB (spilled to their own segment above 1 MiB),
-- 3/4 log-uniform (mostly small frames in the ring).
local function pick_size()
  if math.random() < 0.25 then return math.random(1, MAXSIZE) end
  return math.min(MAXSIZE, math.floor(2 ^ (math.random() * 21)))
end

-- The payload of a message is a 509-byte block derived from its id,
-- repeated: any byte out of place (a shifted copy, a torn frame, another
-- message's bytes) changes it.
local function payload(inc, seq, size)
  local x = (inc * 1000003 + seq * 7919) % 2147483647
  local t = {}
  for i = 1, 509 do
    x = (x * 48271) % 2147483647
    t[i] = x % 256
  end
  local block = string.char(unpack(t))
  return string.rep(block, idiv(size, 509) + 1):sub(1, size)
end

-- A cheap checksum: FNV-1a over the length and 257 bytes spread over the
-- payload (the full comparison with payload() is the exact check).
-- In arithmetic that every VM does exactly (5.1 and LuaJIT: doubles, no
-- bitwise operators): a XOR b for 0 <= a, b < 2^32, and h * 16777619 mod
-- 2^32 as h * 403 + (h mod 2^8) * 2^24 (16777619 = 2^24 + 403).
local function xor32(a, b)
  local r, bit = 0, 1
  for _ = 1, 32 do
    local x, y = a % 2, b % 2
    if x ~= y then r = r + bit end
    a, b, bit = idiv(a, 2), idiv(b, 2), bit * 2
    if a == 0 and b == 0 then break end
  end
  return r
end

local function fnv_step(h, v)
  h = xor32(h, v)
  return (h * 403 + (h % 256) * 16777216) % 4294967296
end

local function checksum(s)
  local h, n = 2166136261, #s
  h = fnv_step(h, n)
  if n > 0 then
    for k = 0, 256 do
      h = fnv_step(h, s:byte(1 + idiv((n - 1) * k, 256)))
    end
  end
  return h
end

-- }=================================================================

-- {=================================================================
-- Workers (forked with mp.Process)
-- ==================================================================

-- ctl: Array int64 {stop producers, drain consumers, rss checkpoint}
local STOP, DRAIN, CHECKPOINT = 1, 2, 3

local function checkpoint(ctl, rss, slot, done)
  local c = ctl[CHECKPOINT]
  if c > done then
    collectgarbage(); collectgarbage()
    rss[(slot - 1) * 2 + c] = rss_bytes()
    return c
  end
  return done
end

local function producer(q, committed, beats, ctl, rss, inc, slot, seed)
  math.randomseed(seed)
  local seq, done = 0, 0
  while ctl[STOP] == 0 do
    seq = seq + 1
    local data = payload(inc, seq, pick_size())
    q:put({ inc, seq, #data, checksum(data), data }, HANG)   -- Full after HANG: a hang
    committed[inc] = seq
    beats[slot] = now()
    done = checkpoint(ctl, rss, slot, done)
  end
end

local function consumer(q, beats, ctl, rss, slot, logpath)
  local f = assert(io.open(logpath, "a"))
  f:setvbuf("no")
  local done = 0
  while true do
    f:write("G\n")
    local ok, m = pcall(q.get, q, 1)
    if ok then
      local inc, seq, size, sum, data = m[1], m[2], m[3], m[4], m[5]
      local good = type(data) == "string" and #data == size and checksum(data) == sum
        and data == payload(inc, seq, size)
      f:write(("%d %d %d %s\n"):format(inc, seq, #tostring(data), good and "ok" or "bad"))
    elseif mp.is_error(m, "Empty") then
      if ctl[DRAIN] ~= 0 then f:write("E\n") break end
    else
      error(m, 0)
    end
    beats[NPROD + slot] = now()
    done = checkpoint(ctl, rss, NPROD + slot, done)
  end
  f:close()
end

-- }=================================================================

-- {=================================================================
-- /dev/shm
-- ==================================================================

-- Our entries: mproc-<pid>-..., mproc-q<pid>-... with pid in `pids`.
local function shm_entries(pids)
  local found = {}
  local p = io.popen("ls /dev/shm 2>/dev/null")
  for name in p:lines() do
    local pid = name:match("^mproc%-%a?(%d+)")
    if pid and pids[tonumber(pid)] then found[#found + 1] = name end
  end
  p:close()
  table.sort(found)
  return found
end

-- }=================================================================

-- {=================================================================
-- The run (the inner process: creates the queue, forks the workers)
-- ==================================================================

local function inner(dir, seconds, kill_every, seed)
  math.randomseed(seed)
  local res = { killed_producers = 0, killed_consumers = 0, hangs = 0, crashes = 0,
    messages = 0, bytes = 0, notes = {} }
  local function note(s) res.notes[#res.notes + 1] = s; io.stderr:write("soak: ", s, "\n") end
  local pids = { [mp.getpid()] = true }
  -- every pid of the run, as it starts: the driver looks for their /dev/shm
  -- entries even when this process hung and was killed
  local pidlog = assert(io.open(dir .. "/pids", "a"))
  pidlog:setvbuf("no")
  pidlog:write(mp.getpid(), "\n")
  local function add_pid(pid) pids[pid] = true; pidlog:write(pid, "\n") end
  local ninc = NPROD + math.ceil(seconds / kill_every) + 4
  local q = mp.Queue(QUEUE_MAX)
  local committed = mp.Array("int64", ninc)
  local beats = mp.Array("double", NPROD + NCONS)
  local ctl = mp.Array("int64", 3)
  local rss = mp.Array("int64", (NPROD + NCONS) * 2)
  local killed_inc, cons_logs, killed_logs = {}, {}, {}
  local prods, cons = {}, {}      -- slot -> {p=, inc=} / {p=, log=}
  local nextinc, nlog = 0, 0
  local t_start = now()
  for i = 1, NPROD + NCONS do beats[i] = t_start end

  local function start_producer(slot)
    nextinc = nextinc + 1
    assert(nextinc <= ninc, "too many producer incarnations")
    local inc = nextinc
    local p = mp.Process { target = producer, name = "producer-" .. inc,
      args = { q, committed, beats, ctl, rss, inc, slot, seed * 131 + inc } }
    p:start()
    add_pid(p.pid)
    beats[slot] = now()
    prods[slot] = { p = p, inc = inc }
  end
  local function start_consumer(slot)
    nlog = nlog + 1
    local log = ("%s/consumer-%d.log"):format(dir, nlog)
    cons_logs[#cons_logs + 1] = log
    local p = mp.Process { target = consumer, name = "consumer-" .. nlog,
      args = { q, beats, ctl, rss, slot, log } }
    p:start()
    add_pid(p.pid)
    beats[NPROD + slot] = now()
    cons[slot] = { p = p, log = log }
  end
  local function kill(w)
    w.p:kill()
    if not w.p:join(HANG) then
      res.hangs = res.hangs + 1
      note("a SIGKILLed process did not end")
    end
  end
  -- a worker that ended without being told to
  local function check_alive(w, what)
    if w.p.exitcode ~= nil then
      res.crashes = res.crashes + 1
      note(("%s %s ended on its own (exit %s)"):format(what, w.p.name, tostring(w.p.exitcode)))
      return false
    end
    return true
  end

  for s = 1, NPROD do start_producer(s) end
  for s = 1, NCONS do start_consumer(s) end
  local deadline = t_start + seconds
  local warm = t_start + math.min(kill_every, seconds / 4)
  local next_pkill, next_ckill = t_start + kill_every, t_start + kill_every * 1.5
  local rss_parent = {}
  local last_qsize = now()

  while now() < deadline do
    mp.sleep(0.1)
    local t = now()
    if t >= warm and ctl[CHECKPOINT] == 0 then
      collectgarbage(); collectgarbage()
      rss_parent[1] = rss_bytes()
      ctl[CHECKPOINT] = 1
    end
    -- slot 1 of each kind lives through the run (its RSS is watched)
    if t >= next_pkill then
      local s = math.random(2, NPROD)
      killed_inc[prods[s].inc] = true
      kill(prods[s])
      res.killed_producers = res.killed_producers + 1
      start_producer(s)
      next_pkill = next_pkill + kill_every
    end
    if t >= next_ckill then
      local s = math.random(2, NCONS)
      killed_logs[cons[s].log] = true
      kill(cons[s])
      res.killed_consumers = res.killed_consumers + 1
      start_consumer(s)
      next_ckill = next_ckill + kill_every
    end
    for s = 1, NPROD do
      if check_alive(prods[s], "producer") and t - beats[s] > HANG then
        res.hangs = res.hangs + 1
        note(("producer %s made no progress for %d s"):format(prods[s].p.name, HANG))
        killed_inc[prods[s].inc] = true
        kill(prods[s]); start_producer(s)
      elseif prods[s].p.exitcode ~= nil then
        killed_inc[prods[s].inc] = true       -- its last put may be uncounted
        start_producer(s)
      end
    end
    for s = 1, NCONS do
      if check_alive(cons[s], "consumer") and t - beats[NPROD + s] > HANG then
        res.hangs = res.hangs + 1
        note(("consumer %s made no progress for %d s"):format(cons[s].p.name, HANG))
        killed_logs[cons[s].log] = true
        kill(cons[s]); start_consumer(s)
      elseif cons[s].p.exitcode ~= nil then
        killed_logs[cons[s].log] = true
        start_consumer(s)
      end
    end
    -- the parent's own calls go through the same lock
    if t - last_qsize > 1 then q:qsize(); last_qsize = t end
  end

  -- end of run: RSS checkpoint 2, then stop the producers, drain
  collectgarbage(); collectgarbage()
  rss_parent[2] = rss_bytes()
  ctl[CHECKPOINT] = 2
  mp.sleep(0.5)          -- each long-lived worker passes its checkpoint
  ctl[STOP] = 1
  local function finish(w, what)
    if not w.p:join(HANG + 5) then
      res.hangs = res.hangs + 1
      note(("%s %s did not end within %d s of being told to"):format(what, w.p.name, HANG + 5))
      w.p:kill(); w.p:join(5)
    elseif w.p.exitcode ~= 0 then
      res.crashes = res.crashes + 1
      note(("%s %s exited with %s"):format(what, w.p.name, tostring(w.p.exitcode)))
    end
  end
  for s = 1, NPROD do finish(prods[s], "producer") end
  ctl[DRAIN] = 1
  for s = 1, NCONS do finish(cons[s], "consumer") end
  res.stranded = q:qsize()
  if res.stranded > 0 then note(res.stranded .. " messages still queued after the drain") end

  -- orphaned spill segments: the queue is empty, so any <ring>.<n> is one
  local orphans = 0
  for _, name in ipairs(shm_entries(pids)) do
    if name:match("^mproc%-q" .. mp.getpid() .. "%-[^.]+%.") then
      orphans = orphans + 1
      note("orphaned spill segment /dev/shm/" .. name)
    end
  end
  res.shm_orphans = orphans

  -- RSS: checkpoints 1 and 2 of the long-lived processes
  local function growth(a, b) return (b or 0) - (a or 0) end
  res.rss_parent = growth(rss_parent[1], rss_parent[2])
  res.rss_producer1 = growth(rss[1], rss[2])
  res.rss_consumer1 = growth(rss[NPROD * 2 + 1], rss[NPROD * 2 + 2])
  res.rss_seen = rss[1] > 0 and rss[2] > 0 and rss[NPROD * 2 + 1] > 0
    and rss[NPROD * 2 + 2] > 0
  if not res.rss_seen then note("a long-lived worker did not report its RSS") end

  -- ledger
  local seen = {}
  local corrupted, allowance = 0, 0
  for _, log in ipairs(cons_logs) do
    local s = read(log) or ""
    local open = false
    for line in s:gmatch("[^\n]*\n?") do
      if line == "G\n" then
        open = true
      elseif line:match("\n$") then
        local inc, seq, size, verdict = line:match("^(%d+) (%d+) (%d+) (%a+)\n$")
        if inc then
          open = false
          res.bytes = res.bytes + tonumber(size)
          local id = inc .. ":" .. seq
          seen[id] = (seen[id] or 0) + 1
          if verdict ~= "ok" then corrupted = corrupted + 1 end
        end
      elseif line ~= "" then
        open = true            -- a record cut by the kill: as good as open
      end
    end
    if open and killed_logs[log] then allowance = allowance + 1 end
  end
  local missing, dup, received, uncounted = 0, 0, 0, 0
  for inc = 1, nextinc do
    local c = committed[inc]
    for seq = 1, c do
      local n = seen[inc .. ":" .. seq] or 0
      if n == 0 then missing = missing + 1 elseif n > 1 then dup = dup + n - 1 end
      seen[inc .. ":" .. seq] = nil
      received = received + n
    end
    local extra = seen[inc .. ":" .. (c + 1)]
    if extra and killed_inc[inc] then    -- put finished, counter not yet written
      if extra > 1 then dup = dup + extra - 1 end
      received = received + extra
      uncounted = uncounted + 1
      seen[inc .. ":" .. (c + 1)] = nil
    end
    res.messages = res.messages + c
  end
  for id, n in pairs(seen) do
    corrupted = corrupted + n
    note("message " .. id .. " was never put")
  end
  res.received, res.missing, res.allowance = received, missing, allowance
  res.uncounted = uncounted
  res.lost = math.max(0, missing - allowance)
  res.duplicated, res.corrupted = dup, corrupted

  -- clean up, then look again
  q:close(); committed:close(); beats:close(); ctl:close(); rss:close()
  collectgarbage(); collectgarbage()
  local left = shm_entries(pids)
  res.shm_after_cleanup = #left
  for _, name in ipairs(left) do note("left after cleanup: /dev/shm/" .. name) end
  res.seconds = now() - t_start

  local f = assert(io.open(dir .. "/result", "w"))
  for k, v in pairs(res) do
    if type(v) ~= "table" then f:write(k, "=", tostring(v), "\n") end
  end
  f:close()
  pidlog:close()
end

-- }=================================================================

-- {=================================================================
-- The driver: runs the inner process, then checks what it left behind
-- ==================================================================

local function main()
  if arg[1] == "--inner" then
    inner(arg[2], tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]))
    return
  end
  local seconds = tonumber(arg[1] or os.getenv("SOAK_SECONDS") or 180)
  local kill_every = tonumber(os.getenv("SOAK_KILL_EVERY") or "")
    or math.min(20, math.max(2, seconds / 4.5))
  local seed = tonumber(os.getenv("SOAK_SEED") or "") or os.time()
  local tolerate = os.getenv("SOAK_TOLERATE_ORPHANS") == "1"
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  print(("soak: %d producers x %d consumers, %g s, a producer and a consumer killed every %g s,"
    .. " seed %d"):format(NPROD, NCONS, seconds, kill_every, seed))
  io.stdout:flush()

  local lua = compat.interpreter
  do local i = -1; while arg[i] do lua = arg[i]; i = i - 1 end end
  local t0 = now()
  local limit = seconds + 4 * HANG + 60
  local ok, r = pcall(mp.subprocess.run,
    { lua, arg[0], "--inner", dir, tostring(seconds), tostring(kill_every), tostring(seed) },
    { timeout = limit })
  local run_hung = false
  if not ok then
    run_hung = mp.is_error(r, "Timeout")
    io.stderr:write("soak: ", run_hung and ("the run hung: killed after " .. limit .. " s")
      or ("the run failed: " .. tostring(r)), "\n")
  elseif r.returncode ~= 0 then
    io.stderr:write("soak: the run exited with ", tostring(r.returncode), "\n")
  end
  mp.sleep(1.2)          -- the workers of a killed run end within 1 s

  local res = {}
  local rpath = dir .. "/result"
  if not read(rpath) then rpath = "/dev/null" end
  for line in io.lines(rpath) do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k then res[k] = tonumber(v) or v end
  end
  local pids = {}
  for pid in (read(dir .. "/pids") or ""):gmatch("%d+") do pids[tonumber(pid)] = true end
  local left = shm_entries(pids)
  for _, name in ipairs(left) do
    io.stderr:write("soak: left after exit (now removed): /dev/shm/", name, "\n")
    os.remove("/dev/shm/" .. name)
  end
  os.execute("rm -rf " .. dir)

  local mib = 1024 * 1024
  if res.seconds == nil then    -- the run did not get to its counts
    print(("soak FAILED: the run %s after %.0f s; hangs %d, /dev/shm after exit %d")
      :format(run_hung and "hung" or "failed", now() - t0, run_hung and 1 or 0, #left))
    os.exit(1)
  end
  local function n(k) return tonumber(res[k]) or -1 end
  local rss_max = math.max(n("rss_parent"), n("rss_producer1"), n("rss_consumer1"))
  local failed = not ok or r.returncode ~= 0
    or n("lost") ~= 0 or n("duplicated") ~= 0 or n("corrupted") ~= 0 or n("hangs") ~= 0
    or n("crashes") ~= 0 or n("stranded") ~= 0
    or res.rss_seen ~= "true" or rss_max > RSS_LIMIT
    or (n("shm_orphans") ~= 0 and not tolerate) or n("shm_after_cleanup") ~= 0 or #left ~= 0
  print(("soak %s: %.0f s, %d messages, %.0f MiB (%d received, %d of them put by a"
    .. " killed producer that had not counted them yet; %d missing,"
    .. " %d taken by killed consumers), lost %d, duplicated %d, corrupted %d, hangs %d,"
    .. " crashes %d, stranded %d, kills %d+%d, rss growth parent/producer/consumer"
    .. " %.1f/%.1f/%.1f MiB, /dev/shm orphans %d%s, after cleanup %d, after exit %d,"
    .. " %.1f s wall")
    :format(failed and "FAILED" or "ok", n("seconds"), n("messages"), n("bytes") / mib,
      n("received"), n("uncounted"), n("missing"), math.min(n("missing"), n("allowance")),
      n("lost"), n("duplicated"), n("corrupted"), n("hangs"), n("crashes"), n("stranded"),
      n("killed_producers"), n("killed_consumers"), n("rss_parent") / mib,
      n("rss_producer1") / mib, n("rss_consumer1") / mib, n("shm_orphans"),
      (tolerate and n("shm_orphans") > 0) and " (tolerated)" or "",
      n("shm_after_cleanup"), #left, now() - t0))
  os.exit(failed and 1 or 0)
end

main()

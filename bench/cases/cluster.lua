-- mp.cluster.Pool (issue 14) against Python RQ (bench/cases/cluster.py),
-- each on its own private redis-server (a Unix socket in a temporary
-- directory, no persistence), started and stopped here with the workers.
--
-- Workers: one `mproc worker --processes 2` (the documented deployment: one
-- worker per machine, a local pool of N processes), i.e. 2 processes that
-- run tasks; the RQ side runs 2 SimpleWorker processes.
--
-- Metrics (the same names on both sides):
-- * tasks_2000: 2 000 trivial tasks (x + 1) submitted at once, every
--   result fetched; tasks/s, goal >= 20x RQ's.  Here 2 000 apply_async (an
--   XADD each); RQ enqueues its 2 000 jobs in one pipeline (enqueue_many,
--   its fastest way).  An apply_async writes its XADD without waiting for
--   the reply, and the worker runs the entries in batches.
-- * apply_async_get: one task's round trip (submit, run, result); s per op,
--   goal <= 0.2x RQ's.
-- * map_100k_chunked: a map of 100 000 trivial items in 32 chunks of 3 125
--   (the cluster pool's default chunking for 100 000); items/s, reported.
-- * map_100k_chunked_vs_local_pool (this side only): the cluster map's rate
--   over a local mp.Pool(2) map of the same items and chunksize.
-- Without redis-server or mproc.redis (hiredis) it prints a skip note on
-- stderr and no metric.
local bench = require "bench"
local core = require "mproc.core"
local compat = require "mproc.compat"

local function have(prog)
  return compat.succeeded("command -v " .. prog .. " >/dev/null 2>&1")
end
if not have("redis-server") then
  io.stderr:write("cluster: skipped: redis-server is not installed (Debian: redis-server)\n")
  return
end
if not pcall(require, "mproc.redis") then
  io.stderr:write("cluster: skipped: mproc.redis is not built (needs hiredis; Debian: "
    .. "libhiredis-dev, then make)\n")
  return
end

local mp = require "mproc"
local sp = mp.subprocess
local redis = require "mproc.redis"

local NTASKS = 2000
local NMAP, CHUNK = 100000, 3125
local KEY = "bench-key"
local ROOT = os.getenv("PWD")
local MPROC = ROOT .. "/bin/mproc"
local CPATH = (package.cpath:gsub("%./", ROOT .. "/"))

local dir, server, worker, pool, watchdog

-- Should this process die before its cleanup (a signal, say SIGPIPE or
-- SIGKILL), the watchdog stops the server and the worker and removes dir:
-- it waits for EOF on its stdin, a pipe from this process, and is told
-- "done" otherwise.
local function start_watchdog(pids)
  local list = table.concat(pids, " ")
  local alive = "kill -0 " .. table.concat(pids, " || kill -0 ")
  watchdog = sp.Popen({ "sh", "-c", ([[
read x; [ "$x" = done ] && exit 0
kill -TERM %s
n=0; while [ $n -lt 40 ] && { %s; } 2>/dev/null; do sleep 0.2; n=$((n + 1)); done
kill -KILL %s; rm -rf '%s'; exit 0]]):format(list, alive, list, dir) },
    { stdin = "pipe", stdout = "devnull", stderr = "devnull" })
end

local function cleanup()
  if pool then pcall(pool.terminate, pool); pool = nil end
  for _, p in ipairs({ worker or false, server or false }) do
    if p and p:poll() == nil then
      pcall(p.terminate, p)
      if not pcall(p.wait, p, 15) then pcall(p.kill, p); pcall(p.wait, p, 5) end
    end
  end
  worker, server = nil, nil
  if watchdog then
    pcall(watchdog.stdin.write, watchdog.stdin, "done\n")
    pcall(watchdog.stdin.close, watchdog.stdin)
    pcall(watchdog.wait, watchdog, 5)
    watchdog = nil
  end
  if dir then os.execute("rm -rf '" .. dir .. "'"); dir = nil end
end

local function inc(x) return x + 1 end

local function seconds(fn)
  local t0 = core.now(); fn(); return core.now() - t0
end

local function best_rate(n, reps, fn)
  local b = 0
  for _ = 1, reps do b = math.max(b, n / seconds(fn)) end
  return b
end

local function main()
  local p = io.popen("mktemp -d /tmp/mproc-bench-cluster.XXXXXX")
  dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp failed")
  local sock = dir .. "/redis.sock"
  server = sp.Popen({ "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                      "--appendonly", "no", "--dir", dir }, { stdout = "devnull",
                      stderr = "devnull" })
  local deadline = core.now() + 10
  while true do
    local ok, c = redis.connect(sock, nil, 1)
    if ok then c:close() break end
    assert(server:poll() == nil, "redis-server exited")
    assert(core.now() < deadline, "redis-server did not start")
    core.sleep(0.02)
  end
  local url = "unix:" .. sock
  local log = io.open(dir .. "/worker.log", "w")
  worker = sp.Popen({ "env", "LUA_CPATH=" .. CPATH, "MPROC_AUTHKEY=" .. KEY, MPROC, "worker",
                      "--url", url, "--queue", "bench", "--processes", "2" },
                    { stdout = "devnull", stderr = log })
  log:close()
  start_watchdog({ server.pid, worker.pid })
  pool = mp.cluster.Pool { url = url, queue = "bench", authkey = KEY }

  local items = {}
  for i = 1, NMAP do items[i] = i end
  -- worker up and warm (as in pool.lua; cluster.py warms up the same way)
  assert(pool:apply(inc, 1) == 2)
  pool:map(inc, items, CHUNK)

  local rs = {}
  bench.report("tasks_2000", best_rate(NTASKS, 3, function()
    for i = 1, NTASKS do rs[i] = pool:apply_async(inc, { i }) end
    for i = 1, NTASKS do assert(rs[i]:get() == i + 1) end
  end), "tasks/s", ">=20")

  bench.report("apply_async_get", bench.per_op(function(n)
    for i = 1, n do pool:apply_async(inc, { i }):get() end
  end), "s", "<=0.2")

  local out
  local cluster_map = best_rate(NMAP, 3, function() out = pool:map(inc, items, CHUNK) end)
  assert(out[NMAP] == NMAP + 1)
  bench.report("map_100k_chunked", cluster_map, "items/s")
  pool:close(); pool:join(30); pool = nil

  local lp = mp.Pool(2)
  lp:map(inc, items, CHUNK)
  local local_map = best_rate(NMAP, 3, function() out = lp:map(inc, items, CHUNK) end)
  assert(out[NMAP] == NMAP + 1)
  lp:close(); lp:join()
  bench.report("map_100k_chunked_vs_local_pool", cluster_map / local_map, "x")
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("cluster.lua: ", tostring(err), "\n")
  os.exit(1)
end

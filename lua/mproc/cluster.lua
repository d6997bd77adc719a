-- mp.cluster (API.md "Cluster"; DESIGN.md "Beyond one machine"): the Pool
-- API over Redis streams, served by `mproc worker` processes anywhere.
--
-- A task is one entry of the stream <queue>, read by the consumer group
-- "mproc" (Redis leases it to one worker, counts its deliveries, keeps it
-- pending until acknowledged).  Its fields:
--   t  task id (the client's)        c  the client's result stream
--   h  "lease_ms max_deliveries timeout|-"
--   d  the function and arguments (string.pack(">s4", fn) .. args)
--   s  HMAC-SHA256 under the authkey of "task", the queue and t, c, h, d
-- A worker checks s before it decodes anything, runs the task in its local
-- mp.Pool (entries in batches, one local pool task each), then in one
-- MULTI adds the results to c (one entry per client stream: fields r, the
-- pairs string.pack(">s4s4", t, d) of the tasks that ended, and s, signing
-- "results", c, r), acknowledges and deletes the task entries.  A task's
-- XADD is written at once and its reply read later (Link:send).  The client
-- reads c with XREAD (a blocking read left pending on a second connection,
-- whose descriptor the scheduler watches), keeps the first result of each
-- task and drops the others (a task run twice).  Anything unsigned or
-- badly signed goes to <queue>:dead.  mproc/cluster/worker.lua is the
-- worker side.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local result = require "mproc.result"
local poolargs = require "mproc.poolargs"

local have_redis, redis = pcall(require, "mproc.redis")
if not have_redis then
  error("mp.cluster: the Redis client module mproc.redis is not available ("
    .. tostring(redis):match("[^\n]*") .. "); it is built with hiredis "
    .. "(Debian: apt-get install libhiredis-dev, then make)", 0)
end

local hmac, bytes_equal = core.net_hmac_sha256, core.net_bytes_equal
local dumps, now = core.codec_dumps, core.now
local pack, concat, tmove, idiv = compat.pack, table.concat, compat.move, compat.idiv
local spack, sunpack, pcall = compat.spack, compat.sunpack, compat.pcall
local argerror, typename = util.argerror, util.typename
local errnew, raise = errors.new, errors.raise
local min, max = math.min, math.max
local make_task_error, check_fn = poolargs.make_task_error, poolargs.check_fn
local apply_args = poolargs.apply_args
local check_chunksize, collect_items = poolargs.check_chunksize, poolargs.collect_items
local map_opts, check_map_opts = poolargs.map_opts, poolargs.check_map_opts

local GROUP = "mproc"
local READ_BLOCK_MS = 1000  -- a pending XREAD returns this often
local AHEAD = 64            -- imap: chunks read ahead
local XADD_BATCH = 512      -- map: XADDs per pipeline
local SEND_AHEAD = 1024     -- commands sent whose replies are not read yet
local RETRY_EVERY = 0.5     -- seconds between tries to reach a Redis that is down

local M = { GROUP = GROUP }

-- {=====================================================================
-- Redis links
-- ======================================================================

-- url: "redis://[:password@]host[:port][/db]" or "unix:/path[?db=N]".
local function parse_url(url, fname)
  local t = {}
  if url:match("^unix:") then
    local path, q = url:match("^unix:(/[^?]*)%??(.*)$")
    if not path then argerror(1, fname, "bad url '" .. url .. "' (unix:/path expected)", 4) end
    t.path = path:gsub("^//", "")
    t.db = tonumber(q:match("db=(%d+)") or "0")
    t.addr = "unix:" .. t.path
  else
    local rest = url:match("^redis://(.*)$")
    if not rest then
      argerror(1, fname, "bad url '" .. url .. "' (redis://host:port/db or unix:/path expected)",
        4)
    end
    local auth, hostpart = rest:match("^(.*)@(.*)$")
    if auth then
      t.password = auth:match("^[^:]*:(.*)$") or auth
      rest = hostpart
    end
    local hp, db = rest:match("^([^/]*)/?(%d*)$")
    if not hp then argerror(1, fname, "bad url '" .. url .. "'", 4) end
    local host, port = hp:match("^%[(.*)%]:?(%d*)$")
    if not host then host, port = hp:match("^([^:]*):?(%d*)$") end
    t.host = host ~= "" and host or "127.0.0.1"
    t.port = tonumber(port) or 6379
    t.db = tonumber(db) or 0
    t.addr = t.host .. ":" .. t.port
  end
  return t
end
M.parse_url = parse_url

local Link = {}
Link.__index = Link

local function new_link(u, timeout)
  return setmetatable({ u = u, timeout = timeout or 10, gen = 0,
                        q = {}, qh = 1, qt = 0, qgen = 0 }, Link)
end
M.new_link = new_link

local function oserror(self, msg)
  raise("OSError", msg, { address = self.u.addr })
end

-- The connection, made (and authenticated, database selected) when needed.
function Link:conn()
  local c = self.c
  if c and not c:closed() then return c end
  self.c = nil
  local u = self.u
  local ok, c2, msg = redis.connect(u.path or u.host, u.port, self.timeout)
  if not ok then oserror(self, msg) end
  local function setup(argv)
    local ok2, kind, m = c2:command(argv)
    if not ok2 then
      c2:close()
      oserror(self, kind == "reply" and ("redis %s: %s: %s"):format(u.addr, argv[1], m) or m)
    end
  end
  if u.password then setup { "AUTH", u.password } end
  if u.db ~= 0 then setup { "SELECT", u.db } end
  self.c, self.gen = c2, self.gen + 1
  return c2
end

-- {------ commands whose replies are read later (send, drain) ------
-- A sent command stays queued until its reply came; a connection lost
-- meanwhile is made again and the queued commands sent again (a task
-- added twice this way is harmless: its second result is dropped).

local function queue_empty(self) return self.qh > self.qt end

local function is_up(self) return self.c ~= nil and not self.c:closed() end

-- Writes every queued command again (on a new connection): true or
-- false, message.
local function resend(self, c)
  for i = self.qh, self.qt do
    local ok, _, msg = c:append(self.q[i][1])
    if not ok then return false, msg end
  end
  self.qgen = self.gen
  return true
end

local function pop_reply(self, v)
  local i = self.qh
  local cb = self.q[i][2]
  self.q[i] = nil
  self.qh = i + 1
  if queue_empty(self) then self.q, self.qh, self.qt = {}, 1, 0 end
  cb(v)
end

-- Waits for the replies of every queued command (their callbacks run).
function Link:drain()
  local tries = 0
  while not queue_empty(self) do
    local fresh = not is_up(self)
    local c = self:conn()
    local ok, v, msg = true
    if self.qgen ~= self.gen then ok, msg = resend(self, c) end
    if ok then
      ok, v, msg = c:reply()
      if ok then pop_reply(self, v)
      elseif v == "reply" then ok = true; pop_reply(self, { err = msg }) end
    end
    if not ok then
      tries = tries + 1
      if fresh or tries > 1 then oserror(self, msg) end
    end
  end
end

-- Takes the replies that have arrived, without waiting (but for those of
-- a connection that was lost: sent again, they are waited for).
function Link:poll_replies()
  if queue_empty(self) then return end
  if self.qgen ~= self.gen or not is_up(self) then return self:drain() end
  local c = self.c
  while not queue_empty(self) do
    local ok, got, v = c:try_reply()
    if not ok then return self:drain() end
    if not got then return end
    pop_reply(self, v)
  end
end

-- Sends argv now; cb(reply) runs when its reply is read (an error reply
-- as {err = text}).  Raises OSError when Redis cannot be reached (argv is
-- then dropped).
function Link:send(argv, cb)
  local t = self.qt + 1
  self.q[t], self.qt = { argv, cb }, t
  local ok, msg
  for _ = 1, 2 do
    local fresh = not is_up(self)
    local okc, c = pcall(self.conn, self)
    if not okc then
      self.q[t], self.qt = nil, t - 1
      error(c, 0)
    end
    if self.qgen ~= self.gen then ok, msg = resend(self, c)
    else
      local r1, _, r3 = c:append(argv)
      ok, msg = r1, r3
    end
    if ok or fresh then break end
  end
  if not ok then
    self.q[t], self.qt = nil, t - 1
    oserror(self, msg)
  end
  if t - self.qh >= SEND_AHEAD then
    self:poll_replies()
    if self.qt - self.qh >= 2 * SEND_AHEAD then self:drain() end
  end
end

-- }------

-- Calls conn:method(arg); a connection that was up and failed (the server
-- restarted, say) is made again and the call tried once more.  A task
-- sent twice this way is harmless: its second result is dropped.
local function call(self, method, arg)
  if not queue_empty(self) then self:drain() end
  local fresh = not (self.c and not self.c:closed())
  local c = self:conn()
  local ok, v, msg = c[method](c, arg)
  if not ok and v ~= "reply" and not fresh then
    c = self:conn()
    ok, v, msg = c[method](c, arg)
  end
  return ok, v, msg
end

-- One command: its reply; an error reply raises OSError too.
function Link:cmd(argv)
  local ok, v, msg = call(self, "command", argv)
  if ok then return v end
  if v == "reply" then oserror(self, ("redis %s: %s: %s"):format(self.u.addr, argv[1], msg)) end
  oserror(self, msg)
end

-- One command: true, reply or false, the error reply's text.
function Link:try(argv)
  local ok, v, msg = call(self, "command", argv)
  if ok then return true, v end
  if v == "reply" then return false, msg end
  oserror(self, msg)
end

-- Many commands in one round trip: their replies ({err = text} for errors).
function Link:pipe(list)
  local ok, v, msg = call(self, "pipeline", list)
  if ok then return v end
  oserror(self, msg)
end

-- A pipelined command whose reply is read later (try_reply).
function Link:append(argv)
  local ok, _, msg = self:conn():append(argv)
  if not ok then oserror(self, msg) end
end

-- got, reply: whether the pending reply has arrived.
function Link:try_reply()
  local c = self.c
  if not c or c:closed() then oserror(self, ("redis %s: connection lost"):format(self.u.addr)) end
  local ok, got, v = c:try_reply()
  if not ok then oserror(self, v) end
  return got, v
end

function Link:fileno()
  local c = self.c
  return c and not c:closed() and c:fileno() or nil
end

function Link:close()
  if self.c then self.c:close() end
  self.c = nil
end

-- Creates the consumer group (reading from the start: tasks added before
-- any worker came are served).
function M.ensure_group(link, queue)
  local ok, msg = link:try { "XGROUP", "CREATE", queue, GROUP, "0", "MKSTREAM" }
  if not ok and not msg:find("BUSYGROUP", 1, true) then
    oserror(link, ("redis %s: XGROUP CREATE %s: %s"):format(link.u.addr, queue, msg))
  end
end

-- {field = value} of an entry's flat field list (nil when it has none).
function M.fields(list)
  if type(list) ~= "table" then return nil end
  local f = {}
  for i = 1, (list.n or #list) - 1, 2 do
    local k, v = list[i], list[i + 1]
    if type(k) == "string" and type(v) == "string" and f[k] == nil then f[k] = v end
  end
  return f
end

-- }=====================================================================

-- {=====================================================================
-- Signing
-- ======================================================================

function M.task_sig(key, queue, t, c, h, d)
  return hmac(key, concat({ "task", queue, t, c, h, d }, "\n"))
end

-- A result entry carries the outcomes of one or more tasks of one client:
-- r = string.pack(">s4s4", t, d) repeated, signed once.
function M.result_sig(key, c, r)
  return hmac(key, concat({ "results", c, r }, "\n"))
end

M.bytes_equal = bytes_equal

-- The authkey: the option, else MPROC_AUTHKEY.
function M.authkey(given, fname)
  local key = given
  if key == nil then key = os.getenv("MPROC_AUTHKEY") end
  if key == nil or key == "" then
    error(("%s: no authkey (give authkey = ... or set MPROC_AUTHKEY)"):format(fname), 3)
  end
  if type(key) ~= "string" then argerror(1, fname, "'authkey' must be a string, got "
    .. typename(key), 3) end
  return key
end

-- }=====================================================================

-- {=====================================================================
-- What a worker's local pool runs
-- ======================================================================

-- run_task(d) -> the encoded outcome.  d: the task's `d` field, checked
-- already.  An apply task returns the packed values of fn(args); a chunk
-- {k = "c", s = star, n = count, i = items} the first value of each item
-- and the items that failed {index, value, traceback}.  Only _ENV as
-- upvalue: the local pool decodes it once and keeps it.
function M.run_task(d)
  local cdumps, cloads = require("mproc.core").codec_dumps, require("mproc.core").codec_loads
  local errs_mod = require "mproc.errors"
  local cpt = require "mproc.compat"
  local function check(ok, a, b)
    if ok then return a end
    errs_mod.raise(a, b)
  end
  local fnb, pos = cpt.sunpack(">s4", d)
  local cache = require("mproc.cluster").fn_cache
  local fn = cache[fnb]
  if fn == nil then
    local ok, a, b = cloads(fnb)
    if not ok then
      -- bytecode of another VM (a cluster mixing versions): say so
      local cl = require "mproc.cluster"
      local made = cl.bytecode_vm(fnb)
      if made and made ~= cl.THIS_VM then
        a, b = "SerializeError", ("the task's function was made by %s and this worker runs %s "
          .. "(start the workers with the callers' VM: MPROC_LUA)"):format(made, cl.THIS_VM)
      end
    end
    fn = check(ok, a, b)
    if cache.n >= 64 then for k in pairs(cache) do cache[k] = nil end cache.n = 0 end
    cache[fnb], cache.n = fn, cache.n + 1
  end
  local t = check(cloads(string.sub(d, pos)))
  local function encode(v)
    local ok, s, msg = cdumps(v, "result", true)
    if ok then return s end
    errs_mod.raise("SerializeError", msg)
  end
  if t.k == "c" then
    local out, errs = {}, nil
    local handler = errs_mod.catch
    local items = t.i
    for i = 1, t.n do
      local it = items[i]
      local ok, v
      if t.s then ok, v = cpt.xpcall(fn, handler, cpt.unpack(it, 1, it.n or #it))
      else ok, v = cpt.xpcall(fn, handler, it) end
      if ok then out[i] = v
      else
        errs = errs or {}
        errs[#errs + 1] = { i, v[1], v[2] }
      end
    end
    local res = { n = t.n, v = out, e = errs }
    local ok, s = cdumps(res, "result", true)
    if ok then return s end
    if errs then  -- an error value that cannot cross: its text does
      for _, e in ipairs(errs) do e[2] = errs_mod.error_text(e[2]) end
      ok, s = cdumps(res, "result", true)
      if ok then return s end
    end
    return encode(res)
  end
  return encode(cpt.pack(fn(cpt.unpack(t, 1, t.n))))
end

-- Functions run_task decoded in this process, by their bytes.
M.fn_cache = { n = 0 }

-- The VM that made the function encoded in s (the codec embeds its
-- string.dump near the start): "Lua 5.4", "LuaJIT"..., or nil.
M.THIS_VM = compat.luajit and "LuaJIT" or _VERSION
function M.bytecode_vm(s)
  local head = s:sub(1, 16)
  local v = head:match("\27Lua(.)")
  if v then
    local b = v:byte()
    return ("Lua %d.%d"):format((b - b % 16) / 16, b % 16)
  end
  if head:find("\27LJ", 1, true) then return "LuaJIT" end
  return nil
end

-- The `d` of a result entry for an error: "\0" .. {k = kind, m = message,
-- f = fields}, the fields dropped to text when they cannot be encoded.
function M.error_payload(kind, msg, f)
  local cdumps, errs_mod = require("mproc.core").codec_dumps, require "mproc.errors"
  local body = { k = kind, m = msg, f = f }
  local ok, s = cdumps(body, "error", true)
  if not ok and f then
    body.f = { traceback = f.traceback, value = f.value ~= nil
      and errs_mod.error_text(f.value) or nil }
    ok, s = cdumps(body, "error", true)
  end
  if not ok then s = select(2, cdumps({ k = kind, m = msg }, "error", true)) end
  return "\0" .. s
end

-- run_batch(ds) -> {d1, d2, ..., n = #ds, dt = seconds}: the outcome of
-- each task (the `d` of its result: "\1" .. values or an error payload),
-- and the time the batch took.  One local pool task runs a batch of
-- stream entries; an error of one task is its own outcome.  Only _ENV as
-- upvalue (see run_task).
function M.run_batch(ds)
  local cl = require "mproc.cluster"
  local errs_mod = require "mproc.errors"
  local clock = require("mproc.core").now
  local run = cl.run_task
  local catch = errs_mod.catch
  local t0 = clock()
  local out = { n = #ds }
  for i = 1, #ds do
    local ok, v = compat.xpcall(run, catch, ds[i])
    if ok then
      out[i] = "\1" .. v
    else
      local e, tb = v[1], v[2]
      if errs_mod.is_error(e, "SerializeError") then
        out[i] = cl.error_payload("SerializeError", e.message)
      else
        out[i] = cl.error_payload("TaskError", errs_mod.error_text(e),
          { value = e, traceback = tb })
      end
    end
  end
  out.dt = clock() - t0
  return out
end

-- }=====================================================================

-- {=====================================================================
-- The client: mp.cluster.Pool
-- ======================================================================

local Pool = {}
Pool.__index = Pool
Pool.__name = "mproc.cluster.Pool"

M.make_task_error = make_task_error

-- An error sent by a worker: {k = kind, m = message, f = fields}.
local function remote_error(e)
  if type(e) ~= "table" or type(e.k) ~= "string" or type(e.m) ~= "string" then
    return errnew("RemoteError", "a worker sent a malformed error")
  end
  local ok, err = pcall(errnew, e.k, e.m, type(e.f) == "table" and e.f or nil)
  if ok then return err end
  return errnew("RemoteError", e.k .. ": " .. e.m)
end

local function encode(v, root)
  local ok, s, msg = dumps(v, root, true)
  if ok then return s end
  raise(s, msg)
end

local function drop_task(self, tid)
  local task = self._tasks[tid]
  if not task then return nil end
  self._tasks[tid] = nil
  self._ntasks = self._ntasks - 1
  return task
end

local function refuse_task(self, tid, err)
  local task = self._tasks[tid]
  if not task then return end
  drop_task(self, tid)
  if task.job then task.job:fail(task.first, task.count, err) else task.r:_reject(err) end
end

-- The outcome d of task tid (its signature checked).
local function on_outcome(self, tid, d)
  local task = self._tasks[tid]
  if not task then return end  -- a task run twice: its first result won
  drop_task(self, tid)
  local ok, v, msg = core.codec_loads(d:sub(2))
  local err
  if not ok then err = errnew(v, msg)
  elseif d:byte(1) ~= 1 then err = remote_error(v) end
  local job = task.job
  if job then
    if err then return job:fail(task.first, task.count, err) end
    if type(v) ~= "table" or type(v.v) ~= "table" then
      return job:fail(task.first, task.count,
        errnew("RemoteError", "a worker sent a malformed result"))
    end
    job:deliver(task.first, task.count, v.v, v.e)
  elseif err then
    task.r:_reject(err)
  else
    task.r:_resolve(type(v) == "table" and v or { n = 0 })
  end
end

-- One result entry of our stream: r, s (outcomes) or t, refused.
local function on_result(self, f, dead)
  if f.refused then
    if f.t then
      refuse_task(self, f.t, errnew("AuthenticationError",
        ("a worker refused the task: %s"):format(f.refused)))
    end
    return
  end
  local r, s = f.r, f.s
  local tids = {}
  local ok = r and s and bytes_equal(s, M.result_sig(self._key, self._rs, r))
  if ok then
    local outs, pos, n = {}, 1, #r
    ok = pcall(function()
      while pos <= n do
        local t, d
        t, d, pos = sunpack(">s4s4", r, pos)
        if d == "" then error("empty outcome") end
        outs[#outs + 1] = t
        outs[#outs + 1] = d
      end
    end)
    if ok then
      for i = 1, #outs, 2 do on_outcome(self, outs[i], outs[i + 1]) end
      return
    end
  end
  -- unsigned, badly signed or malformed: the tasks it names fail
  dead[#dead + 1] = f
  if r then
    local pos = 1
    pcall(function()
      while pos <= #r do
        local t
        t, pos = sunpack(">s4", r, pos)
        tids[#tids + 1] = t
        pos = sunpack(">I4", r, pos) + pos + 4
      end
    end)
  end
  if f.t then tids[#tids + 1] = f.t end
  for _, tid in ipairs(tids) do
    refuse_task(self, tid, errnew("AuthenticationError", "a result for this task was not "
      .. "signed with the pool's authkey (does the worker use another authkey?)"))
  end
end

local function ignore() end

-- The reply of an XREAD of our result stream.
local function on_read(self, rep)
  if type(rep) ~= "table" then return end
  local stream = rep[1]
  local entries = type(stream) == "table" and stream[2]
  if type(entries) ~= "table" then return end
  local ids, dead = { "XDEL", self._rs }, {}
  for i = 1, entries.n or #entries do
    local e = entries[i]
    self._last = e[1]
    ids[#ids + 1] = e[1]
    local f = M.fields(e[2]) or {}
    on_result(self, f, dead)
  end
  -- sent, not waited for: the results are delivered already
  local link = self._link
  link:send(ids, ignore)
  for _, f in ipairs(dead) do
    local argv = { "XADD", self._queue .. ":dead", "MAXLEN", "~", "10000", "*",
                   "reason", "bad result signature", "stream", self._rs }
    for k, v in pairs(f) do argv[#argv + 1] = k; argv[#argv + 1] = v end
    link:send(argv, ignore)
  end
end

local function pump_body(self)
  self._link:poll_replies()
  local rl = self._rlink
  if self._reading then
    if self._reading ~= rl.gen or not rl:fileno() then
      self._reading = false  -- the link was remade: the read is gone
    else
      local got, rep = rl:try_reply()
      if got then
        self._reading = false
        on_read(self, rep)
      end
    end
  end
  if not self._reading and self._ntasks > 0 then
    rl:append { "XREAD", "COUNT", "1000", "BLOCK", READ_BLOCK_MS, "STREAMS", self._rs, self._last }
    self._reading = rl.gen
  end
  if self._ntasks == 0 and not self._keep_source then sched.remove_source(self) end
end

-- A lost connection does not raise from here (any wait of the program
-- pumps us): it is kept in _down, retried now and then, and raised by the
-- pool's own waits (r:get(), join, imap).
function Pool:_pump(now_please)
  if self._pumping or self._state == "TERMINATE" or self._pid ~= core.getpid() then return end
  if self._down and not now_please and now() < self._retry_at then return end
  self._pumping = true
  local ok, err = pcall(pump_body, self)
  self._pumping = false
  if ok then
    self._down = nil
  elseif errors.is_error(err, "OSError") then
    self._rlink:close()
    self._link:close()
    self._reading = false
    self._down, self._retry_at = err, now() + RETRY_EVERY
  else
    error(err, 0)
  end
end

-- Waits until pred() or the deadline; raises the OSError of a lost
-- connection (after one more try).
local pool_wait
function pool_wait(self, pred, deadline)
  if pred() then return true end
  if self._down then self:_pump(true) end
  if not pred() and self._down then error(self._down, 0) end
  local ok = sched.wait_event(function() return pred() or self._down ~= nil end, deadline)
  if not pred() and self._down then
    self:_pump(true)  -- one more try: a stale connection is made again
    if self._down then error(self._down, 0) end
    return pool_wait(self, pred, deadline)
  end
  return ok
end

function Pool:_poll() self:_pump() end

function Pool:_wait_fds(fds, modes, n)
  local fd = self._reading and self._rlink:fileno()
  if fd then
    n = n + 1
    fds[n], modes[n] = fd, "r"
  end
  return n
end

function Pool:_timer()
  if self._down then return self._retry_at end
  if self._ntasks > 0 then return now() + (self._reading and 1 or 0.2) end
  return nil
end

function Pool:_await(r, deadline)
  return pool_wait(self, function() return r._done end, deadline)
end

local CANCEL_SCRIPT = [[
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p > 0 then return 0 end
return redis.call('XDEL', KEYS[1], ARGV[2])]]

-- Deletes the entries not delivered yet: the ids of those deleted.
local function cancel_entries(self, eids)
  local cmds = {}
  for i, eid in ipairs(eids) do
    cmds[i] = { "EVAL", CANCEL_SCRIPT, "1", self._queue, GROUP, eid }
  end
  local reps = self._link:pipe(cmds)
  local out = {}
  for i, eid in ipairs(eids) do if reps[i] == 1 then out[eid] = true end end
  return out
end

function Pool:_cancel(r)
  local tid = r._tid
  local task = tid and self._tasks[tid]
  if task and not task.eid then self._link:drain() end
  if not task or not task.eid then return false end
  if not cancel_entries(self, { task.eid })[task.eid] then return false end
  drop_task(self, tid)
  return true
end

local function check_pool(self, fname)
  if getmetatable(self) ~= Pool then
    argerror(1, fname, "cluster Pool expected, got " .. typename(self), 3)
  end
  if self._pid ~= core.getpid() then
    error("a pool can only be used by the process that created it", 3)
  end
end

-- The result connection's socket: a blocking read is left pending on it
-- while tasks are out, so it turns readable when results come (and once a
-- second while they wait).  A foreign event loop watches it and calls
-- mp.poll().  The connection is made again after Redis went away: ask for
-- the descriptor again after an OSError.
function Pool:fileno()
  check_pool(self, "fileno")
  self:_pump(true)
  return self._rlink:conn():fileno()
end

local function check_running(self, fname)
  check_pool(self, fname)
  if self._state ~= "RUN" then error("pool is not running", 3) end
end

local function new_tid(self)
  self._seq = self._seq + 1
  return tostring(self._seq)
end

-- The XADD of one task.
local function task_argv(self, tid, d, timeout)
  local h = ("%d %d %s"):format(self._lease_ms, self._maxd, timeout and ("%.17g"):format(timeout)
    or "-")
  return { "XADD", self._queue, "*", "t", tid, "c", self._rs, "h", h, "d", d,
           "s", M.task_sig(self._key, self._queue, tid, self._rs, h, d) }
end

-- Adds the tasks {tid, argv, task} in batches; records each entry's id.
local function push_tasks(self, list)
  local i = 1
  while i <= #list do
    local cmds, j = {}, i
    while j <= #list and #cmds < XADD_BATCH do
      cmds[#cmds + 1] = list[j][2]
      j = j + 1
    end
    local reps = self._link:pipe(cmds)
    for k = 1, #cmds do
      local item = list[i + k - 1]
      local eid = reps[k]
      if type(eid) ~= "string" then
        local msg = type(eid) == "table" and eid.err or "no entry id"
        raise("OSError", ("redis %s: XADD %s: %s"):format(self._link.u.addr, self._queue, msg),
          { address = self._link.u.addr })
      end
      item[3].eid = eid
      self._tasks[item[1]] = item[3]
      self._ntasks = self._ntasks + 1
    end
    i = j
  end
  if self._ntasks > 0 then
    sched.add_source(self)
    self:_pump()
  end
end

local function fn_bytes(self, fn)
  local fb = self._fns[fn]
  if not fb then
    fb = spack(">s4", encode(fn, "fn"))
    self._fns[fn] = fb
  end
  return fb
end

local function apply_task(self, fn, args, opts)
  local d = fn_bytes(self, fn) .. encode(args, "args")
  local timeout = opts and opts.timeout
  if timeout == math.huge then timeout = nil end
  local tid = new_tid(self)
  local r = result.new(self, opts and opts.callback, opts and opts.error_callback)
  r._tid = tid
  -- sent now, its entry id read later (the next pump, or a cancel)
  local task = { r = r }
  self._link:send(task_argv(self, tid, d, timeout), function(eid)
    if type(eid) == "string" then task.eid = eid return end
    if self._tasks[tid] ~= task then return end
    drop_task(self, tid)
    r:_reject(errnew("OSError", ("redis %s: XADD %s: %s"):format(self._link.u.addr,
      self._queue, type(eid) == "table" and eid.err or "no entry id"),
      { address = self._link.u.addr }))
  end)
  self._tasks[tid] = task
  self._ntasks = self._ntasks + 1
  if not self._reading then
    sched.add_source(self)
    self:_pump()
  end
  return r
end

function Pool:apply_async(fn, args, opts)
  check_running(self, "apply_async")
  check_fn(fn, 1, "apply_async")
  return apply_task(self, fn, apply_args(args, opts), opts)
end

function Pool:submit(fn, ...)
  check_running(self, "submit")
  check_fn(fn, 1, "submit")
  return apply_task(self, fn, pack(...), nil)
end

function Pool:apply(fn, ...)
  check_running(self, "apply")
  check_fn(fn, 1, "apply")
  return apply_task(self, fn, pack(...), nil):get()
end

-- {------ jobs: map, starmap, imap ------

local Job = {}
Job.__index = Job

function Job:stop()
  self.failed = true
  local pool, eids, tids = self.pool, {}, {}
  for tid in pairs(self.live) do
    local task = pool._tasks[tid]
    if task and task.eid then eids[#eids + 1] = task.eid; tids[task.eid] = tid end
  end
  self.live = {}
  if #eids > 0 and pool._state ~= "TERMINATE" then
    local ok, gone = pcall(cancel_entries, pool, eids)
    if ok then for eid in pairs(gone) do drop_task(pool, tids[eid]) end end
  end
end

function Job:deliver(first, count, vals, errs)
  self.live[self.tid_of[first]] = nil
  self.on_values(first, count, vals, errs)
end

function Job:fail(first, count, err)
  self.live[self.tid_of[first]] = nil
  self.on_fail(first, count, err)
end

local function new_job(self, fn, star, cs)
  return setmetatable({ pool = self, fb = fn_bytes(self, fn), star = star, cs = cs,
                        live = {}, tid_of = {} }, Job)
end

-- Pushes items first..first+n-1 of `items` as chunks of job.cs.
local function push_job(self, job, items, first, n)
  local list = {}
  local i = first
  while i < first + n do
    local count = min(job.cs, first + n - i)
    local slice = { k = "c", s = job.star or nil, n = count, i = tmove(items, i, i + count - 1,
      1, {}) }
    local ok, body = pcall(encode, slice, "items")
    if not ok then  -- name the offending item by its index in the whole job
      for k = i, i + count - 1 do encode(items[k], ("items[%d]"):format(k)) end
      error(body, 0)
    end
    local tid = new_tid(self)
    job.live[tid] = true
    job.tid_of[i] = tid
    list[#list + 1] = { tid, task_argv(self, tid, job.fb .. body, nil),
                        { job = job, first = i, count = count } }
    i = i + count
  end
  push_tasks(self, list)
end

local function map_async(self, fname, fn, items, opts, star)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local list, n = collect_items(items, fname)
  opts = opts or {}
  local cs = check_chunksize(opts.chunksize, 3, fname) or max(1, idiv(n + 31, 32))
  local r = result.new(self, opts.callback, opts.error_callback)
  r._map = true
  local job = new_job(self, fn, star, cs)
  poolargs.map_results(job, r, core.pool_new_list(n), n)
  if n > 0 then push_job(self, job, list, 1, n) end
  return r
end

function Pool:map_async(fn, items, opts)
  return map_async(self, "map_async", fn, items, check_map_opts(opts, "map_async"), false)
end

function Pool:starmap_async(fn, items, opts)
  return map_async(self, "starmap_async", fn, items, check_map_opts(opts, "starmap_async"), true)
end

function Pool:map(fn, items, chunksize)
  return map_async(self, "map", fn, items, map_opts("map", chunksize), false):get()
end

function Pool:starmap(fn, items, chunksize)
  return map_async(self, "starmap", fn, items, map_opts("starmap", chunksize), true):get()
end

-- imap / imap_unordered: at most AHEAD chunks in flight beyond what the
-- loop has consumed.
local function imap(self, fname, fn, items, opts, ordered)
  check_running(self, fname)
  check_fn(fn, 1, fname)
  local nextitem, cs, ret_errors = poolargs.imap_args(fname, items, opts)
  local job = new_job(self, fn, false, cs)
  local buf = {}
  local s = poolargs.imap_stream {
    ordered = ordered, ahead = cs * AHEAD, nextitem = nextitem, ret_errors = ret_errors,
    store = function(i, v) buf[i] = v end,
    push = function(from, count)
      push_job(self, job, buf, from, count)
      for k = from, from + count - 1 do buf[k] = nil end
    end,
    wait = function(have) pool_wait(self, have, nil) end,
    stop = function() job:stop() end,
  }
  job.on_values = function(first, count, vs, es)
    local bad = {}
    if es then for _, e in ipairs(es) do bad[e[1]] = e end end
    for k = 1, count do
      local e = bad[k]
      if e then s.put(first + k - 1, nil, make_task_error(e[2], e[3]))
      else s.put(first + k - 1, vs[k]) end
    end
  end
  job.on_fail = s.fail
  return s.start()
end

function Pool:imap(fn, items, opts)
  return imap(self, "imap", fn, items, opts, true)
end

function Pool:imap_unordered(fn, items, opts)
  return imap(self, "imap_unordered", fn, items, opts, false)
end

-- }------

local function stop_local_worker(self, hard)
  local w = self._worker
  if not w then return end
  self._worker = nil
  pcall(function()
    if w:is_alive() then
      if hard then w:kill() else w:terminate() end
    end
    w:join(10)
    if w:is_alive() then w:kill(); w:join(5) end
  end)
end

local function shut(self)
  self._state = "TERMINATE"
  sched.remove_source(self)
  pcall(function() self._link:cmd { "DEL", self._rs } end)
  self._link:close()
  self._rlink:close()
end

function Pool:close()
  check_pool(self, "close")
  if self._state == "RUN" then self._state = "CLOSE" end
end

function Pool:terminate()
  check_pool(self, "terminate")
  if self._state == "TERMINATE" then return end
  pcall(self._link.drain, self._link)  -- the entry ids of tasks just sent
  local tasks = self._tasks
  self._tasks, self._ntasks = {}, 0
  local eids = {}
  for _, task in pairs(tasks) do if task.eid then eids[#eids + 1] = task.eid end end
  if #eids > 0 then pcall(cancel_entries, self, eids) end
  stop_local_worker(self, true)
  shut(self)
  local err = errnew("Cancelled", "the pool was terminated")
  for _, task in pairs(tasks) do
    local job = task.job
    if job then
      if not job.failed then job.failed = true; job.on_fail(task.first, task.count, err) end
    else
      task.r:_reject(err)
    end
  end
  sched.dispatch()
end

-- join: waits until every task has its result (after close).
function Pool:join(timeout)
  check_pool(self, "join")
  util.check_timeout(timeout, 1, "join")
  if self._state == "RUN" then error("pool is still running", 2) end
  if self._state == "CLOSE" then
    local ok = pool_wait(self, function() return self._ntasks == 0 end, sched.deadline(timeout))
    if not ok then return false end
    stop_local_worker(self, false)
    shut(self)
  end
  sched.dispatch()
  return true
end

function Pool:__close(err)
  if self._pid ~= core.getpid() then return end
  if err ~= nil then return self:terminate() end
  if self._state == "RUN" then self:close() end
  if self._state == "CLOSE" then self:join() end
  self:terminate()
end

function Pool:__gc()
  if self._worker and self._pid == core.getpid() then
    pcall(function() self._worker:terminate() end)
  end
end

function Pool:__tostring()
  return ("<cluster.Pool state=%s queue=%s url=%s>"):format(self._state, self._queue, self._url)
end

local POOL_OPTS = { url = true, queue = true, authkey = true, max_deliveries = true,
                    lease = true, processes = true }

local function new_pool(opts)
  opts = util.check_opts(opts, POOL_OPTS, "Pool", 1)
  local url = opts.url
  if type(url) ~= "string" then
    argerror(1, "Pool", "'url' must be a string, got " .. (url == nil and "no value"
      or typename(url)))
  end
  local u = parse_url(url, "Pool")
  local queue = opts.queue or "mproc"
  if type(queue) ~= "string" or queue == "" then
    argerror(1, "Pool", "'queue' must be a non-empty string, got " .. typename(queue))
  end
  local key = M.authkey(opts.authkey, "Pool")
  local maxd = util.opt_number(opts, "max_deliveries", "Pool", 1, true, 1) or 3
  local lease = util.opt_number(opts, "lease", "Pool", 1, false, 0.1) or 30
  local nproc = util.opt_number(opts, "processes", "Pool", 1, true, 0) or 0
  local cid = ("%x"):format(core.getpid()) .. "-" .. (core.net_random_bytes(6):gsub(".",
    function(c) return ("%02x"):format(c:byte()) end))
  local self = setmetatable({
    _url = url, _queue = queue, _key = key, _maxd = maxd, _lease_ms = math.floor(lease * 1000),
    _cid = cid, _rs = queue .. ":r:" .. cid, _tasks = {}, _ntasks = 0, _seq = 0,
    _last = "0-0", _reading = false, _state = "RUN", _pid = core.getpid(),
    _fns = setmetatable({}, { __mode = "k" }),
    _link = new_link(u), _rlink = new_link(u, READ_BLOCK_MS / 1000 + 10),
  }, Pool)
  compat.gc(self)
  M.ensure_group(self._link, queue)
  if nproc > 0 then
    local process = require "mproc.process"
    local w = process.exports.Process {
      target = function(o) require("mproc.cluster.worker").serve(o) end,
      args = { { url = url, queue = queue, authkey = key, processes = nproc, signals = true } },
      name = "cluster-worker",
    }
    w:start()
    self._worker = w
  end
  return self
end

-- }=====================================================================

M.Pool = new_pool
M.PoolClass = Pool
return M

-- Managers (API.md "Managers"): mp.Manager() and mp.BaseManager.
--
-- A manager is a server that owns objects (dicts, lists, queues...) and
-- serves method calls on them to clients over a stream socket (Unix or
-- TCP).  The server is single-threaded: one event loop over all
-- connections; a call that would block (queue get, lock acquire, event
-- wait) is parked and retried after every other request, and answered at
-- its timeout.  Every connection first proves the authkey both ways with an
-- HMAC-SHA256 challenge (libcrypto, src/core/net.c) while only raw bytes of at
-- most 256 are read; no frame is decoded before that, so no function
-- bytecode is ever loaded from an unauthenticated peer.  Then both sides
-- derive one session key per direction from the authkey and the two
-- challenges, and every later frame is sealed (AES-256-GCM, the frame's
-- sequence number as nonce, all in C: NetConn:_secure in src/lua/net.c): a
-- frame altered, replayed, reordered or injected by anyone on the path
-- breaks the connection before it is decoded.  The frames that pass are
-- codec messages trusted like those of our own processes.
local core = require "mproc.core"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local codec = require "mproc.codec"
local process = require "mproc.process"

local check, raise, is_error, catch = errors.check, errors.raise, errors.is_error, errors.catch
local argerror, typename = util.argerror, util.typename
local pack, unpack = table.pack, table.unpack
local encode, decode = codec.encode, codec.decode

local M = {}

local AUTH_MAX = 256                 -- longest handshake frame
local MAX_FRAME = 1 << 30            -- longest request or reply
local AUTH_TIMEOUT = 10              -- seconds a peer has to authenticate
local SEND_TIMEOUT = 30              -- a peer that does not read is dropped
local CONNECT_TIMEOUT = 10
local BLOCK = "\0mproc-would-block"  -- what a parked method returns
local CHALLENGE_S, CHALLENGE_C = "#CHALLENGE#S", "#CHALLENGE#C"
local NONCE = 32                     -- random bytes after a challenge's prefix
local WELCOME, FAILURE = "#WELCOME#", "#FAILURE#"

-- The family authkey: made once in the main process (before any fork),
-- inherited by every child, like Python's process.authkey.  It is the
-- default key of every manager and the key a received proxy uses when its
-- process never connected to that address itself.
local FAMILY_KEY = core.random_bytes(32)
local known_keys = {}                -- address key -> authkey

-- A spawned child (no inherited memory) gets both from its parent.
require("mproc.context").inherit("manager.keys",
  function() return { FAMILY_KEY, known_keys } end,
  function(v) FAMILY_KEY, known_keys = v[1], v[2] end)

local function got(v) return v == nil and "no value" or typename(v) end

-- {=====================================================================
-- Addresses and framed I/O (both sides)
-- ======================================================================

-- {host, port} -> "tcp", host, port; "path" -> "unix", path
local function parse_address(addr, n, fname)
  if type(addr) == "string" then
    if #addr == 0 then argerror(n, fname, "address must not be empty", 4) end
    return "unix", addr
  end
  if type(addr) == "table" and type(addr[1]) == "string" and math.type(addr[2]) == "integer"
      and addr[2] >= 0 and addr[2] < 65536 then
    return "tcp", addr[1], addr[2]
  end
  argerror(n, fname, "address must be {host, port} or a Unix socket path", 4)
end

local function addr_key(addr)
  if type(addr) == "string" then return "unix:" .. addr end
  return "tcp:" .. addr[1] .. ":" .. addr[2]
end

local function addr_text(addr)
  if type(addr) == "string" then
    return addr:sub(1, 1) == "\0" and ("@" .. addr:sub(2)) or addr
  end
  return addr[1] .. ":" .. addr[2]
end

-- Sends one frame, waiting for the socket up to deadline; false when the
-- deadline passed.  Raises Closed/OSError.
local function send_frame(c, bytes, deadline)
  local done = check(c:_send(bytes))
  while not done do
    if not sched.wait_fd(c:_fileno(), "w", deadline) then return false end
    done = check(c:_flush())
  end
  return true
end

-- A reply usually comes within tens of microseconds: polling that long
-- first saves the two cross-CPU wake-ups that blocking costs (pipes do
-- the same in src/core/pipe.c); after it, the wait costs no CPU.
local SPIN = 50e-6

-- Receives one frame (mode "raw" or "value"); nil when the deadline passed.
local function recv_frame(c, maxlen, mode, deadline)
  local spin_until = core.now() + SPIN
  while true do
    local ok, have, v = c:_recv(maxlen, mode)
    if not ok then raise(have, v) end
    if have then return true, v end
    if core.now() >= spin_until
       and not sched.wait_fd(c:_fileno(), "r", deadline) then return nil end
  end
end

-- }=====================================================================

-- {=====================================================================
-- Server-side objects.  Plain Lua; methods return BLOCK when they would
-- block, and `_expire[method]` gives the answer when the wait timed out.
-- Their metatables are module fields so they travel by name.
-- ======================================================================

local function class(typeid, methods)
  methods._typeid = typeid
  methods.__index = methods
  methods.__name = "mproc.manager." .. typeid
  methods._expire = methods._expire or {}
  methods._timeout_arg = methods._timeout_arg or {}
  return methods
end

local SDict = class("dict", {})
function SDict:__getitem(k) return self.t[k] end
function SDict:__setitem(k, v)
  if k == nil then error("dict key must not be nil", 0) end
  if self.t[k] == nil and v ~= nil then self.n = self.n + 1
  elseif self.t[k] ~= nil and v == nil then self.n = self.n - 1 end
  self.t[k] = v
end
function SDict:get(k, default)
  local v = self.t[k]
  if v == nil then return default end
  return v
end
function SDict:len() return self.n end
function SDict:items()
  local out, i = {}, 0
  for k, v in pairs(self.t) do i = i + 1; out[i] = { k, v } end
  out.n = i
  return out
end
function SDict:keys()
  local out, i = {}, 0
  for k in pairs(self.t) do i = i + 1; out[i] = k end
  out.n = i
  return out
end
function SDict:values()
  local out, i = {}, 0
  for _, v in pairs(self.t) do i = i + 1; out[i] = v end
  out.n = i
  return out
end
function SDict:copy()
  local out = {}
  for k, v in pairs(self.t) do out[k] = v end
  return out
end
function SDict:pop(k, default)
  local v = self.t[k]
  if v == nil then return default end
  self:__setitem(k, nil)
  return v
end
function SDict:setdefault(k, default)
  if self.t[k] == nil then self:__setitem(k, default) end
  return self.t[k]
end
function SDict:update(t)
  for k, v in pairs(t) do self:__setitem(k, v) end
end
function SDict:clear() self.t, self.n = {}, 0 end
function SDict:has(k) return self.t[k] ~= nil end
M._SDict = SDict

local SList = class("list", {})
local function list_index(self, i, extra)
  if math.type(i) ~= "integer" then error("list index must be an integer", 0) end
  if i < 0 then i = self.n + 1 + i end
  if i < 1 or i > self.n + (extra or 0) then error("list index out of range", 0) end
  return i
end
function SList:__getitem(i)
  if math.type(i) ~= "integer" then return nil end
  if i < 0 then i = self.n + 1 + i end
  return self.t[i]
end
function SList:__setitem(i, v)
  i = list_index(self, i, 1)
  self.t[i] = v
  if i > self.n then self.n = i end
end
function SList:len() return self.n end
function SList:append(v) self.n = self.n + 1; self.t[self.n] = v end
function SList:extend(list)
  for i = 1, list.n or #list do self:append(list[i]) end
end
function SList:insert(i, v)
  i = list_index(self, i, 1)
  table.move(self.t, i, self.n, i + 1)
  self.t[i] = v
  self.n = self.n + 1
end
function SList:pop(i)
  if self.n == 0 then error("pop from empty list", 0) end
  i = list_index(self, i or self.n)
  local v = self.t[i]
  table.move(self.t, i + 1, self.n + 1, i)
  self.n = self.n - 1
  return v
end
function SList:index(v)
  for i = 1, self.n do if self.t[i] == v then return i end end
  return nil
end
function SList:remove(v)
  local i = self:index(v)
  if not i then error("list.remove(x): x not in list", 0) end
  self:pop(i)
end
function SList:count(v)
  local c = 0
  for i = 1, self.n do if self.t[i] == v then c = c + 1 end end
  return c
end
function SList:sort() table.sort(self.t) end
function SList:clear() self.t, self.n = {}, 0 end
function SList:totable() return table.move(self.t, 1, self.n, 1, { n = self.n }) end
M._SList = SList

local SNamespace = class("Namespace", {})
function SNamespace:__getitem(k) return self.t[k] end
function SNamespace:__setitem(k, v) self.t[k] = v end
function SNamespace:totable()
  local out = {}
  for k, v in pairs(self.t) do out[k] = v end
  return out
end
M._SNamespace = SNamespace

local SQueue = class("Queue", { _timeout_arg = { get = 1, put = 2 } })
function SQueue:qsize() return self.tail - self.head end
function SQueue:empty() return self.tail == self.head end
function SQueue:full() return self.maxsize > 0 and self:qsize() >= self.maxsize end
function SQueue:put(v)
  if self:full() then return BLOCK end
  self.items[self.tail] = v
  self.tail = self.tail + 1
  self.unfinished = self.unfinished + 1
end
function SQueue:get()
  if self.head == self.tail then return BLOCK end
  local v = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  return v
end
function SQueue:put_nowait(v)
  if self:full() then raise("Full", "queue is full") end
  return SQueue.put(self, v)
end
function SQueue:get_nowait()
  if self:empty() then raise("Empty", "queue is empty") end
  return SQueue.get(self)
end
function SQueue:task_done()
  if self.unfinished <= 0 then error("task_done() called too many times", 0) end
  self.unfinished = self.unfinished - 1
end
function SQueue:join()
  if self.unfinished > 0 then return BLOCK end
  return true
end
SQueue._timeout_arg.join = 1
SQueue._expire.get = function() raise("Empty", "queue is empty") end
SQueue._expire.put = function() raise("Full", "queue is full") end
SQueue._expire.join = function() return false end
M._SQueue = SQueue

local SLock = class("Lock", { _timeout_arg = { acquire = 1 } })
function SLock:acquire()
  if self.locked then return BLOCK end
  self.locked = true
  return true
end
function SLock:release()
  if not self.locked then error("release unlocked lock", 0) end
  self.locked = false
end
SLock._expire.acquire = function() return false end
M._SLock = SLock

local SEvent = class("Event", { _timeout_arg = { wait = 1 } })
function SEvent:set() self.flag = true end
function SEvent:clear() self.flag = false end
function SEvent:is_set() return self.flag end
function SEvent:wait()
  if not self.flag then return BLOCK end
  return true
end
SEvent._expire.wait = function() return false end
M._SEvent = SEvent

local INT_TYPES = {
  int8 = true, int16 = true, int32 = true, int64 = true, uint8 = true, uint16 = true,
  uint32 = true, uint64 = true, b = true, B = true, h = true, H = true, i = true,
  I = true, l = true, L = true, q = true, Q = true,
}
local FLOAT_TYPES = { float = true, double = true, f = true, d = true }

local SValue = class("Value", {})
local function value_conv(self, x)
  if self.kind == "bool" then return not not x end
  if type(x) ~= "number" then error("number expected, got " .. type(x), 0) end
  if self.kind == "int" then
    local i = math.tointeger(x)
    if not i then error("integer expected", 0) end
    return i
  end
  return x + 0.0
end
function SValue:get() return self.v end
function SValue:set(x) self.v = value_conv(self, x) end
function SValue:add(n)
  self.v = value_conv(self, self.v + n)
  return self.v
end
function SValue:cas(old, new)
  if self.v ~= old then return false end
  self.v = value_conv(self, new)
  return true
end
M._SValue = SValue

-- Constructors of the built-in types, by typeid.
local TYPES = {
  dict = function(t)
    local d = setmetatable({ t = {}, n = 0 }, SDict)
    if t ~= nil then d:update(t) end
    return d
  end,
  list = function(t)
    local l = setmetatable({ t = {}, n = 0 }, SList)
    if t ~= nil then l:extend(t) end
    return l
  end,
  Namespace = function(t)
    local ns = setmetatable({ t = {} }, SNamespace)
    if t ~= nil then for k, v in pairs(t) do ns.t[k] = v end end
    return ns
  end,
  Queue = function(maxsize)
    return setmetatable({ items = {}, head = 1, tail = 1, maxsize = maxsize or 0,
                          unfinished = 0 }, SQueue)
  end,
  Lock = function() return setmetatable({ locked = false }, SLock) end,
  Event = function() return setmetatable({ flag = false }, SEvent) end,
  Value = function(typ, init)
    local kind = (typ == "bool" or typ == "?") and "bool" or INT_TYPES[typ] and "int"
      or FLOAT_TYPES[typ] and "float"
    if not kind then error(("unknown Value type '%s'"):format(tostring(typ)), 0) end
    local v = setmetatable({ kind = kind, typ = typ }, SValue)
    v.v = value_conv(v, init == nil and (kind == "bool" and false or 0) or init)
    return v
  end,
}
TYPES.JoinableQueue = TYPES.Queue
M._TYPES = TYPES

-- }=====================================================================

-- {=====================================================================
-- The server: one event loop over every connection
-- ======================================================================

-- mp.Error kinds raised by a server method (Empty, Full...) reach the
-- client as themselves; anything else becomes RemoteError.
-- tb: the traceback errors.catch kept (sent along for a RemoteError).
local function error_reply(e, tb)
  if is_error(e) then return { false, e.kind, e.message } end
  return { false, "RemoteError", type(e) == "string" and e or tostring(e), tb }
end

-- srv: {lfd, key, registry, poller, conns = fd -> conn state, objects,
-- ids, next_id, parked = list, stop}
local function drop(srv, cs)
  if cs.dead then return end
  cs.dead = true
  srv.conns[cs.fd] = nil
  srv.poller:_del(cs.fd)
  cs.conn:_close()
end

local function reply(srv, cs, msg)
  local ok, bytes = pcall(encode, msg, "reply")
  if not ok then bytes = encode(error_reply(bytes)) end
  local sent, done = pcall(send_frame, cs.conn, bytes, sched.deadline(SEND_TIMEOUT))
  if not sent or not done then drop(srv, cs) end
end

local function send_raw(srv, cs, bytes)
  local ok, done = pcall(send_frame, cs.conn, bytes, sched.deadline(SEND_TIMEOUT))
  if not ok or not done then drop(srv, cs) return false end
  return true
end

local function object_id(srv, obj)
  local id = srv.ids[obj]
  if not id then
    id = srv.next_id
    srv.next_id = id + 1
    srv.ids[obj], srv.objects[id] = id, obj
  end
  return id
end

local function typeid_of(obj)
  local mt = getmetatable(obj)
  return type(mt) == "table" and type(mt._typeid) == "string" and mt._typeid or "auto"
end

-- Runs a call; returns the reply, or nil when it is parked.
local function run_call(srv, cs, req, expired)
  local id, method = req[2], req[3]
  local obj = srv.objects[id]
  if obj == nil then
    return { false, "RemoteError", ("no object %s in the manager"):format(tostring(id)) }
  end
  local mt = getmetatable(obj)
  local fn = obj[method]
  if type(fn) ~= "function" then
    return { false, "RemoteError", ("'%s' object has no method '%s'")
      :format(typeid_of(obj), tostring(method)) }
  end
  local args = req[4]
  if expired then fn = mt._expire[method] end
  local r = pack(xpcall(fn, catch, obj, unpack(args, 1, args.n)))
  if not r[1] then return error_reply(r[2][1], r[2][2]) end
  if r[2] == BLOCK and r.n == 2 then
    local ti = type(mt) == "table" and mt._timeout_arg and mt._timeout_arg[method]
    local timeout = ti and args[ti]
    if timeout == 0 then return run_call(srv, cs, req, true) end
    local p = { cs = cs, req = req, deadline = sched.deadline(timeout) }
    srv.parked[#srv.parked + 1] = p
    cs.parked = p
    return nil
  end
  r[1] = true
  return r
end

local function handle_request(srv, cs, req)
  if type(req) ~= "table" then return drop(srv, cs) end
  local op = req[1]
  local res
  if op == "call" then
    res = run_call(srv, cs, req)
    if res == nil then return end
  elseif op == "create" or op == "reg" then
    local fn = op == "create" and TYPES[req[2]] or srv.registry[req[2]]
    if type(fn) ~= "function" then
      res = { false, "RemoteError",
              ("no type or function '%s' in the manager"):format(tostring(req[2])) }
    else
      local args = req[3]
      local r = pack(xpcall(fn, catch, unpack(args, 1, args.n)))
      if not r[1] then res = error_reply(r[2][1], r[2][2])
      else
        local v = r[2]
        local t = type(v)
        if t == "table" or t == "userdata" then
          res = { true, "proxy", object_id(srv, v), typeid_of(v) }
        else
          res = { true, "value", v }
        end
      end
    end
  elseif op == "shutdown" then
    srv.stop = true
    res = { true }
  elseif op == "ping" then
    res = { true }
  else
    res = { false, "RemoteError", "unknown request " .. tostring(op) }
  end
  reply(srv, cs, res)
end

-- Parked calls: retried after every request, answered at their deadline.
local function retry_parked(srv)
  local again = true
  while again do
    again = false
    local list = srv.parked
    srv.parked = {}
    local now = sched.now()
    for _, p in ipairs(list) do
      local cs = p.cs
      if not cs.dead then
        cs.parked = nil
        local res = run_call(srv, cs, p.req)
        if res then
          reply(srv, cs, res)
          again = true           -- a get may unblock a put, ...
        elseif p.deadline and now >= p.deadline then
          -- parked again by run_call: take it back and expire it
          srv.parked[#srv.parked] = nil
          cs.parked = nil
          reply(srv, cs, run_call(srv, cs, p.req, true))
          again = true
        else
          -- run_call parked a fresh copy; keep the original deadline
          srv.parked[#srv.parked].deadline = p.deadline
        end
      end
    end
  end
end

-- Handshake, server side: the peer answers our challenge, then proves
-- that we know the key too.
local function start_auth(srv, fd)
  local cs = { fd = fd, conn = core.net_conn(fd), state = "auth1",
               auth_deadline = sched.now() + srv.auth_timeout }
  check(srv.poller:_add(fd))
  srv.conns[fd] = cs
  cs.challenge = CHALLENGE_S .. core.random_bytes(NONCE)
  send_raw(srv, cs, cs.challenge)
end

local function auth_step(srv, cs, msg)
  if cs.state == "auth1" then
    if core.bytes_equal(msg, core.hmac_sha256(srv.key, cs.challenge)) then
      cs.state = "auth2"
      send_raw(srv, cs, WELCOME)
    else
      send_raw(srv, cs, FAILURE)
      drop(srv, cs)
    end
  elseif cs.state == "auth2" then
    if #msg ~= #CHALLENGE_C + NONCE or msg:sub(1, #CHALLENGE_C) ~= CHALLENGE_C then
      return drop(srv, cs)
    end
    cs.state, cs.cchallenge = "auth3", msg
    send_raw(srv, cs, core.hmac_sha256(srv.key, msg))
  elseif cs.state == "auth3" then
    if msg ~= WELCOME then return drop(srv, cs) end
    local ok, secured = pcall(cs.conn._secure, cs.conn, srv.key, cs.challenge, cs.cchallenge,
                              "server")
    if not (ok and secured) then
      return drop(srv, cs)                         -- libcrypto failed: not this peer's fault
    end
    cs.state, cs.auth_deadline, cs.challenge, cs.cchallenge = "ready", nil, nil, nil
  end
end

local function on_readable(srv, cs)
  local ready = cs.state == "ready"
  local ok, have, v = cs.conn:_recv(ready and MAX_FRAME or AUTH_MAX, ready and "value" or "raw")
  if not ok then return drop(srv, cs) end          -- EOF, garbage, too long
  if not have then return end                      -- partial frame
  if not ready then return auth_step(srv, cs, v) end
  if cs.parked then return drop(srv, cs) end       -- one request at a time
  handle_request(srv, cs, v)
end

local function next_deadline(srv)
  local d
  for _, p in ipairs(srv.parked) do
    if p.deadline and (not d or p.deadline < d) then d = p.deadline end
  end
  for _, cs in pairs(srv.conns) do
    if cs.auth_deadline and (not d or cs.auth_deadline < d) then d = cs.auth_deadline end
  end
  return d
end

local function expire_auth(srv)
  local now = sched.now()
  local late = {}
  for _, cs in pairs(srv.conns) do
    if cs.auth_deadline and now >= cs.auth_deadline then late[#late + 1] = cs end
  end
  for _, cs in ipairs(late) do drop(srv, cs) end
end

-- Serves until a shutdown request.  `lfd` is a listening descriptor.
function M._serve(lfd, key, registry, opts)
  local srv = {
    lfd = lfd, key = key, registry = registry or {}, conns = {}, objects = {},
    ids = {}, next_id = 1, parked = {}, auth_timeout = opts and opts.auth_timeout or AUTH_TIMEOUT,
  }
  srv.poller = check(core.net_poller())
  check(srv.poller:_add(lfd))
  local pfd = srv.poller:_fileno()
  while not srv.stop do
    local deadline = next_deadline(srv)
    local ready
    if pfd then
      ready = check(srv.poller:_wait(0))
      local spin_until = core.now() + SPIN
      while #ready == 0 and core.now() < spin_until do ready = check(srv.poller:_wait(0)) end
      if #ready == 0 then
        ready = sched.wait_fd(pfd, "r", deadline) and check(srv.poller:_wait(0)) or {}
      end
    else  -- a poller without a descriptor: waited on in slices
      ready = sched.wait_shared(function(slice)
        local r = check(srv.poller:_wait(slice))
        if #r > 0 then return r end
      end, deadline) or {}
    end
    for _, fd in ipairs(ready) do
      if fd == lfd then
        while true do
          local nfd = check(core.net_accept(lfd))
          if not nfd then break end
          start_auth(srv, nfd)
        end
      else
        local cs = srv.conns[fd]
        if cs then on_readable(srv, cs) end
      end
      if srv.stop then break end
    end
    retry_parked(srv)
    expire_auth(srv)
  end
  for _, cs in pairs(srv.conns) do cs.conn:_close() end
  srv.poller:_close()
  core.net_closefd(lfd)
end

-- The body of a started manager's server process.
function M._server_main(lfd, key, registry, path)
  local ok, err = pcall(M._serve, lfd, key, registry)
  if path and path:sub(1, 1) ~= "\0" then os.remove(path) end
  if not ok then error(err, 0) end
end

-- Listens on addr; returns the descriptor and the actual address.
local function listen(addr)
  if type(addr) == "string" then
    if addr:sub(1, 1) ~= "\0" then os.remove(addr) end   -- a stale socket file
    return check(core.net_listen_unix(addr)), addr
  end
  local fd, port = check(core.net_listen_tcp(addr[1], addr[2]))
  return fd, { addr[1], port }
end

-- }=====================================================================

-- {=====================================================================
-- The client side: a small pool of authenticated connections per
-- (process, address); one request at a time on each
-- ======================================================================

local pools = {}   -- addr key -> { pid =, idle = {conns} }

local function client_auth(c, key, deadline)
  local ok, msg = recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no challenge from the manager (timeout)") end
  if #msg ~= #CHALLENGE_S + NONCE or msg:sub(1, #CHALLENGE_S) ~= CHALLENGE_S then
    raise("AuthenticationError", "the peer is not an mproc manager")
  end
  local sch = msg
  send_frame(c, core.hmac_sha256(key, msg), deadline)
  ok, msg = recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no answer from the manager (timeout)") end
  if msg ~= WELCOME then
    raise("AuthenticationError", "digest sent was rejected (wrong authkey)")
  end
  local ch = CHALLENGE_C .. core.random_bytes(NONCE)
  send_frame(c, ch, deadline)
  ok, msg = recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no answer from the manager (timeout)") end
  if not core.bytes_equal(msg, core.hmac_sha256(key, ch)) then
    send_frame(c, FAILURE, deadline)
    raise("AuthenticationError", "digest received was wrong (wrong authkey)")
  end
  send_frame(c, WELCOME, deadline)
  check(c:_secure(key, sch, ch, "client"))  -- every frame from now on is sealed
end

local function open_conn(addr, key)
  local deadline = sched.deadline(CONNECT_TIMEOUT)
  local fd, inprogress
  if type(addr) == "string" then
    fd, inprogress = check(core.net_connect_unix(addr))
  else
    fd, inprogress = check(core.net_connect_tcp(addr[1], addr[2]))
  end
  local c = core.net_conn(fd)
  if inprogress then
    if not sched.wait_fd(fd, "w", deadline) then
      c:_close()
      raise("Timeout", "cannot connect to " .. addr_text(addr) .. ": timed out")
    end
    local ok, kind, msg, e = core.net_connect_finish(fd)
    if not ok then
      c:_close()
      raise(kind, msg .. " (" .. addr_text(addr) .. ")", { errno = e })
    end
  end
  local ok, err = pcall(client_auth, c, key, deadline)
  if not ok then
    c:_close()
    if is_error(err, "EOF") or is_error(err, "Closed") then
      raise("AuthenticationError", "the manager closed the connection during authentication")
    end
    error(err, 0)
  end
  return c
end

local function pool_of(addr, key)
  local k, pid = addr_key(addr) .. "|" .. key, core.getpid()
  local p = pools[k]
  if not p or p.pid ~= pid then
    p = { pid = pid, idle = {} }   -- a forked child never uses its parent's
    pools[k] = p
  end
  return p
end

local function key_for(addr)
  return known_keys[addr_key(addr)] or FAMILY_KEY
end

-- One request/reply; returns the reply table (status first).  fresh:
-- on a new connection (connect() checks the key that way).
local function request(addr, key, msg, fresh)
  key = key or key_for(addr)
  local p = pool_of(addr, key)
  local c = not fresh and table.remove(p.idle)
  if not c then c = open_conn(addr, key) end
  local bytes = encode(msg, "args")
  local ok, res = pcall(function()
    send_frame(c, bytes, nil)
    local _, v = recv_frame(c, MAX_FRAME, "value", nil)
    return v
  end)
  if not ok then
    c:_close()
    if is_error(res, "EOF") or is_error(res, "Closed") then
      raise("EOF", "the manager at " .. addr_text(addr) .. " closed the connection")
    end
    if is_error(res, "AuthenticationError") then
      raise("AuthenticationError", res.message .. " (manager at " .. addr_text(addr) .. ")")
    end
    error(res, 0)
  end
  p.idle[#p.idle + 1] = c
  return res
end

local function forget_pool(addr, key)
  local k = addr_key(addr) .. "|" .. key
  local p = pools[k]
  if p and p.pid == core.getpid() then
    for _, c in ipairs(p.idle) do c:_close() end
  end
  pools[k] = nil
end

local function result_of(res, level)
  if res[1] then return res end
  if res[2] == "RemoteError" then
    error(errors.new("RemoteError", res[3], { traceback = res[4] }), level or 3)
  end
  error(errors.new(res[2], res[3]), level or 3)
end

-- }=====================================================================

-- {=====================================================================
-- Proxies
-- ======================================================================

local priv = setmetatable({}, { __mode = "k" })   -- proxy -> {addr, id, typeid}

local function callmethod(proxy, method, ...)
  local s = priv[proxy]
  local res = result_of(request(s.addr, s.key, { "call", s.id, method, pack(...) }), 4)
  return unpack(res, 2, res.n)
end

local PROXY_METHODS = {
  dict = { "get", "items", "keys", "values", "copy", "pop", "setdefault", "update", "clear",
           "has", "len" },
  list = { "append", "extend", "insert", "pop", "index", "remove", "count", "sort", "clear",
           "totable", "len" },
  Namespace = { "totable" },
  Queue = { "put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full",
            "task_done", "join" },
  Lock = { "acquire", "release" },
  Event = { "set", "clear", "is_set", "wait" },
  Value = { "get", "set", "add", "cas" },
}
PROXY_METHODS.JoinableQueue = PROXY_METHODS.Queue

local proxy_classes = {}

-- By reference (codec hook): the receiver reconnects to the same address;
-- the key is never in the handle (see FAMILY_KEY).
local function proxy_encode(proxy)
  local s = priv[proxy]
  return "ManagerProxy", encode({ s.addr, s.id, s.typeid })
end

local function make_proxy(addr, id, typeid, key)
  local cls = proxy_classes[typeid] or proxy_classes.auto
  local p = setmetatable({}, cls)
  priv[p] = { addr = addr, id = id, typeid = typeid, key = key }
  return p
end

local function check_proxy(self, fname)
  if not priv[self] then argerror(1, fname, "proxy expected, got " .. got(self), 3) end
end

local function method_fn(name)
  return function(self, ...)
    check_proxy(self, name)
    return callmethod(self, name, ...)
  end
end

local function new_proxy_class(typeid)
  local methods = {}
  for _, name in ipairs(PROXY_METHODS[typeid] or {}) do methods[name] = method_fn(name) end
  local cls = { __name = "mproc.Proxy(" .. typeid .. ")", __mproc_encode = proxy_encode }
  cls.__tostring = function(self)
    local s = priv[self]
    return ("<%s proxy %s of the manager at %s>"):format(typeid, s.id, addr_text(s.addr))
  end
  proxy_classes[typeid] = cls
  return cls, methods
end

-- Built-in proxies with natural indexing: methods first, then items.
for _, typeid in ipairs({ "dict", "list", "Namespace", "Queue", "JoinableQueue", "Lock",
                          "Event", "Value" }) do
  local cls, methods = new_proxy_class(typeid)
  local itemwise = typeid == "dict" or typeid == "list" or typeid == "Namespace"
  if typeid == "Lock" then
    -- local _ <close> = lock:guard()
    methods.guard = function(self, timeout)
      check_proxy(self, "guard")
      if not callmethod(self, "acquire", timeout) then
        raise("Timeout", "lock not acquired within " .. tostring(timeout) .. " s")
      end
      return setmetatable({}, { __close = function() callmethod(self, "release") end })
    end
    methods.__enter = nil
  end
  if typeid == "Value" then
    cls.__index = function(self, k)
      if k == "value" then return callmethod(self, "get") end
      return methods[k]
    end
    cls.__newindex = function(self, k, v)
      if k ~= "value" then
        error(("cannot set field '%s' of a Value proxy"):format(tostring(k)), 2)
      end
      callmethod(self, "set", v)
    end
  elseif itemwise then
    cls.__index = function(self, k)
      local m = methods[k]
      if m then return m end
      return callmethod(self, "__getitem", k)
    end
    cls.__newindex = function(self, k, v) callmethod(self, "__setitem", k, v) end
    cls.__pairs = function(self)
      local snapshot = typeid == "list" and callmethod(self, "totable")
        or typeid == "dict" and callmethod(self, "copy") or callmethod(self, "totable")
      if typeid == "list" then snapshot.n = nil end
      return next, snapshot, nil
    end
  else
    cls.__index = methods
  end
  if typeid == "dict" or typeid == "list" then
    cls.__len = function(self) return callmethod(self, "len") end
  end
end

-- Proxies of any other object: every field is a remote method.
do
  local cls = new_proxy_class("auto")
  local cache = {}
  cls.__index = function(_, k)
    local f = cache[k]
    if not f then
      f = function(self, ...) return callmethod(self, k, ...) end
      cache[k] = f
    end
    return f
  end
end

codec.register_reftype("ManagerProxy", function(handle)
  local t = decode(handle, true)
  return make_proxy(t[1], t[2], t[3])
end)

-- }=====================================================================

-- {=====================================================================
-- BaseManager and Manager
-- ======================================================================

local BaseManager = {}
local mstate = setmetatable({}, { __mode = "k" })

local function mgr_state(self, fname)
  local s = mstate[self]
  if not s then argerror(1, fname, "manager expected, got " .. got(self), 3) end
  return s
end

local function mgr_index(cls)
  return function(self, k)
    local m = cls[k]
    if m ~= nil then return m end
    local s = mstate[self]
    if k == "address" then return s and s.address end
    if s and s.registry[k] ~= nil then
      return function(me, ...)
        local st = mgr_state(me, k)
        if not st.address_ready then error("manager is not started or connected", 2) end
        local res = result_of(request(st.address, st.authkey, { "reg", k, pack(...) }))
        if res[2] == "proxy" then return make_proxy(st.address, res[3], res[4], st.authkey) end
        return res[3]
      end
    end
    return nil
  end
end

local BASE_OPTS = { address = true, authkey = true }
local MANAGER_OPTS = { address = true, authkey = true, nostart = true }

-- extra: call levels between the user and construct (Manager has one)
local function construct(cls, opts, extra)
  extra = extra or 0
  if opts ~= nil and type(opts) ~= "table" then
    argerror(1, cls == BaseManager and "BaseManager" or "Manager",
      "table expected, got " .. got(opts), 2 + extra)
  end
  opts = opts or {}
  local fname = cls == BaseManager and "BaseManager" or "Manager"
  util.check_opts(opts, cls == BaseManager and BASE_OPTS or MANAGER_OPTS, fname, 1, extra)
  if opts.address ~= nil then parse_address(opts.address, 1, fname) end
  if opts.authkey ~= nil and type(opts.authkey) ~= "string" then
    argerror(1, fname, "authkey must be a string", 2 + extra)
  end
  local self = setmetatable({}, cls._mt)
  mstate[self] = { address = opts.address, authkey = opts.authkey or FAMILY_KEY,
                   registry = {} }
  return self
end

-- m:register(name [, fn]): fn on the server side; without fn on a client.
function BaseManager:register(name, fn)
  local s = mgr_state(self, "register")
  if type(name) ~= "string" then argerror(1, "register", "string expected, got " .. got(name)) end
  if fn ~= nil and type(fn) ~= "function" then
    argerror(2, "register", "function expected, got " .. got(fn))
  end
  if BaseManager[name] ~= nil or getmetatable(self).__index(self, name) ~= nil
      and s.registry[name] == nil then
    argerror(1, "register", ("'%s' is a manager method"):format(name))
  end
  s.registry[name] = fn or false
  return self
end

-- Listens on the manager's address; without one on a fresh Linux abstract
-- Unix name (nothing to clean up), or else a socket file in /tmp.
local function listen_default(s)
  if s.address then return listen(s.address) end
  local rnd = core.random_bytes(8):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  local ok, fd, addr = pcall(listen, "\0mproc-manager-" .. core.getpid() .. "-" .. rnd)
  if ok then return fd, addr end
  return listen("/tmp/mproc-manager-" .. core.getpid() .. "-" .. rnd .. ".sock")
end

-- m:start(): runs the server in a new process (ends with its owner).
function BaseManager:start()
  local s = mgr_state(self, "start")
  if s.process then error("manager already started", 2) end
  if s.address_ready then error("manager already connected", 2) end
  local lfd, addr = listen_default(s)
  local registry = {}
  for k, v in pairs(s.registry) do if v then registry[k] = v end end
  local path = type(addr) == "string" and addr or nil
  local cls = process.class_for(s.start_method or require("mproc.context").method())
  local p = cls{ target = M._server_main, args = { lfd, s.authkey, registry, path },
                 daemon = true, name = "ManagerServer" }
  process.pass_fd_args(p, { 1 })   -- the listening socket, under spawn too
  local ok, err = pcall(p.start, p)
  core.net_closefd(lfd)
  if not ok then error(err, 0) end
  s.process, s.address, s.address_ready = p, addr, true
  s.owner = core.getpid()
  known_keys[addr_key(addr)] = s.authkey
  return self
end

-- m:connect(): checks that the server answers and proves the key.
function BaseManager:connect()
  local s = mgr_state(self, "connect")
  if not s.address then error("connect needs an address", 2) end
  known_keys[addr_key(s.address)] = s.authkey
  local ok, err = pcall(request, s.address, s.authkey, { "ping" }, true)
  if not ok then
    known_keys[addr_key(s.address)] = nil
    error(err, 0)
  end
  s.address_ready = true
  return self
end

-- m:serve_forever(): runs the server in this process until a client
-- calls m:shutdown() (or the process is ended).
function BaseManager:serve_forever()
  local s = mgr_state(self, "serve_forever")
  if s.process then error("manager already started", 2) end
  local lfd, addr = listen_default(s)
  s.address = addr
  known_keys[addr_key(addr)] = s.authkey
  local registry = {}
  for k, v in pairs(s.registry) do if v then registry[k] = v end end
  M._server_main(lfd, s.authkey, registry, type(addr) == "string" and addr or nil)
end

-- m:shutdown(): stops a server this process started (joining it); on a
-- connected client, closes this process's connections only.  Idempotent.
function BaseManager:shutdown(timeout)
  local s = mgr_state(self, "shutdown")
  util.check_timeout(timeout, 1, "shutdown")
  if not s.address_ready then return end
  local p = s.process
  if p and s.owner ~= core.getpid() then return end   -- a forked copy: not ours
  if p then pcall(request, s.address, s.authkey, { "shutdown" }) end
  forget_pool(s.address, s.authkey)
  s.address_ready = false
  if p then
    if not p:join(timeout or 2) then
      p:terminate()
      if not p:join(1) then p:kill(); p:join() end
    end
    p:close()
    s.process = nil
  end
end

-- m:stop_server(): asks the server to stop (any authenticated client may;
-- this is how a serve_forever() server is ended from outside).
function BaseManager:stop_server()
  local s = mgr_state(self, "stop_server")
  if not s.address then error("stop_server needs an address", 2) end
  result_of(request(s.address, s.authkey, { "shutdown" }))
  forget_pool(s.address, s.authkey)
  s.address_ready = false
end

local function close_mm(self) self:shutdown() end

-- Creates a server-side object of a built-in type and returns its proxy.
local function create(self, fname, typeid, ...)
  local s = mgr_state(self, fname)
  if not s.address_ready then error("manager is not started or connected", 3) end
  local res = result_of(request(s.address, s.authkey, { "create", typeid, pack(...) }), 4)
  return make_proxy(s.address, res[3], res[4], s.authkey)
end

local Manager = {}
function Manager:dict(t) return create(self, "dict", "dict", t) end
function Manager:list(t) return create(self, "list", "list", t) end
function Manager:Namespace(t) return create(self, "Namespace", "Namespace", t) end
function Manager:Queue(maxsize)
  if maxsize ~= nil and math.type(maxsize) ~= "integer" then
    argerror(1, "Queue", "integer expected, got " .. got(maxsize))
  end
  return create(self, "Queue", "Queue", maxsize)
end
function Manager:JoinableQueue(maxsize)
  return create(self, "JoinableQueue", "JoinableQueue", maxsize)
end
function Manager:Lock() return create(self, "Lock", "Lock") end
function Manager:Event() return create(self, "Event", "Event") end
function Manager:Value(typ, init)
  if type(typ) ~= "string" then argerror(1, "Value", "string expected, got " .. got(typ)) end
  return create(self, "Value", "Value", typ, init)
end

local function finish_class(cls, name, ctor)
  local mt = { __name = "mproc." .. name, __close = close_mm }
  mt.__index = mgr_index(cls)
  mt.__tostring = function(self)
    local s = mstate[self]
    return ("<%s %s>"):format(name, s.address and addr_text(s.address) or "(not started)")
  end
  cls._mt = mt
  return setmetatable(cls, { __call = ctor })
end

for k, v in pairs(BaseManager) do Manager[k] = v end

-- mp.BaseManager.types: constructors of the server-side built-in objects,
-- for functions given to register (e.g. a queue shared by all clients).
BaseManager.types = {}
for k, v in pairs(TYPES) do BaseManager.types[k] = v end

finish_class(BaseManager, "BaseManager", function(cls, opts) return construct(cls, opts) end)
finish_class(Manager, "Manager", function(cls, opts)
  local m = construct(cls, opts, 1)
  if opts == nil or not opts.nostart then m:start() end
  return m
end)

M.BaseManager, M.Manager = BaseManager, Manager
M.FAMILY_KEY = FAMILY_KEY

-- A context's Manager (mp.get_context(m).Manager): its server starts with m.
require("mproc.context").bind.Manager = function(m)
  return function(opts)
    local o = { nostart = true }
    if type(opts) == "table" then for k, v in pairs(opts) do o[k] = v end end
    if opts ~= nil and type(opts) ~= "table" then o = opts end   -- Manager's own error
    local mgr = Manager(o)
    mstate[mgr].start_method = m
    if opts == nil or not opts.nostart then mgr:start() end
    return mgr
  end
end
M.exports = { BaseManager = BaseManager, Manager = Manager }
return M

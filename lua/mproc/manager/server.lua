-- Managers (lua/mproc/manager.lua): the server, one event loop over every
-- connection.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local codec = require "mproc.codec"
local auth = require "mproc.manager.auth"
local objects = require "mproc.manager.objects"

local check, is_error, catch = errors.check, errors.is_error, errors.catch
local pack, unpack = compat.pack, compat.unpack
local xpcall = compat.xpcall  -- 5.1 passes no arguments
local encode = codec.encode
local send_frame = auth.send_frame
local AUTH_MAX, MAX_FRAME = auth.AUTH_MAX, auth.MAX_FRAME
local BLOCK, TYPES = objects.BLOCK, objects._TYPES

local AUTH_TIMEOUT = 10              -- seconds a peer has to authenticate
local SEND_TIMEOUT = 30              -- a peer that does not read is dropped
local SPIN = auth.SPIN                -- see auth.recv_frame

local M = {}

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
  srv.poller:_ctl("del", cs.fd)
  cs.conn:_close()
end

-- A reply.  Pipe ends in it go through the descriptor broker (the client
-- did not inherit them); taken back when the reply is not sent.
local function reply(srv, cs, msg)
  core.pipe_share(true)
  local ok, bytes = pcall(encode, msg, "reply")
  if not ok then
    core.pipe_share(false, false)
    bytes = encode(error_reply(bytes))
  end
  local sent, done = pcall(send_frame, cs.conn, bytes, sched.deadline(SEND_TIMEOUT))
  if ok then core.pipe_share(false, sent and done) end
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
-- that we know the key too (lua/mproc/manager/auth.lua).
local function start_auth(srv, fd)
  local cs = { fd = fd, conn = core.net_conn(fd), state = "auth1",
               auth_deadline = sched.now() + srv.auth_timeout }
  check(srv.poller:_ctl("add", fd, "r"))
  srv.conns[fd] = cs
  cs.challenge = auth.challenge()
  send_raw(srv, cs, cs.challenge)
end

local function auth_step(srv, cs, msg)
  auth.server_step(cs, srv.key, msg, function(bytes) send_raw(srv, cs, bytes) end,
                   function() drop(srv, cs) end)
end

local function on_readable(srv, cs)
  local ready = cs.state == "ready"
  local ok, have, v = cs.conn:_recv(ready and MAX_FRAME or AUTH_MAX, ready and "value" or "raw")
  if not ok and ready and have == "SerializeError" and not v:find("^frame too long") then
    -- a whole request that cannot be decoded here (a Pipe end from
    -- another process tree, say): the client is told, the link stays
    if cs.parked then return drop(srv, cs) end
    if v:find("bad function at byte", 1, true) then
      -- most likely a client of another VM (its bytecode cannot load here)
      v = v .. " (a function made by another Lua VM? this manager runs "
        .. (compat.luajit and "LuaJIT" or _VERSION) .. ")"
    end
    return reply(srv, cs, { false, "SerializeError", "the manager cannot receive the request: "
      .. v })
  end
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
  srv.poller = check(core.poll_new())
  check(srv.poller:_ctl("add", lfd, "r"))
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
  core.fd_close(lfd)
end

-- The body of a started manager's server process.
function M._server_main(lfd, key, registry, path)
  local ok, err = pcall(M._serve, lfd, key, registry)
  if path and path:sub(1, 1) ~= "\0" then os.remove(path) end
  if not ok then error(err, 0) end
end

-- Listens on addr; returns the descriptor and the actual address.
function M.listen(addr)
  if type(addr) == "string" then
    if addr:sub(1, 1) ~= "\0" then os.remove(addr) end   -- a stale socket file
    return check(core.net_listen_unix(addr)), addr
  end
  local fd, port = check(core.net_listen_tcp(addr[1], addr[2]))
  return fd, { addr[1], port }
end

-- }=====================================================================

return M

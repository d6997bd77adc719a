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
--
-- The parts: lua/mproc/manager/objects.lua (what the server owns),
-- server.lua (the event loop), auth.lua (keys, handshake, framed I/O),
-- client.lua (connections and proxies); this file is the API.
local core = require "mproc.core"
local compat = require "mproc.compat"
local util = require "mproc.util"
local process = require "mproc.process"
local auth = require "mproc.manager.auth"
local objects = require "mproc.manager.objects"
local server = require "mproc.manager.server"
local client = require "mproc.manager.client"

local argerror, typename = util.argerror, util.typename
local keys = auth.keys
local TYPES = objects._TYPES
local pack, math_type = compat.pack, compat.math_type
local pcall = compat.pcall  -- requests wait, and a wait may yield (mp.run)
local parse_address, addr_key, addr_text = client.parse_address, client.addr_key, client.addr_text
local request, forget_pool = client.request, client.forget_pool
local result_of, make_proxy = client.result_of, client.make_proxy
local listen = server.listen

local M = {}

local function got(v) return v == nil and "no value" or typename(v) end

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
  mstate[self] = { address = opts.address, authkey = opts.authkey or keys.family,
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
  local rnd = core.net_random_bytes(8):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
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
  local p = cls{ target = server._server_main, args = { lfd, s.authkey, registry, path },
                 daemon = true, name = "ManagerServer" }
  process.pass_fd_args(p, { 1 })   -- the listening socket, under spawn too
  core.tracker_ensure()   -- the server shares the tree's descriptor broker
  local ok, err = pcall(p.start, p)
  core.fd_close(lfd)
  if not ok then error(err, 0) end
  s.process, s.address, s.address_ready = p, addr, true
  s.owner = core.getpid()
  keys.known[addr_key(addr)] = s.authkey
  return self
end

-- m:connect(): checks that the server answers and proves the key.
function BaseManager:connect()
  local s = mgr_state(self, "connect")
  if not s.address then error("connect needs an address", 2) end
  keys.known[addr_key(s.address)] = s.authkey
  local ok, err = pcall(request, s.address, s.authkey, { "ping" }, true)
  if not ok then
    keys.known[addr_key(s.address)] = nil
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
  keys.known[addr_key(addr)] = s.authkey
  local registry = {}
  for k, v in pairs(s.registry) do if v then registry[k] = v end end
  server._server_main(lfd, s.authkey, registry, type(addr) == "string" and addr or nil)
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
  if maxsize ~= nil and math_type(maxsize) ~= "integer" then
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
M.FAMILY_KEY = keys.family

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


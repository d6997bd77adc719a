-- Managers (lua/mproc/manager.lua): the client side, connections to a
-- manager and the proxies of its objects.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local util = require "mproc.util"
local codec = require "mproc.codec"
local auth = require "mproc.manager.auth"

local check, raise, is_error = errors.check, errors.raise, errors.is_error
local argerror, typename = util.argerror, util.typename
local pack, unpack = compat.pack, compat.unpack
local pcall = compat.pcall  -- the waits in it may yield (mp.run)
local encode, decode = codec.encode, codec.decode
local send_frame, recv_frame = auth.send_frame, auth.recv_frame
local MAX_FRAME = auth.MAX_FRAME
local keys = auth.keys

local CONNECT_TIMEOUT = 10

local M = {}

local function got(v) return v == nil and "no value" or typename(v) end

-- {=====================================================================
-- Addresses
-- ======================================================================

-- {host, port} -> "tcp", host, port; "path" -> "unix", path
local function parse_address(addr, n, fname)
  if type(addr) == "string" then
    if #addr == 0 then argerror(n, fname, "address must not be empty", 4) end
    return "unix", addr
  end
  if type(addr) == "table" and type(addr[1]) == "string" and compat.math_type(addr[2]) == "integer"
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

-- }=====================================================================

-- {=====================================================================
-- The client side: a small pool of authenticated connections per
-- (process, address); one request at a time on each
-- ======================================================================

local pools = {}   -- addr key -> { pid =, idle = {conns} }

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
  local ok, err = pcall(auth.client_auth, c, key, deadline)
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
  return keys.known[addr_key(addr)] or keys.family
end

-- One request/reply; returns the reply table (status first).  fresh:
-- on a new connection (connect() checks the key that way).
local function request(addr, key, msg, fresh)
  key = key or key_for(addr)
  local p = pool_of(addr, key)
  local c = not fresh and table.remove(p.idle)
  if not c then c = open_conn(addr, key) end
  -- Pipe ends in the request go through the descriptor broker; taken back
  -- when it is not sent
  core.pipe_share(true)
  local eok, bytes = pcall(encode, msg, "args")
  if not eok then
    core.pipe_share(false, false)
    p.idle[#p.idle + 1] = c
    error(bytes, 0)
  end
  local ok, res = pcall(function()
    local sent, err = pcall(send_frame, c, bytes, nil)
    core.pipe_share(false, sent)
    if not sent then error(err, 0) end
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
-- the key is never in the handle (see keys.family).
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
    -- local _ <close> = lock:guard(), or g:close() (Lua before 5.4): releases once
    methods.guard = function(self, timeout)
      check_proxy(self, "guard")
      if not callmethod(self, "acquire", timeout) then
        raise("Timeout", "lock not acquired within " .. tostring(timeout) .. " s")
      end
      local held = true
      local function close()
        if held then held = false; callmethod(self, "release") end
      end
      return setmetatable({ close = close }, { __close = close })
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

M.parse_address, M.addr_key, M.addr_text = parse_address, addr_key, addr_text
M.request, M.forget_pool, M.result_of, M.make_proxy = request, forget_pool, result_of, make_proxy

return M

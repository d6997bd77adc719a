-- The "forkserver" start method (docs/start-methods.md).  On first use a
-- small server is spawned (a fresh interpreter: no threads, a small heap);
-- each start sends it the same payload as spawn, and the server forks a
-- child that runs it, so a start costs one fork of a small process however
-- large or threaded the parent is.
--
-- Per child, the parent makes a socket pair and passes one end with the
-- request: the server answers the child's pid on it, then its exit code
-- when it has reaped it.  The parent's end is the child's sentinel.  When
-- the parent's exit path begins, its request socket is shut down: the
-- server ends as any mproc process does (daemon children terminated, the
-- others joined) and the parent's exit path joins the server.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local context = require "mproc.context"

local check, getpid = errors.check, core.getpid

local M = {}

-- {=====================================================================
-- The parent's side
-- ======================================================================

local server   -- { pid, child, sock, owner }

local function ensure_server()
  if server and server.owner == getpid() then
    local ok, code = core.child_poll(server.child)
    if ok and code == nil then return server end
    core.child_close(server.child)
  end
  local a, b = check(core.fd_socket_pair())
  local ok, pid, child = pcall(context.spawn, function() return { kind = "forkserver" } end,
                               false, false, { b })
  core.fd_close(b)
  if not ok then
    core.fd_close(a)
    error(pid, 0)
  end
  check(core.fd_shutdown_at_exit(a))
  server = { pid = pid, child = child, sock = a, owner = getpid() }
  return server
end

-- A child of the server, seen from the parent: what core.child_* give
-- for our own children (see context.child_*).
local Child = { __name = "mproc.ForkserverChild" }
Child.__index = Child

function Child:poll(block)
  if self.code == nil then
    if self.fd == nil then return false, "OSError", "attempt to use a closed process" end
    if not block and not core.poll_fd(self.fd, "r", 0) then return true, nil end
    local msg = core.fd_recv(self.fd)
    -- no answer: the server died (it was killed); its children went with it
    self.code = msg and tonumber(msg) or -9
  end
  return true, self.code
end

function Child:signal(sig)
  if self.code == nil and not (self.fd and core.poll_fd(self.fd, "r", 0)) then
    return core.kill(self.pid, sig)
  end
  return true
end

function Child:fileno() return self.fd end

function Child:close()
  if self.fd then core.fd_close(self.fd) end
  self.fd = nil
end
Child.__gc = Child.close

-- As context.spawn: build() returns the payload; `extra` descriptors go to
-- the child.  Returns pid, child.
function M.spawn(build, detached, daemon, extra)
  local srv = ensure_server()
  -- the Pipe ends met, then the extra descriptors: they go with the request
  local payload, fds = context.build_payload(build, extra)
  if #fds > 15 then
    errors.raise("SerializeError", "cannot pass more than 15 descriptors (Pipe ends) "
      .. "to a process started by the forkserver")
  end
  payload.nfds = #fds
  payload.detached, payload.daemon = detached or false, daemon or false
  context.add_inherited(payload)
  local bytes = context.encode(payload, "payload")
  local a, b = check(core.fd_socket_pair())
  local send = { b }
  for i = 1, #fds do send[#send + 1] = fds[i] end
  local sent, kind, msg = core.fd_send(srv.sock, bytes, send)
  core.fd_close(b)
  if not sent then
    core.fd_close(a)
    errors.raise(kind, "the forkserver is gone: " .. tostring(msg))
  end
  local answer = core.fd_recv(a)
  local pid = answer and tonumber(answer)
  if not pid then
    core.fd_close(a)
    errors.raise("OSError", "the forkserver could not start the process: "
      .. tostring(answer or "no answer"))
  end
  context.mark_started()
  if not detached then core.process_arm_end_children() end
  return pid, compat.gc(setmetatable({ pid = pid, fd = a }, Child))
end

-- }=====================================================================

-- {=====================================================================
-- The server
-- ======================================================================

-- Runs in the server (spawn_child.lua); never returns.
function M.serve(p)
  local sock = p.fds[p.extra_at]
  core.process_set_comm("mproc-forkserv")
  local kids = {}   -- { child, status fd, sentinel }
  local run = require("mproc.spawn_child").run
  while true do
    local fds, modes = { sock }, { "r" }
    for i, k in ipairs(kids) do fds[i + 1], modes[i + 1] = k.sentinel, "r" end
    local ready = core.poll_many(fds, modes, #fds)
    if ready then
      for i = #kids, 1, -1 do
        local k = kids[i]
        if ready[i + 1] then
          local _, code = core.child_poll(k.child, true)
          core.fd_send(k.status, tostring(code or -9))
          core.fd_close(k.status)
          core.child_close(k.child)
          table.remove(kids, i)
        end
      end
      if ready[1] then
        local bytes, got = core.fd_recv(sock)
        if not bytes then core.exit(0) end   -- the parent is ending
        local req = require("mproc.codec").decode(bytes)
        local status = got[1]
        local okf, pid, child = core.process_fork(req.detached, req.daemon)
        if okf and pid == 0 then
          core.fd_close(sock)
          for _, k in ipairs(kids) do core.fd_close(k.status) end
          core.fd_close(status)
          local rest = {}
          for i = 2, #got do rest[#rest + 1] = got[i] end
          run(req, rest)
        end
        if okf then
          core.fd_send(status, tostring(pid))
          kids[#kids + 1] = { child = child, status = status,
                              sentinel = core.child_fileno(child) }
        else
          core.fd_send(status, tostring(child))
          core.fd_close(status)
        end
        for i = 2, #got do core.fd_close(got[i]) end
      end
    end
  end
end

-- }=====================================================================

return M

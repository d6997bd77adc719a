-- The first code of a process started with the "spawn" start method
-- (lua/mproc/context.lua starts `lua -e "require('mproc.spawn_child').main()"`
-- with package.path/cpath in LUA_PATH_5_4/LUA_CPATH_5_4, or the names of
-- its VM: compat.PATH_VAR).  Descriptor 3
-- brings the payload; the child dies with its parent as a forked one does.
local M = {}

function M.main()
  local core = require "mproc.core"
  local ppid, detached, watch = (os.getenv("MPROC_SPAWN") or "")
    :match("^(%d+):([01]):([01])$")
  if not ppid or not core.process_spawned_setup(detached == "1", tonumber(ppid), watch == "1") then
    io.stderr:write("mproc.spawn_child: only mproc's spawn start method runs this\n")
    os.exit(2)
  end
  local tfd, tpid = (os.getenv("MPROC_TRACKER") or ""):match("^(%d+):(%d+)$")
  if tfd then core.tracker_adopt(tonumber(tfd), tonumber(tpid)) end
  local bytes = core.process_boot_recv()
  if not bytes then core.exit(1) end   -- the parent died before sending it
  require "mproc"
  local codec = require "mproc.codec"
  core.codec_autorequire(true)   -- task functions may name modules not loaded yet
  local ok, payload = pcall(codec.decode, bytes)
  if not ok then
    io.stderr:write("mproc: cannot read the spawned process's payload: ",
      tostring(payload), "\n")
    core.exit(1)
  end
  local fds = {}
  for i = 1, payload.nfds or 0 do fds[i] = 4 + i end
  M.run(payload, fds)
end

-- Runs a payload (spawned here, or forked by the forkserver) with the
-- descriptors that came with it (payload.fds; extras from extra_at on).
-- Never returns.
function M.run(payload, fds)
  local core = require "mproc.core"
  payload.fds = fds
  core.pipe_received(fds)
  local context = require "mproc.context"
  context.restore_inherited(payload)
  if payload.exe and not context.state.executable then
    context.state.executable = payload.exe
  end
  local kind = payload.kind
  if kind == "process" then
    require("mproc.process").spawned_main(payload)
  elseif kind == "pool_worker" then
    require("mproc.pool").spawned_worker(payload)
  elseif kind == "forkserver" then
    require("mproc.forkserver").serve(payload)
  end
  io.stderr:write("mproc: unknown spawned payload ", tostring(kind), "\n")
  core.exit(1)
end

return M

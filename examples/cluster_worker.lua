-- A cluster worker in Lua (the same loop as `mproc worker`): serves the
-- queue "demo" of the Redis at URL until Ctrl-C or SIGTERM.
--   MPROC_AUTHKEY=secret lua5.4 examples/cluster_worker.lua [URL] [processes]
-- Start it (on one machine or many), then examples/cluster_client.lua.
io.stdout:setvbuf("line")
local worker = require "mproc.cluster.worker"

local url = arg[1] or "redis://127.0.0.1:6379/0"
os.exit(worker.main({ "--url", url, "--queue", "demo", "--processes", arg[2] or "2", "-v" }))

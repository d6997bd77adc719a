-- mproc: processes, pipes, queues, pools and shared memory for Lua 5.4.
-- This façade only gathers the public names that each module exports.
local M = {}

local MODULES = {
  "errors", "codec", "process", "pipe", "sync", "shared", "queue",
  "subprocess", "manager", "sched_api", "pool", "context",
}

for _, name in ipairs(MODULES) do
  local mod = require("mproc." .. name)
  for k, v in pairs(mod.exports) do
    assert(M[k] == nil, "mproc: two modules export " .. k)
    M[k] = v
  end
end

M._VERSION = "mproc " .. require("mproc.core").version

-- mp.cluster (the cluster pool, on Redis) loads on first use: the core
-- works without hiredis, and only mp.cluster says that it is missing.
setmetatable(M, { __index = function(t, k)
  if k == "cluster" then
    local c = require "mproc.cluster"
    rawset(t, "cluster", c)
    return c
  end
end })
return M

-- Public names of the waiting point: mp.sleep (and later mp.run, mp.spawn).
local sched = require "mproc.sched"
local util = require "mproc.util"

local function sleep(seconds)
  util.check_timeout(seconds, 1, "sleep")
  return sched.sleep(seconds)
end

return { exports = { sleep = sleep } }

-- The one waiting point (DESIGN.md invariant 1).  Every blocking call of the
-- Lua layer waits here: for a descriptor, or for a deadline.  Outside mp.run
-- it blocks in the C core; the scheduler (mp.run) installs `hooks.wait_fd`
-- and `hooks.sleep` so that only the calling coroutine waits.  Callbacks run
-- from `dispatch`, never from a signal handler.
local core = require "mproc.core"

local now, poll_fd, csleep = core.now, core.poll_fd, core.sleep
local huge = math.huge

local M = { hooks = {}, dispatchers = {} }

-- Absolute deadline for a timeout in seconds (nil: forever).
function M.deadline(timeout)
  if timeout == nil or timeout == huge then return nil end
  return now() + timeout
end

-- Seconds left until `deadline` (nil: forever), never negative.
function M.remaining(deadline)
  if deadline == nil then return nil end
  local r = deadline - now()
  return r > 0 and r or 0
end

-- Runs pending callbacks (pool results, ...) registered by other modules.
function M.dispatch()
  for i = 1, #M.dispatchers do M.dispatchers[i]() end
end

-- Waits until `fd` is ready for mode "r", "w" or "rw", or until the
-- deadline.  Returns true when ready, false when the deadline passed.
function M.wait_fd(fd, mode, deadline)
  local hook = M.hooks.wait_fd
  if hook then return hook(fd, mode, deadline) end
  while true do
    local left = M.remaining(deadline)
    -- poll returns false on EINTR too: back in Lua, a pending SIGINT hook
    -- of the interpreter raises here, then we re-check the deadline.
    if poll_fd(fd, mode, left) then return true end
    if deadline and now() >= deadline then return false end
  end
end

-- Sleeps `seconds` (a coroutine inside mp.run sleeps alone).
function M.sleep(seconds)
  local hook = M.hooks.sleep
  if hook then return hook(seconds) end
  local deadline = now() + seconds
  while not csleep(deadline - now()) do
    if now() >= deadline then break end
  end
end

M.now = now
return M

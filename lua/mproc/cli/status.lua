-- mproc run: what the user sees while the jobs run, on stderr.  On a
-- terminal, a live area redrawn in place (progress line, counts, running
-- jobs with their elapsed time) with failures printed above it; otherwise
-- one line per job start and end.
local core = require "mproc.core"
local progress = require "mproc.progress"

local now, fmt_time = core.now, progress.fmt_time
local move = require("mproc.compat").move

local M = {}

local function columns()
  local cols = tonumber(os.getenv("COLUMNS") or "")
  if cols then return cols end
  -- stty reads the size of whatever terminal it is given (our stderr)
  local p = io.popen("stty size <&2 2>/dev/null")
  local s = p and p:read("*a") or ""
  if p then p:close() end
  return tonumber(s:match("%d+%s+(%d+)")) or 80
end

local function tail(path, nlines)
  local f = io.open(path, "rb")
  if not f then return {} end
  local size = f:seek("end")
  f:seek("set", math.max(0, size - 4096))
  local s = f:read("*a") or ""
  f:close()
  local lines = {}
  for l in s:gmatch("[^\n]*") do lines[#lines + 1] = l end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  local first = math.max(1, #lines - nlines + 1)
  return move(lines, first, #lines, 1, {})
end
M.tail = tail

-- run: the runner's shared state (counts, running set, total, t0).
function M.new(run, opts)
  local stream = io.stderr
  local tty = opts.tty
  if tty == nil then tty = progress.isatty(stream) end
  local self = { run = run, tty = tty, stream = stream, drawn = 0, last = -math.huge,
    quiet = opts.quiet }
  local width = tty and columns() or 0

  local function out(s) stream:write(s) end

  local function clip(s)
    if #s >= width then return s:sub(1, width - 1) end
    return s
  end

  local function clear_area()
    if self.drawn > 0 then out(("\27[%dF\27[J"):format(self.drawn)) end
    self.drawn = 0
  end

  local function area_lines()
    local c = run.counts
    local finished = c.ok + c.failed + c.skipped + c.cached + c.interrupted
    local el = now() - run.t0
    local lines = {
      progress.line("jobs", finished, run.total, el, 20),
      ("  ok %d  failed %d  skipped %d  cached %d  running %d"):format(
        c.ok, c.failed, c.skipped, c.cached, run.nrunning),
    }
    local rs = {}
    for job in pairs(run.running) do rs[#rs + 1] = job end
    table.sort(rs, function(a, b) return a.started < b.started end)
    local room = math.max(3, math.min(20, (opts.rows or 24) - 4))
    for i, job in ipairs(rs) do
      if i > room then
        lines[#lines + 1] = ("  ... and %d more"):format(#rs - room)
        break
      end
      -- (a job the pump took may not have begun its first attempt yet)
      local attempt = job.attempt or 1
      lines[#lines + 1] = ("  %-24s %s%s"):format(job.name, fmt_time(now() - job.started),
        attempt > 1 and (" (attempt %d)"):format(attempt) or "")
    end
    return lines
  end

  local function draw()
    clear_area()
    local lines = area_lines()
    for _, l in ipairs(lines) do out(clip(l) .. "\n") end
    self.drawn = #lines
    stream:flush()
    self.last = now()
  end

  -- A message that stays: above the area on a terminal.
  local function say(lines)
    if tty then clear_area() end
    for _, l in ipairs(lines) do out((tty and clip(l) or l) .. "\n") end
    if tty then draw() else stream:flush() end
  end

  local function failure_lines(job, head)
    local lines = { head }
    do
      local t = tail(job.err_path, 10)
      if #t > 0 then
        lines[#lines + 1] = ("  --- last lines of %s ---"):format(job.err_path)
        for _, l in ipairs(t) do lines[#lines + 1] = "  | " .. l end
      end
    end
    return lines
  end

  -- A line per job start and end when not on a terminal: one write each,
  -- as cheap as can be (10 000 short jobs print 20 000 of them).
  local function put_line(s)
    out(s)
    stream:flush()
  end

  function self.started(job)
    if not tty and not self.quiet then
      put_line(job.attempt > 1 and ("mproc: start %s (attempt %d)\n"):format(job.name, job.attempt)
        or "mproc: start " .. job.name .. "\n")
    end
  end

  function self.retry(job, res)
    if self.quiet then return end
    say({ ("mproc: retry %s: attempt %d %s"):format(job.name, job.attempt, res.why) })
  end

  function self.ended(job, res)
    if self.quiet then return end
    if job.status == "ok" then
      if not tty then put_line(("mproc: ok %s (%.2f s)\n"):format(job.name, job.seconds)) end
    elseif job.status == "failed" then
      say(failure_lines(job, ("mproc: FAILED %s (%s; %d attempt%s, %.2f s)"):format(
        job.name, res.why, job.attempts, job.attempts == 1 and "" or "s", job.seconds)))
    elseif job.status == "skipped" then
      if not tty then say({ ("mproc: skipped %s (%s)"):format(job.name, job.why) }) end
    elseif job.status == "interrupted" then
      if not tty then say({ ("mproc: interrupted %s"):format(job.name) }) end
    end
  end

  function self.tick(force)
    if tty and not self.quiet and (force or now() - self.last >= 0.1) then draw() end
  end

  function self.note(msg)
    if not self.quiet then say({ msg }) end
  end

  function self.finish(line)
    if tty and not self.quiet then draw() end
    if not self.quiet then out(line .. "\n") end
    stream:flush()
  end

  return self
end

return M

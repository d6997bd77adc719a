-- mp.progress(iterator [, {total=, label=, stream=, interval=}]): wraps an
-- iterator (pool:imap, pool:imap_unordered or any generic-for iterator) and
-- reports how far it got on stderr: a redrawn bar (done/total, rate, ETA)
-- when stderr is a terminal, plain periodic lines otherwise.
local core = require "mproc.core"
local util = require "mproc.util"

local now = core.now
local argerror, typename = util.argerror, util.typename

local function isatty(stream)
  if stream ~= io.stderr then return false end
  local term = os.getenv("TERM")
  if not term or term == "dumb" then return false end
  -- `test -t 2` asks the shell about our stderr, which it inherits
  local ok = os.execute("test -t 2")
  return ok == true
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%02d:%02d"):format(s // 60, s % 60)
end

local function line(label, done, total, elapsed, width)
  local rate = elapsed > 0 and done / elapsed or 0
  local head = label and (label .. " ") or ""
  if total then
    local frac = total > 0 and math.min(done / total, 1) or 1
    local eta = rate > 0 and (total - done) / rate or math.huge
    local bar = ""
    if width then
      local fill = math.floor(frac * width + 0.5)
      bar = "[" .. ("#"):rep(fill) .. ("."):rep(width - fill) .. "] "
    end
    return ("%s%s%3d%% %d/%d  %.1f/s  elapsed %s  eta %s"):format(head, bar,
      math.floor(frac * 100), done, total, rate, fmt_time(elapsed), fmt_time(eta))
  end
  return ("%s%d done  %.1f/s  elapsed %s"):format(head, done, rate, fmt_time(elapsed))
end

local function progress(iter, opts, state, control)
  if type(iter) ~= "function" then
    argerror(1, "progress", "function expected, got "
      .. (iter == nil and "no value" or typename(iter)))
  end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(2, "progress", "table expected, got " .. typename(opts))
  end
  opts = opts or {}
  local total, label = opts.total, opts.label
  if total ~= nil and math.type(total) ~= "integer" then
    argerror(2, "progress", "'total' must be an integer, got " .. typename(total))
  end
  if label ~= nil and type(label) ~= "string" then
    argerror(2, "progress", "'label' must be a string, got " .. typename(label))
  end
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = isatty(stream) end
  local interval = opts.interval or (tty and 0.1 or 2)
  local t0, last, done, ended = now(), -math.huge, 0, false
  local function draw(final)
    local t = now()
    if not final and t - last < interval then return end
    last = t
    local s = line(label, done, total, t - t0, tty and 30 or nil)
    if tty then stream:write("\r", s, "\27[K", final and "\n" or "")
    else stream:write(s, "\n") end
    stream:flush()
  end
  draw(false)
  return function()
    if ended then return nil end
    local r = table.pack(iter(state, control))
    if r[1] == nil then
      ended = true
      draw(true)
      return nil
    end
    control = r[1]
    done = done + 1
    draw(false)
    return table.unpack(r, 1, r.n)
  end
end

return { progress = progress }

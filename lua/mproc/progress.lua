-- mp.progress(iterator [, {total=, label=, stream=, tty=, interval=}]): wraps an
-- iterator (pool:imap, pool:imap_unordered or any generic-for iterator) and
-- reports how far it got on stderr: a redrawn bar (done/total, rate, ETA)
-- when stderr is a terminal, plain periodic lines otherwise.
-- mp.progress{total=, label=, ...}: the manual form, a bar object advanced
-- by bar:update(n) and ended by bar:close().
local core = require "mproc.core"
local util = require "mproc.util"
local compat = require "mproc.compat"

local now = core.now
local argerror, typename = util.argerror, util.typename
local idiv, math_type, pack, unpack = compat.idiv, compat.math_type, compat.pack, compat.unpack

local function isatty(stream)
  if stream ~= io.stderr then return false end
  local term = os.getenv("TERM")
  if not term or term == "dumb" then return false end
  -- a stream that seeks (a file, /dev/null) is no terminal: no need to
  -- start a shell to know (a few milliseconds)
  if stream:seek("cur") then return false end
  -- `test -t 2` asks the shell about our stderr, which it inherits
  return compat.succeeded("test -t 2")
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then
    return ("%d:%02d:%02d"):format(idiv(s, 3600), idiv(s % 3600, 60), s % 60)
  end
  return ("%02d:%02d"):format(idiv(s, 60), s % 60)
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

local OPTIONS = { total = true, label = true, stream = true, tty = true, interval = true }

-- Checks the options table (argument #n) and returns a drawing state.
local function setup(opts, n)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(n, "progress", "table expected, got " .. typename(opts), 3)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then
      argerror(n, "progress", "unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  local total, label = opts.total, opts.label
  if total ~= nil and math_type(total) ~= "integer" then
    argerror(n, "progress", "'total' must be an integer, got " .. typename(total), 3)
  end
  if total ~= nil and total < 0 then argerror(n, "progress", "'total' must be >= 0", 3) end
  if label ~= nil and type(label) ~= "string" then
    argerror(n, "progress", "'label' must be a string, got " .. typename(label), 3)
  end
  local interval = opts.interval
  if interval ~= nil and (type(interval) ~= "number" or interval < 0) then
    argerror(n, "progress", "'interval' must be a number >= 0", 3)
  end
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = isatty(stream) end
  local st = { total = total, label = label, stream = stream, tty = tty,
    interval = interval or (tty and 0.1 or 2), t0 = now(), last = -math.huge, done = 0 }
  return st
end

local function draw(st, final)
  local t = now()
  if not final and t - st.last < st.interval then return end
  st.last = t
  local s = line(st.label, st.done, st.total, t - st.t0, st.tty and 30 or nil)
  local stream = st.stream
  if st.tty then stream:write("\r", s, "\27[K", final and "\n" or "")
  else stream:write(s, "\n") end
  stream:flush()
end

-- The manual form: a bar object.
local Bar = {}
Bar.__index = Bar
Bar.__name = "mproc.progress_bar"

function Bar:update(n)
  if getmetatable(self) ~= Bar then argerror(1, "update", "progress bar expected") end
  if self._st == nil then util.closed_error("progress bar") end
  if n == nil then n = 1 end
  if math_type(n) ~= "integer" or n < 0 then
    argerror(1, "update", "integer >= 0 expected, got "
      .. (math_type(n) == "integer" and tostring(n) or typename(n)))
  end
  local st = self._st
  st.done = st.done + n
  self.n = st.done
  draw(st, false)
end

function Bar:close()
  if getmetatable(self) ~= Bar then argerror(1, "close", "progress bar expected") end
  local st = self._st
  if st == nil then return end
  self._st = nil
  draw(st, true)
end
Bar.__close = Bar.close

local function progress(iter, opts, state, control)
  if type(iter) == "table" and opts == nil then
    local st = setup(iter, 1)
    draw(st, false)
    return setmetatable({ _st = st, n = 0, total = st.total }, Bar)
  end
  if type(iter) ~= "function" then
    argerror(1, "progress", "function expected, got "
      .. (iter == nil and "no value" or typename(iter)))
  end
  local st = setup(opts, 2)
  local ended = false
  draw(st, false)
  return function()
    if ended then return nil end
    local r = pack(iter(state, control))
    if r[1] == nil then
      ended = true
      draw(st, true)
      return nil
    end
    control = r[1]
    st.done = st.done + 1
    draw(st, false)
    return unpack(r, 1, r.n)
  end
end

return { progress = progress, line = line, fmt_time = fmt_time, isatty = isatty }

-- Argument checks of the Pool API, shared by the local pool (mproc.pool)
-- and the cluster pool (mproc.cluster): one set of rules and messages for
-- both.  Error levels are those of a call from the pool method's helper
-- (apply_task, map_async, imap), as where they were written first.
local util = require "mproc.util"
local errors = require "mproc.errors"
local compat = require "mproc.compat"

local argerror, typename = util.argerror, util.typename
local math_type, tointeger, unpack = compat.math_type, compat.tointeger, compat.unpack

local M = {}

function M.make_task_error(value, tb)
  return errors.new("TaskError", errors.error_text(value), { value = value, traceback = tb })
end

function M.check_fn(fn, n, fname)
  if type(fn) == "function" then return end
  local mt = getmetatable(fn)
  if type(mt) == "table" and mt.__call then return end
  argerror(n, fname, "function expected, got " .. (fn == nil and "no value" or typename(fn)), 3)
end

local APPLY_OPTS = { callback = true, error_callback = true, timeout = true }

-- apply_async's args and opts (errors at apply_async's caller); returns
-- the arguments packed.
function M.apply_args(args, opts)
  if args ~= nil and type(args) ~= "table" then
    argerror(2, "apply_async", "table expected, got " .. typename(args), 3)
  end
  if opts ~= nil then
    util.check_opts(opts, APPLY_OPTS, "apply_async", 3, 1)
    for _, k in ipairs { "callback", "error_callback" } do
      if opts[k] ~= nil and type(opts[k]) ~= "function" then
        argerror(3, "apply_async", ("'%s' must be a function, got %s"):format(k,
          typename(opts[k])), 3)
      end
    end
    util.check_timeout(opts.timeout, 3, "apply_async", 1)
  end
  args = args or {}
  local n = args.n or #args
  return { n = n, unpack(args, 1, n) }
end

function M.check_chunksize(cs, n, fname)
  if cs == nil then return nil end
  if math_type(cs) ~= "integer" then
    if type(cs) == "number" and tointeger(cs) then cs = tointeger(cs)
    else argerror(n, fname, "integer expected, got " .. typename(cs), 4) end
  end
  if cs < 1 then argerror(n, fname, "chunksize must be >= 1", 4) end
  return cs
end

local function items_error(items, fname, level)
  argerror(2, fname, "table or function expected, got "
    .. (items == nil and "no value" or typename(items)), level)
end

-- items: a list (n or #) or an iterator function; returns a list and n.
function M.collect_items(items, fname)
  if type(items) == "table" then
    return items, items.n or #items
  elseif type(items) == "function" then
    local list, n = {}, 0
    for v in items do n = n + 1; list[n] = v end
    return list, n
  end
  items_error(items, fname, 5)
end

local MAP_OPTS = { chunksize = true, callback = true, error_callback = true }

-- map(fn, items, chunksize) and starmap: the options table map_async takes.
function M.map_opts(fname, chunksize)
  if chunksize ~= nil and type(chunksize) ~= "number" then
    argerror(3, fname, "number expected, got " .. typename(chunksize), 3)
  end
  return { chunksize = chunksize }
end

-- map_async(fn, items, opts) and starmap_async.
function M.check_map_opts(opts, fname)
  if opts ~= nil then util.check_opts(opts, MAP_OPTS, fname, 3, 1) end
  return opts
end

local IMAP_OPTS = { chunksize = true, errors = true }

-- imap(fn, items, chunksize | {chunksize =, errors =}) -> next, chunksize,
-- errors_returned.  next() -> true, item | false at the end (an iterator's
-- error propagates).
function M.imap_args(fname, items, opts)
  local chunksize, ret_errors = opts, false
  if type(opts) == "table" then
    util.check_opts(opts, IMAP_OPTS, fname, 3, 1)
    chunksize = opts.chunksize
    if opts.errors ~= nil and opts.errors ~= "raise" and opts.errors ~= "return" then
      argerror(3, fname, "'errors' must be \"raise\" or \"return\"", 3)
    end
    ret_errors = opts.errors == "return"
  elseif opts ~= nil and type(opts) ~= "number" then
    argerror(3, fname, "number or table expected, got " .. typename(opts), 3)
  end
  local nextitem
  if type(items) == "table" then
    local i, n = 0, items.n or #items
    nextitem = function()
      if i >= n then return false end
      i = i + 1
      return true, items[i]
    end
  elseif type(items) == "function" then
    nextitem = function()
      local v = items()
      if v == nil then return false end
      return true, v
    end
  else
    items_error(items, fname, 4)
  end
  return nextitem, M.check_chunksize(chunksize, 3, fname) or 1, ret_errors
end

-- A map's results, the same for both pools: chunks land in `out` (a list
-- of n) until all are in, then r resolves to it; the first failed item or
-- lost chunk rejects r and stops the job.  vals nil: the chunk was
-- unpacked into out already (the local pool's packed numbers).
function M.map_results(job, r, out, n)
  local left = n
  job.on_values = function(first, count, vals, errs)
    if r._done then return end
    if errs then
      job:stop()
      return r:_reject(M.make_task_error(errs[1][2], errs[1][3]))
    end
    if vals then compat.move(vals, 1, count, first, out) end
    left = left - count
    if left == 0 then r:_resolve({ out, n = 1 }) end
  end
  job.on_fail = function(_, _, err)
    if r._done then return end
    job:stop()
    r:_reject(err)
  end
  if n == 0 then r:_resolve({ out, n = 1 }) end
end

-- The consumer side of imap/imap_unordered, the same for both pools.
-- Results come in through s.put(idx, v, err) (a lost chunk: s.fail); the
-- iterator from s.start() hands them out in input order (ordered) or as
-- they come, reading the input lazily: at most `ahead` items beyond what
-- the loop consumed.  An error raised by the input comes after the items
-- read before it; with ret_errors a failed item yields i, nil, err.
-- h: ordered, ahead, nextitem, ret_errors, and the pool's side:
-- store(i, v) keeps an item read, push(from, count) sends items,
-- wait(pred) waits for results, stop() drops the job, at_end() (optional)
-- runs when the input and the results are all used up.
function M.imap_stream(h)
  local ordered, ahead, nextitem = h.ordered, h.ahead, h.nextitem
  local half = compat.idiv(ahead, 2)
  local fed, consumed, exhausted, src_err = 0, 0, false, nil
  local vals, has, errs = {}, {}, {}   -- ordered: by input index
  local fifo, fh, ft = {}, 1, 0        -- unordered: indices as they complete
  local want, failed = 1, nil
  local s = {}
  function s.put(idx, v, err)
    if ordered then has[idx] = true
    else ft = ft + 1; fifo[ft] = idx end
    vals[idx], errs[idx] = v, err
  end
  function s.fail(first, count, err)
    for k = first, first + count - 1 do s.put(k, nil, err) end
  end
  local function feed()
    local from = fed + 1
    while not exhausted and fed - consumed < ahead do
      local ok, more, v = compat.pcall(nextitem)  -- the input may wait (mp.run)
      if not ok then exhausted, src_err = true, more break end
      if not more then exhausted = true break end
      fed = fed + 1
      h.store(fed, v)
    end
    if fed >= from then h.push(from, fed - from + 1) end
  end
  local function have()
    if ordered then return has[want] ~= nil end
    return fh <= ft
  end
  function s.start()
    feed()
    return function()
      if failed then error(failed, 0) end
      while not have() do
        if exhausted and consumed >= fed then
          if h.at_end then h.at_end() end
          if src_err ~= nil then
            failed, src_err = src_err, nil
            error(failed, 0)
          end
          return nil
        end
        h.wait(have)
      end
      local idx
      if ordered then
        idx = want
        want = want + 1
        has[idx] = nil
      else
        idx = fifo[fh]
        fifo[fh] = nil
        fh = fh + 1
      end
      local v, err = vals[idx], errs[idx]
      vals[idx], errs[idx] = nil, nil
      consumed = consumed + 1
      if not exhausted and fed - consumed <= half then feed() end
      if err then
        if h.ret_errors then return idx, nil, err end
        failed = err
        h.stop()
        error(err, 0)
      end
      return idx, v
    end
  end
  return s
end

return M

-- Argument checks of the Pool API, shared by the local pool (mproc.pool)
-- and the cluster pool (mproc.cluster): one set of rules and messages for
-- both.  Error levels are those of a call from the pool method's helper
-- (apply_task, map_async, imap), as where they were written first.
local util = require "mproc.util"
local errors = require "mproc.errors"

local argerror, typename = util.argerror, util.typename

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

function M.check_chunksize(cs, n, fname)
  if cs == nil then return nil end
  if math.type(cs) ~= "integer" then
    if type(cs) == "number" and math.tointeger(cs) then cs = math.tointeger(cs)
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

return M

-- AsyncResult (API.md "AsyncResult"): the outcome of a pool task or of a
-- coroutine task (mp.spawn), and the functions that wait for many of them:
-- mp.wait, mp.as_completed, mp.gather.
--
-- A result is completed by its producer (the pool, the scheduler) with
-- _resolve / _reject.  Its callbacks are queued on sched's callback queue at
-- that moment, so they run in completion order, from a dispatch point.
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local compat = require "mproc.compat"
local util = require "mproc.util"

local pack, unpack = compat.pack, compat.unpack
local argerror, typename = util.argerror, util.typename

local AsyncResult = {}
AsyncResult.__index = AsyncResult
AsyncResult.__name = "mproc.AsyncResult"

local seq = 0  -- completion order

-- new(source [, opts]): source (a pool, or nil) has :_await(r, deadline)
-- and :_cancel(r); opts.callback / opts.error_callback.
local function new(source, callback, error_callback)
  return setmetatable({ _source = source, _done = false, _callback = callback,
                        _error_callback = error_callback }, AsyncResult)
end

local function is_result(v)
  return getmetatable(v) == AsyncResult
end

local function check_self(self, fname)
  if getmetatable(self) ~= AsyncResult then
    argerror(1, fname, "AsyncResult expected, got " .. typename(self), 2)
  end
end

local function run_done_callback(item)
  item[1](item[2])
end

local function complete(self)
  seq = seq + 1
  self._seq = seq
  local post = sched.post
  if self._ok then
    if self._callback then
      local v = self._values
      if self._map then post(self._callback, v[1])
      else post(function() self._callback(unpack(v, 1, v.n)) end) end
    end
  elseif self._error_callback then
    post(self._error_callback, self._err)
  end
  local cbs = self._cbs
  if cbs then
    self._cbs = nil
    for i = 1, #cbs do post(run_done_callback, { cbs[i], self }) end
  end
end

-- Completes with the packed values `values` (a table with n).
function AsyncResult:_resolve(values)
  if self._done then return end
  self._done, self._ok, self._values = true, true, values
  complete(self)
end

-- Completes with the error object `err`.
function AsyncResult:_reject(err)
  if self._done then return end
  self._done, self._ok, self._err = true, false, err
  complete(self)
end

local function await(self, deadline)
  if self._done then return true end
  local src = self._source
  if src then return src:_await(self, deadline) end
  return sched.wait_event(function() return self._done end, deadline)
end

function AsyncResult:wait(timeout)
  check_self(self, "wait")
  util.check_timeout(timeout, 1, "wait")
  local done = await(self, sched.deadline(timeout))
  sched.dispatch()
  return done
end

function AsyncResult:get(timeout)
  check_self(self, "get")
  util.check_timeout(timeout, 1, "get")
  if not self._done and not await(self, sched.deadline(timeout)) then
    sched.dispatch()
    -- where = "wait": this wait ran out, the task goes on (a task's own
    -- timeout is where = "task")
    errors.raise("Timeout", "timed out waiting for the result", { where = "wait" })
  end
  sched.dispatch()
  if self._ok then
    local v = self._values
    return unpack(v, 1, v.n)
  end
  self._retrieved = true  -- mp.run reports errors nobody retrieved
  error(self._err, 0)
end

-- A coroutine task's result: t:join() is t:get().
AsyncResult.join = AsyncResult.get

-- A pool's result finishes without the parent: ask the source.
local function poll(self)
  local src = self._source
  if not self._done and src and src._poll then src:_poll() end
  return self._done
end

function AsyncResult:ready()
  check_self(self, "ready")
  return poll(self)
end

function AsyncResult:successful()
  check_self(self, "successful")
  if not poll(self) then error("result is not ready", 2) end
  self._retrieved = true
  return self._ok
end

function AsyncResult:cancel()
  check_self(self, "cancel")
  if self._done then return false end
  local src = self._source
  if src and src:_cancel(self) then
    self._cancelled = true
    self:_reject(errors.new("Cancelled", "the task was cancelled"))
    return true
  end
  return false
end

function AsyncResult:cancelled()
  check_self(self, "cancelled")
  return self._cancelled == true
end

function AsyncResult:add_done_callback(fn)
  check_self(self, "add_done_callback")
  self._retrieved = true  -- the callback sees the outcome
  if type(fn) ~= "function" then
    argerror(1, "add_done_callback", "function expected, got "
      .. (fn == nil and "no value" or typename(fn)))
  end
  if self._done then
    sched.post(run_done_callback, { fn, self })
  else
    local cbs = self._cbs or {}
    cbs[#cbs + 1] = fn
    self._cbs = cbs
  end
end

function AsyncResult:__tostring()
  local st = not self._done and "pending" or self._cancelled and "cancelled"
    or self._ok and "done" or "failed"
  return ("<AsyncResult %s>"):format(st)
end

-- {=====================================================================
-- Waiting for many results
-- ======================================================================

local MODES = { ALL_COMPLETED = true, FIRST_COMPLETED = true, FIRST_EXCEPTION = true }

-- Besides AsyncResults, mp.wait and mp.as_completed take what
-- multiprocessing.connection.wait takes: Processes (ready once ended),
-- Pipe ends (ready when readable: data, or the peer closed) and Popen
-- objects (ready once the program ended).  Each kind: ready(v) without
-- blocking, and fd(v) -> the descriptor that becomes readable, or nil
-- when the condition must be polled.
local OTHERS = {
  ["mproc.Process"] = {
    ready = function(p) return not p:is_alive() end,
    fd = function(p) return p.sentinel end,
  },
  ["mproc.Conn"] = {
    ready = function(c) return c:poll(0) end,
    fd = function(c) return c:_pollfd() end,
  },
  ["mproc.subprocess.Popen"] = {
    ready = function(p) return p:poll() ~= nil end,
    fd = function(p) return p._ud:_waitfd() end,
  },
}

local WANT = "AsyncResult, Process, Pipe end or Popen"

-- Checks the list; returns its length and whether it holds only results.
local function check_items(list, n, fname)
  if type(list) ~= "table" then
    argerror(n, fname, "table expected, got " .. (list == nil and "no value" or typename(list)), 3)
  end
  local only_results = true
  for i = 1, list.n or #list do
    local v = list[i]
    if not is_result(v) then
      local kind = OTHERS[typename(v)]
      if not kind then
        argerror(n, fname, ("%s expected at index %d, got %s"):format(WANT, i,
          typename(v)), 3)
      end
      if kind == OTHERS["mproc.Process"] and v.pid == nil then
        argerror(n, fname, ("Process at index %d is not started"):format(i), 3)
      end
      only_results = false
    end
  end
  return list.n or #list, only_results
end

-- Ready now: a result that completed, or another object that is ready.
local function is_done(v)
  if is_result(v) then return v._done end
  return OTHERS[typename(v)].ready(v) and true or false
end

-- Waits until pred() holds.  Only results: pools with a single pending
-- result get their own fast path.  With other objects: one wait over the
-- descriptors of those not ready yet.
local function await_all(list, n, pred, deadline, only_results)
  if pred() then return true end
  if only_results then
    if n == 1 then
      await(list[1], deadline)
      return pred()
    end
    return sched.wait_event(pred, deadline)
  end
  local function collect()
    local fds, polled = {}, false
    for i = 1, n do
      local v = list[i]
      if not is_result(v) and not is_done(v) then
        local fd = OTHERS[typename(v)].fd(v)
        if fd then fds[#fds + 1] = fd else polled = true end
      end
    end
    return fds, polled
  end
  return sched.wait_many(collect, pred, deadline)
end

local function wait(list, opts)
  local n, only_results = check_items(list, 1, "wait")
  opts = util.check_opts(opts, { timeout = true, return_when = true }, "wait", 2)
  local timeout, mode = opts.timeout, opts.return_when
  util.check_timeout(timeout, 2, "wait")
  mode = mode or "ALL_COMPLETED"
  if not MODES[mode] then
    argerror(2, "wait", "return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION")
  end
  local pred
  if mode == "ALL_COMPLETED" then
    pred = function()
      for i = 1, n do if not is_done(list[i]) then return false end end
      return true
    end
  elseif mode == "FIRST_COMPLETED" then
    pred = function()
      if n == 0 then return true end
      for i = 1, n do if is_done(list[i]) then return true end end
      return false
    end
  else
    -- only a result can fail: other objects count as completions
    pred = function()
      local all = true
      for i = 1, n do
        local r = list[i]
        if is_done(r) then
          if is_result(r) and not r._ok then return true end
        else all = false end
      end
      return all
    end
  end
  await_all(list, n, pred, sched.deadline(timeout), only_results)
  sched.dispatch()
  local done, pending = {}, {}
  for i = 1, n do
    local r = list[i]
    if is_done(r) then done[#done + 1] = r else pending[#pending + 1] = r end
  end
  return done, pending
end

-- for r in mp.as_completed(results [, timeout]) do ... end
-- Results come in completion order; other objects (which carry no
-- completion time) as they are seen ready, before results done already.
local function as_completed(list, timeout)
  local n, only_results = check_items(list, 1, "as_completed")
  util.check_timeout(timeout, 2, "as_completed")
  local deadline = sched.deadline(timeout)
  local left = {}
  for i = 1, n do left[i] = list[i] end
  return function()
    if #left == 0 then return nil end
    local function first_done()
      local best, bi
      for i = 1, #left do
        local r = left[i]
        if is_result(r) then
          if r._done and (best == nil or (is_result(best) and r._seq < best._seq)) then
            best, bi = r, i
          end
        elseif (best == nil or is_result(best)) and is_done(r) then
          best, bi = r, i
        end
      end
      return best, bi
    end
    if not first_done() then
      local ok = await_all(left, #left, function() return first_done() ~= nil end, deadline,
        only_results)
      if not ok then
        sched.dispatch()
        errors.raise("Timeout", ("%d of %d results still pending"):format(#left, n),
          { where = "wait" })
      end
    end
    sched.dispatch()
    local r, i = first_done()
    table.remove(left, i)
    return r
  end
end

-- mp.gather(r1, r2, ...) -> list (with n) of each result's first value.
local function gather(...)
  local list = pack(...)
  for i = 1, list.n do
    if not is_result(list[i]) then
      argerror(i, "gather", "AsyncResult expected, got " .. typename(list[i]))
    end
  end
  wait(list, { return_when = "FIRST_EXCEPTION" })
  local first
  for i = 1, list.n do
    local r = list[i]
    if r._done and not r._ok and (first == nil or r._seq < first._seq) then first = r end
  end
  if first then
    first._retrieved = true
    error(first._err, 0)
  end
  local out = { n = list.n }
  for i = 1, list.n do out[i] = list[i]._values[1] end
  return out
end

-- }=====================================================================

-- mp.wait, mp.as_completed and mp.gather are exported by sched_api.
return {
  AsyncResult = AsyncResult, new = new, is_result = is_result,
  wait = wait, as_completed = as_completed, gather = gather,
}

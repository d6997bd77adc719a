-- mp.Pool (lua/mproc/pool.lua): the worker side.  A worker takes its
-- tasks from the task ring itself (src/core/pool.c), runs them and posts
-- the answers; it never waits for the parent.
local core = require "mproc.core"
local compat = require "mproc.compat"
local errors = require "mproc.errors"
local sched = require "mproc.sched"
local process = require "mproc.process"
local codec = require "mproc.codec"

local alarm = core.pool_alarm
local packed_acc, acc_pos = core.pool_packed_acc, core.pool_acc_pos
local acc_result = core.pool_acc_result
local pack, unpack, tmove = compat.pack, compat.unpack, compat.move
local xpcall, idiv = compat.xpcall, compat.idiv  -- xpcall: 5.1 passes no arguments
local min = math.min

local SLICE = sched.SLICE  -- a worker's wait for a task before it re-checks its parent
local FN_CACHE_SPAN = 512  -- a worker forgets its cached functions this often



local M = {}
-- Every board of this process: a new worker closes the ones it inherited.
M.boards = setmetatable({}, { __mode = "k" })
local all_boards = M.boards

-- {=====================================================================
-- The worker side
-- ======================================================================

local error_text, traceback, catch = errors.error_text, errors.traceback, errors.catch

local function post_error(board, tid, box, kind)
  local ok = board:_post(tid, "err", { box[1], box[2], kind or "TaskError" })
  if not ok then board:_post(tid, "err", { error_text(box[1]), box[2], kind or "TaskError" }) end
end

local function post_values(board, tid, vals)
  local ok, _, emsg = board:_post(tid, "ok", vals)
  if not ok then
    board:_post(tid, "err", { "cannot send the task's result: " .. emsg, nil, "SerializeError" })
  end
end

local function run_apply(board, tid, fn, args)
  local r = pack(xpcall(fn, catch, unpack(args, 1, args.n)))
  if r[1] then post_values(board, tid, tmove(r, 2, r.n, 1, { n = r.n - 1 }))
  else post_error(board, tid, r[2]) end
end

-- A batch: items[1..n] in chunks of cs.  One xpcall covers the whole
-- batch; after an error it goes on from the next chunk.  The answer holds
-- every value and, for the chunks that failed, {start, error value,
-- traceback}.  The claim's progress word follows the chunks, so that the
-- parent knows which one a dead worker was running.
local pos  -- the item being run (read after an error)
local function run_range(board, fn, star, items, from, n, cs)
  for k = from, n do
    pos = k
    if (k - 1) % cs == 0 then board:_progress(k) end
    if star then
      local a = items[k]
      items[k] = fn(unpack(a, 1, a.n or #a))
    else
      items[k] = fn(items[k])
    end
  end
end

local function post_batch(board, tid, out, errs)
  local ok = board:_post(tid, "batch", { out, errs })
  if not ok and errs then
    for i = 1, #errs do errs[i][2] = error_text(errs[i][2]) end
    ok = board:_post(tid, "batch", { out, errs })
  end
  if not ok then
    local _, _, emsg = board:_post(tid, "batch", { out })
    board:_post(tid, "err", { "cannot send the task's result: " .. tostring(emsg), nil,
                              "SerializeError" })
  end
end

local function run_batch(board, tid, fn, star, items, cs)
  local n = items.n
  local errs, from = nil, 1
  while from <= n do
    local ok, box = xpcall(run_range, catch, board, fn, star, items, from, n, cs)
    if ok then break end
    local start = idiv(pos - 1, cs) * cs + 1
    for k = start, min(start + cs - 1, n) do items[k] = nil end
    errs = errs or {}
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  post_batch(board, tid, items, errs)
  return idiv(n + cs - 1, cs)
end

-- A batch of packed numbers, still in the board's buffer: the calls run in
-- a C loop that writes packed results into an accumulator kept from batch
-- to batch (src/lua/pool.c); same answer as above.
local acc
local function run_packed(board, tid, fn, n, cs)
  acc = packed_acc(n, acc)
  local from, errs = 1, nil
  while from <= n do
    local ok, box = xpcall(board._run_pending, catch, board, fn, acc, from)
    if ok then break end
    local at = acc_pos(acc)
    errs = errs or {}
    if at < from then  -- failed before any call: every chunk left fails
      for start = from, n, cs do errs[#errs + 1] = { start, box[1], box[2] } end
      break
    end
    local start = idiv(at - 1, cs) * cs + 1
    errs[#errs + 1] = { start, box[1], box[2] }
    from = start + cs
  end
  if errs or not board:_post_numbers(tid, acc) then
    local out = acc_result(acc)
    if errs then
      for i = 1, #errs do
        for k = errs[i][1], min(errs[i][1] + cs - 1, n) do out[k] = nil end
      end
    end
    post_batch(board, tid, out, errs)
  end
  return idiv(n + cs - 1, cs)
end

-- Runs in the worker and never returns: every path ends in core.exit.
local function worker_main(board, slot, name, init, initargs, maxtasks, parent_pid)
  local ppid = core.getppid()
  pcall(function()
    for b in pairs(all_boards) do if b ~= board then b:_close() end end
    process.become_worker(name, parent_pid)
    os.exit = function(code)  -- luacheck: ignore 122 (our exit path, never the host's)
      core.exit(code == nil and 0 or code)
    end
  end)
  local code = 0
  local ok, err = xpcall(function()
    board:_worker(slot)
    if init then init(unpack(initargs, 1, initargs.n)) end
    local cache, taken, done = {}, 0, 0
    -- one slice of waiting for a task; "orphan" when the pool's process is gone
    local function take(slice)
      local op, tid, fn, payload, cs, timeout = board:_next(slice, cache)
      if op ~= nil then return op, tid, fn, payload, cs, timeout end
      if core.getppid() ~= ppid then return "orphan" end
    end
    while true do
      local op, tid, fn, payload, cs, timeout = take(SLICE)
      if op == nil then op, tid, fn, payload, cs, timeout = sched.wait_shared(take, nil) end
      if op == "orphan" or op == "stop" then
        break
      elseif op == "error" then
        board:_post(tid, "err", { "cannot receive the task: " .. tostring(fn), nil,
                                  "SerializeError" })
        done = done + 1
      elseif op ~= "none" then
        if timeout > 0 then alarm(timeout) end
        if op == "apply" then
          run_apply(board, tid, fn, payload)
          done = done + 1
        elseif op == "packed" then
          done = done + run_packed(board, tid, fn, payload, cs)
        else
          done = done + run_batch(board, tid, fn, op == "star", payload, cs)
        end
        if timeout > 0 then alarm(0) end
      end
      taken = taken + 1
      if taken % FN_CACHE_SPAN == 0 then cache = {} end
      if maxtasks and done >= maxtasks then break end
    end
  end, traceback)
  if not ok then
    pcall(function() io.stderr:write("Pool worker:\n", tostring(err), "\n") end)
    code = 1
  end
  core.exit(code)
end

-- }=====================================================================

-- The child side of spawn_worker (spawn_child.lua); never returns.
function M.spawned(p)
  local attached, kind, msg, errno = core.pool_board_attach(p.tasks, p.results,
                                                           p.fds[p.extra_at])
  -- the pool ended (its parent died or terminated it) before this worker
  -- came up: nothing to report to anybody
  if not attached and errno == core.ENOENT then core.exit(1) end
  local ok, board, init, initargs = pcall(function()
    return errors.check(attached, kind, msg, errno),
      codec.decode(p.init, false, true), codec.decode(p.initargs, false, true)
  end)
  if not ok then
    io.stderr:write("Pool worker ", tostring(p.name), ":\n", tostring(board), "\n")
    core.exit(1)
  end
  worker_main(board, p.slot, p.name, init, initargs, p.maxtasks, p.parent_pid)
end

M.main = worker_main

return M

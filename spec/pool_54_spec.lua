-- The parts of pool_spec.lua that need Lua 5.4: `<close>` on a Pool, and
-- the transport driven directly (its boards are closed by `<close>`, and it
-- checks 64-bit integers bit for bit).  tools/run-specs.sh runs this file on
-- 5.4 only.
local mp = require "mproc"
local core = require "mproc.core"
local support = require "support"

local error = error
local csleep = core.sleep

local errmsg = support.errmsg

local function spin_forever() while true do csleep(0.01) end end

describe("mproc.Pool", function()
  describe(":close() and :join()", function()
    it("<close> terminates when the block is left by an error", function()
      local r
      local ok = pcall(function()
        local pool <close> = mp.Pool(1)
        r = pool:apply_async(spin_forever)
        error("leaving")
      end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(errmsg(r.get, r, 1), "Cancelled"))
    end)

    it("works with <close>", function()
      local r
      do
        local pool <close> = mp.Pool(1)
        r = pool:apply_async(function() csleep(0.05) return "done" end)
      end
      assert.equal("done", r:get(0))
    end)
  end)
end)

-- The pool's transport (src/core/pool.c, src/lua/pool.c), driven directly: one
-- board plays both the parent and the worker of slot 0, so where a batch
-- breaks and when a frame is taken is not up to timing.
describe("the pool transport", function()
  local function board()
    local ok, b = core.pool_board()
    assert.is_true(ok)
    return b
  end
  local function fnbytes(fn)
    local ok, s = core.codec_dumps(fn)
    assert.is_true(ok)
    return s
  end
  local id = fnbytes(function(x) return x end)

  it("carries all-number items packed, keeping every subtype and bit", function()
    local b <close> = board()
    local items = { 1, 2.0, -0.0, math.mininteger, math.maxinteger, 1e308, 0 / 0 }
    assert.is_true(b:_batch(7, false, 9, id, 3, items, 1, #items))
    assert.is_true(b:_batch(8, false, 9, id, 1, items, 4, 2))  -- a slice
    b:_worker(0)
    local cache = {}
    local op, tid, fn, n, cs, timeout = b:_next(1, cache)
    assert.same({ "packed", 7, #items, 3, 0 }, { op, tid, n, cs, timeout })
    assert.equal(fn, cache[9])  -- kept under its id
    local acc = core.pool_packed_acc(n)
    b:_run_pending(fn, acc, 1)
    assert.is_true(b:_post_numbers(tid, acc))
    local rtid, kind, count = b:_get()
    assert.same({ 7, "packed", #items }, { rtid, kind, count })
    local got = b:_take(count)
    assert.equal(#items, got.n)
    for i = 1, 6 do
      assert.equal(math.type(items[i]), math.type(got[i]))
      assert.equal(string.pack("n", items[i]), string.pack("n", got[i]))
    end
    assert.is_true(got[7] ~= got[7])
    op, tid, fn, n = b:_next(1, cache)
    assert.same({ "packed", 8, 2 }, { op, tid, n })
    acc = core.pool_packed_acc(n, acc)
    b:_run_pending(fn, acc, 1)
    assert.same({ math.mininteger, math.maxinteger, n = 2 }, core.pool_acc_result(acc))
  end)

  it("sends what is not all numbers as a list", function()
    local b <close> = board()
    assert.is_true(b:_batch(1, false, 0, id, 1, { 1, "2", 3 }, 1, 3))
    assert.is_true(b:_batch(2, false, 0, id, 1, { 1, 2 }, 1, 3))  -- a hole
    assert.is_true(b:_batch(3, true, 0, id, 2, { { 1 }, { 2 } }, 1, 2))
    b:_worker(0)
    local op, tid, _, items = b:_next(1, {})
    assert.same({ "batch", 1, { 1, "2", 3, n = 3 } }, { op, tid, items })
    op, tid, _, items = b:_next(1, {})
    assert.same({ "batch", 2, { 1, 2, n = 3 } }, { op, tid, items })
    op, tid, _, items = b:_next(1, {})
    assert.same({ "star", 3, { { 1 }, { 2 }, n = 2 } }, { op, tid, items })
    assert.is_nil(b:_next(0, {}))
  end)

  it("leaves packed results for take(), until the next get", function()
    local b <close> = board()
    assert.is_true(b:_batch(5, false, 0, id, 1, { 10, 20.5, 30 }, 1, 3))
    assert.is_true(b:_batch(6, false, 0, id, 1, { 40 }, 1, 1))
    b:_worker(0)
    for _ = 1, 2 do
      local _, tid, fn, n = b:_next(1, {})
      local acc = core.pool_packed_acc(n)
      b:_run_pending(fn, acc, 1)
      b:_post_numbers(tid, acc)
    end
    local tid, kind, n = b:_get()
    assert.same({ 5, "packed", 3 }, { tid, kind, n })
    assert.matches("3 values, 2 expected", errmsg(b._take, b, 2))
    local out = { "keep" }
    assert.equal(out, b:_take(3, out, 2))
    assert.same({ "keep", 10, 20.5, 30 }, out)
    assert.equal("float", math.type(out[3]))
    assert.matches("no packed values", errmsg(b._take, b, 3))
    tid = b:_get()
    assert.equal(6, tid)
    assert.is_nil(b:_get())  -- gives up frame 6's values untaken
    assert.matches("no packed values", errmsg(b._take, b, 1))
  end)

  it("runs a chunk in C, carries on after an error, and reuses its accumulator", function()
    local b <close> = board()
    assert.is_true(b:_batch(1, false, 0, id, 1, { 1, 2, 3, 4, 5, 6 }, 1, 6))
    b:_worker(0)
    assert.equal("packed", (b:_next(1, {})))
    local calls = 0
    local function fn(x)
      calls = calls + 1
      if x == 3 then error("three") end
      if x == 5 then return "five" end
      if x == 6 then return nil end
      return x * 1.5
    end
    local acc = core.pool_packed_acc(6)
    local ok, err = pcall(b._run_pending, b, fn, acc, 1)
    assert.is_false(ok)
    assert.matches("three", err)
    assert.equal(3, core.pool_acc_pos(acc))
    assert.equal(3, select(3, b:_claim(0)))  -- the progress the parent sees
    b:_run_pending(fn, acc, 4)
    assert.equal(6, calls)
    assert.same({ 1.5, 3.0, nil, 6.0, "five", nil, n = 6 }, core.pool_acc_result(acc))
    -- only a complete, all-number accumulator goes out packed
    assert.is_false(b:_post_numbers(1, acc))
    assert.equal(acc, core.pool_packed_acc(6, acc))  -- room enough: the same one, emptied
    assert.same({ n = 6 }, core.pool_acc_result(acc))
    assert.matches("6 values, 2 expected",
      errmsg(b._run_pending, b, fn, core.pool_packed_acc(2), 1))
    b:_run_pending(function(x) return x + 1 end, acc, 1)
    assert.is_true(b:_post_numbers(1, acc))
    assert.equal(1, (b:_get()))
    assert.same({ 2, 3, 4, 5, 6, 7, n = 6 }, b:_take(6))
    assert.are_not.equal(acc, core.pool_packed_acc(7, acc))
  end)

  it("claims what a worker takes until its result is posted", function()
    local b <close> = board()
    assert.is_true(b:_apply(41, 0, id, { n = 1, "x" }, 2.5))
    assert.equal(0, (b:_claim(0)))
    b:_worker(0)
    local op, tid, fn, args, _, timeout = b:_next(1, {})
    assert.same({ "apply", 41, { n = 1, "x" }, 2.5 }, { op, tid, args, timeout })
    local ctid, start = b:_claim(0)
    assert.equal(41, ctid)
    assert.is_true(core.now() - start < 5)
    b:_progress(3)
    assert.equal(3, select(3, b:_claim(0)))
    assert.is_true(b:_post(41, "ok", { n = 1, fn("y") }))
    assert.equal(0, (b:_claim(0)))
    assert.same({ 41, "ok", { n = 1, "y" } }, { b:_get() })
  end)

  it("skips a cancelled task, and cannot cancel one taken", function()
    local b <close> = board()
    for t = 1, 3 do assert.is_true(b:_apply(t, 0, id, { n = 1, t })) end
    assert.is_true(b:_cancel(2))
    assert.is_false(b:_cancel(2))
    assert.is_false(b:_cancel(99))
    b:_worker(0)
    assert.equal(1, select(2, b:_next(1, {})))
    assert.is_false(b:_cancel(1))
    assert.equal(3, select(2, b:_next(1, {})))
    assert.is_nil(b:_next(0, {}))
  end)

  it("passes a big task through its own segment, and reports a lost one", function()
    local b <close> = board()
    local big = ("x"):rep(3 * 1024 * 1024)
    assert.is_true(b:_apply(1, 0, id, { n = 1, big }))
    assert.is_true(b:_apply(2, 0, id, { n = 1, big }))
    b:_worker(0)
    local _, tid, _, args = b:_next(1, {})
    assert.equal(1, tid)
    assert.equal(big, args[1])
    -- the second one's segment disappears before it is taken
    for _, name in ipairs(support.shm_names("mproc-q" .. core.getpid() .. "-")) do
      if name:find(".", 1, true) then os.remove("/dev/shm/" .. name) end
    end
    local op, tid2, msg = b:_next(1, {})
    assert.same({ "error", 2 }, { op, tid2 })
    assert.matches("cannot receive the task", msg)
  end)

  it("gives stop orders after what was queued, and nothing when empty", function()
    local b <close> = board()
    assert.is_true(b:_apply(1, 0, id, { n = 0 }))
    assert.is_true(b:_stop(1))
    b:_worker(0)
    assert.equal("apply", (b:_next(1, {})))
    assert.equal("stop", (b:_next(1, {})))
    local t0 = core.now()
    assert.is_nil(b:_next(0.05, {}))
    assert.is_true(core.now() - t0 >= 0.04)
    b:_close()
    assert.matches("closed pool", errmsg(b._next, b, 0, {}))
  end)
end)

-- Runs every example in examples/ (the seed tutorials' programs in mproc)
-- luacheck: max line length 120
-- in its own Lua (support.LUA, the VM of the specs) and checks its exit
-- status and output.  Most examples are written for 5.4 users (`<close>`):
-- on another VM only those that VM reads are run, the others are pending;
-- game_loop.lua and resty_style.lua are written for every VM.
local support = require "support"
local compat = require "mproc.compat"

local LIMIT = 20   -- seconds per example (each takes well under 3 s)

-- Runs examples/<name>.lua; returns its output (stdout and stderr) and
-- exit code (124 when `timeout` killed it).
-- (The exit code is echoed after the output: 5.1's close of a popen file
-- does not give it.)
local function run(name)
  local cmd = ("%s timeout -k 2 %d %s examples/%s.lua 2>&1; echo \"<exit $?>\""):format(
    support.lua_env(), LIMIT, support.LUA, name)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)<exit (%d+)>\n$")
  return body or out, tonumber(code)
end

local function count(out, pattern)
  local n = 0
  for _ in out:gmatch(pattern) do n = n + 1 end
  return n
end

local function lines(out)
  local t = {}
  for l in out:gmatch("[^\n]*") do if l ~= "" then t[#t + 1] = l end end
  return t
end

-- Index of the first line matching pattern (nil if none).
local function line_of(out, pattern)
  for i, l in ipairs(lines(out)) do
    if l:find(pattern) then return i end
  end
end

local function has(out, s) assert.is_truthy(out:find(s, 1, true), ("missing %q in:\n%s"):format(s, out)) end

-- On a VM that cannot read the example (5.4 syntax), the case is pending.
local function example(name, check)
  it("runs examples/" .. name .. ".lua", function()
    local f, err = loadfile("examples/" .. name .. ".lua")
    if not f then return pending(_VERSION .. " cannot read it: " .. tostring(err)) end
    local out, code = run(name)
    assert.equal(0, code, out)
    check(out)
  end)
end

describe("mproc examples", function()
  describe("processes", function()
    example("fork", function(out)
      local ppid = out:match("^Process %((%d+)%) start%.%.%.\n")
      assert.is_truthy(ppid, out)
      local cpid = out:match("I " .. "%(" .. ppid .. "%) just created a child process %((%d+)%)%.")
      assert.is_truthy(cpid, out)
      has(out, ("I am child process (%s) and my parent is %s."):format(cpid, ppid))
      has(out, "child exit code: 0")
    end)

    example("process_basics", function(out)
      assert.matches("^Parent process %d+%.\nProcess will start%.\nRun child process test %(%d+%)%.%.%.\n"
        .. "Process end%. exitcode = 0\n$", out)
    end)

    example("process_active_children", function(out)
      for i = 0, 4 do assert.equal(1, count(out, "Process: " .. i .. "\n")) end
      has(out, "CPU number: ")
      assert.is_true(count(out, "Child process name: Process%-%d id: %d+") >= 1)
      -- the ones sleeping longest print after "Process Ended": joined at exit
      assert.is_true(line_of(out, "Process: 4") > line_of(out, "Process Ended"))
    end)

    example("process_order", function(out)
      for i = 1, 4 do assert.equal(1, count(out, "Run child process test" .. i .. " %(%d+%)")) end
      assert.equal(2, line_of(out, "Process will start"))
    end)

    example("process_name_timing", function(out)
      assert.equal(1, count(out, "进程%-Process%-1测试开始"))
      assert.equal(1, count(out, "进程%-Process%-2测试结束"))
      local t = tonumber(out:match("耗时([%d.]+)"))
      assert.is_true(t >= 0.18 and t < 1.5, out)
    end)

    example("process_list_join", function(out)
      for i = 1, 10 do assert.equal(1, count(out, "done " .. i .. "\n")) end
      has(out, "all 10 joined, 10 with exit code 0")
    end)

    example("process_subclass", function(out)
      assert.equal(2 + 3 + 4, count(out, "Pid: %d+ LoopCount: %d"))
      assert.equal(3, count(out, "LoopCount: 0"))
      assert.equal(1, count(out, "LoopCount: 3"))
      has(out, "为Process-4自定义提示信息")
      assert.equal(#lines(out), line_of(out, "Main process Ended!"))
    end)

    example("daemon", function(out)
      if _VERSION == "Lua 5.1" and not compat.luajit then
        -- 5.1 counts the levels of a __newindex call differently: error's
        -- level 3 there is the assignment's line, which gets a position
        has(out, "set daemon after start: false, examples/daemon.lua:19: cannot set daemon after start")
      else
        has(out, "set daemon after start: false, cannot set daemon after start")
      end
      has(out, "worker finished")
      assert.equal(3, count(out, "worker %d"))
      assert.is_true(count(out, "daemon %d") >= 1)
      assert.is_falsy(out:find("daemon finished", 1, true))
    end)
  end)

  describe("synchronisation", function()
    example("lock_print", function(out)
      assert.equal(2 + 3 + 4 + 5 + 6, count(out, "Pid: %d+ LoopCount: %d+\n"))
      -- every line whole
      for _, l in ipairs(lines(out)) do assert.matches("^Pid: %d+ LoopCount: %d+$", l) end
    end)

    example("lock_hello", function(out)
      for i = 0, 9 do assert.equal(1, count(out, "hello world " .. i .. "\n")) end
      assert.equal(10, #lines(out))
    end)

    example("lock_balance", function(out)
      has(out, "with lock: balance = 0")
      assert.matches("without lock: balance = %-?%d+", out)
    end)

    example("semaphore_producer_consumer", function(out)
      assert.equal(4, count(out, "Producer append an element"))
      assert.equal(4, count(out, "Consumer pop an element"))
      -- never more than two elements in the buffer (the empty semaphore)
      local level = 0
      for _, l in ipairs(lines(out)) do
        if l:find("Producer") then level = level + 1 elseif l:find("Consumer") then level = level - 1 end
        assert.is_true(level >= 0 and level <= 2, out)
      end
      has(out, "Ended!")
    end)

    example("event", function(out)
      assert.equal(1, line_of(out, "is_set: false"))
      assert.equal(3, count(out, "waiter %d waiting"))
      assert.equal(3, count(out, "waiter %d woke up"))
      assert.is_true(line_of(out, "woke up") > line_of(out, "main sets the event"))
      has(out, "is_set: true")
      has(out, "wait(0.1) after clear: false")
    end)
  end)

  describe("queues and pipes", function()
    example("queue_writer_reader", function(out)
      for _, v in ipairs { "A", "B", "C" } do
        assert.equal(1, count(out, "Put " .. v .. " to queue%.%.%."))
        assert.equal(1, count(out, "Get " .. v .. " from queue%."))
        assert.is_true(line_of(out, "Get " .. v) > line_of(out, "Put " .. v))
      end
      has(out, "reader exitcode: -15")
      assert.matches("false\tEmpty", out)
    end)

    example("pipe_exchange", function(out)
      assert.equal("Producer Received: Consumer Words\nConsumer Received: Producer Words\nEnded!\n", out)
    end)

    example("pipe_send_recv", function(out)
      for _, v in ipairs { "A", "B", "C" } do
        assert.equal(1, count(out, "Send " .. v .. " to Pipe"))
        assert.equal(1, count(out, "Recv " .. v .. " from Pipe"))
      end
      assert.matches("false\tEOF\n$", out)
    end)

    example("pipe_poll", function(out)
      local l = lines(out)
      assert.equal("false", l[1])
      assert.same({ "true", "这里是子进程", "这是第二条数据", "false", "true", "false\tEOF" },
        { compat.unpack(l, #l - 5) })
      has(out, "进程-Process-1开始测试")
    end)
  end)

  describe("subprocess", function()
    example("subprocess_call", function(out)
      assert.equal("$ uname -s\n" .. io.popen("uname -s"):read("*a") .. "Exit code: 0\n$ sh -c 'exit 3'\n"
        .. "Exit code: 3\nfalse\tOSError\n", out)
    end)

    example("subprocess_communicate", function(out)
      assert.equal("$ sh\nhello\n42\nstderr: oops\nExit code: 0\n", out)
    end)
  end)

  describe("pool", function()
    example("pool_apply_async", function(out)
      -- tasks start as soon as they are submitted: "Started processes" may
      -- come after a "Start process" line, but before any task ended
      assert.is_true(line_of(out, "^Started processes$") < line_of(out, "End process"))
      for i = 0, 3 do
        assert.equal(1, count(out, "Start process: " .. i .. "\n"))
        assert.equal(1, count(out, "End process " .. i .. "\n"))
      end
      -- at most three at once: process 3 starts after one of 0..2 ended
      assert.is_true(line_of(out, "Start process: 3") > line_of(out, "End process"))
      assert.equal(#lines(out), line_of(out, "Subprocess done%."))
    end)

    example("pool_apply", function(out)
      local want = {}
      for i = 0, 3 do want[#want + 1] = "Start process: " .. i; want[#want + 1] = "End process " .. i end
      want[#want + 1] = "Started processes"
      want[#want + 1] = "Subprocess done."
      assert.same(want, lines(out))
    end)

    example("pool_map", function(out)
      for i = 1, 4 do assert.equal(1, count(out, "Start process: " .. i .. "\n")) end
      -- all four start before any ends (four workers)
      assert.is_true(line_of(out, "End process") > 4, out)
      assert.matches("results: 1, 4, 9, 16 %(n = 4%)\n$", out)
    end)

    example("pool_map_sum", function(out)
      assert.equal("{0, 2, 4, 6, 8, 10, 12, 14, 16, 18}\n{0, 2, 4, 6, 8, 10, 12, 14, 16, 18}\n", out)
    end)

    example("pool_async_get", function(out)
      assert.equal(3, count(out, "msg: hello %d"))
      assert.equal(3, count(out, "end\n"))
      assert.matches("::: donehello 0\n::: donehello 1\n::: donehello 2\nSub%-process%(es%) done%.\n"
        .. "get: 2\nget: 4\nget: 6\n$", out)
    end)

    example("pool_callback", function(out)
      local main = out:match("^main pid (%d+)\n")
      assert.is_truthy(main, out)
      assert.equal(3, count(out, "进程%-%d+开始测试"))
      assert.equal(3, count(out, "这是MainProcess的回调函数 %(pid " .. main .. "%)"))
      assert.is_falsy(out:find("进程-" .. main, 1, true))   -- tasks ran elsewhere
      local t = tonumber(out:match("耗时([%d.]+)"))
      assert.is_true(t >= 0.18 and t < 2, out)
    end)

    example("pool_long_time_task", function(out)
      assert.equal(1, line_of(out, "^Parent process %d+%.$"))
      for i = 0, 4 do
        assert.equal(1, count(out, "Run task " .. i .. " %(%d+%)%.%.%."))
        assert.equal(1, count(out, "Task " .. i .. " runs %d%.%d%d seconds%."))
      end
      -- five tasks, four workers: some pid ran two of them
      local pids, n = {}, 0
      for pid in out:gmatch("Run task %d %((%d+)%)") do
        if not pids[pid] then pids[pid] = true; n = n + 1 end
      end
      assert.is_true(n <= 4)
      has(out, "Waiting for all subprocesses done...")
      assert.equal(#lines(out), line_of(out, "All subprocesses done%."))
    end)

    example("send_method", function(out)
      assert.equal("0 1 4 9 16 25 36 49 64 81 \n90\n16\n", out)
    end)

    example("pool_coroutines", function(out)
      for w = 1, 3 do
        assert.equal(1, count(out, "worker " .. w .. " %(pid %d+%): 10 coroutines done, sum 55"))
      end
      local t = tonumber(out:match("耗时([%d.]+)"))
      assert.is_true(t >= 0.18 and t < 2, out)   -- not 30 x 0.2 s
    end)

    example("coroutine_loop", function(out)
      assert.equal("task main is running...\ntask loop is running...\ntask loop >>> 1\ntask loop >>> 2\n"
        .. "task loop >>> 3\ntask loop >>> 4\ntask loop >>> 5\ntask loop is end.\ntask main is end.\n", out)
    end)
  end)

  describe("tutorial notes", function()
    example("notes_start_no_wait", function(out)
      has(out, "child ran before the parent's code ended: true")
      assert.is_true(line_of(out, "child: running") < line_of(out, "its own code ended"))
    end)

    example("notes_interleave", function(out)
      local with = out:match("%-%- with a lock:\n(.*)$")
      assert.is_truthy(with, out)
      for _, l in ipairs(lines(with)) do assert.matches("^aaaa$", (l:gsub("b", "a"))) end
      assert.equal(3, count(with, "aaaa\n"))
      assert.equal(3, count(with, "bbbb\n"))
      local without = out:match("%-%- without a lock:\n(.*)%-%- with")
      assert.equal(12, count(without, "a"))
      assert.equal(12, count(without, "b"))
    end)

    example("notes_pool_close_join", function(out)
      local started, closed = out:match("task started at ([%d.]+) s, close%(%) called at ([%d.]+) s")
      assert.is_true(tonumber(started) < tonumber(closed), out)
      has(out, "join() before close(): pool is still running")
      has(out, "apply_async() after close(): pool is not running")
      has(out, "join() after close(): done")
    end)

    example("notes_pool_workers", function(out)
      local n = tonumber(out:match("10 items ran in (%d+) worker processes"))
      assert.is_true(n >= 1 and n <= 2, out)
      has(out, "imap over an endless iterator: 5th square = 25")
    end)

    example("notes_random_after_fork", function(out)
      assert.equal("as forked: 3 children drew 3 different number(s)\n"
        .. "math.randomseed(42) in each: 3 children drew 1 different number(s)\n"
        .. "pool workers: 4 tasks drew 4 different number(s)\n", out)
    end)

    example("notes_terminate", function(out)
      assert.equal("grandchild alive before terminate: true\nchild exitcode: -15\n"
        .. "grandchild alive after terminate: false\n", out)
    end)
  end)

  describe("examples for every Lua (issue 18)", function()
    example("game_loop", function(out)
      assert.matches("^90 frames, 18 paths, longest frame's work [%d.]+ ms of CPU "
        .. "%(budget 16%.7 ms%)\nevery frame's work fit its budget\n$", out)
    end)

    example("resty_style", function(out)
      assert.equal("request 1: 300 words, checksum 2057616931\n"
        .. "request 2: 600 words, checksum 677917409\n"
        .. "request 3: 900 words, checksum 246334509\n"
        .. "request 4: 1200 words, checksum 1609043470\n"
        .. "request 5: 1500 words, checksum 2120039646\n", out)
    end)
  end)

  describe("docs/guide.md (issue 13)", function()
    -- The code block of a section, run with the definitions the guide made
    -- earlier (mp, fib).
    local function section_code(path, heading)
      local f = assert(io.open(path))
      local doc = f:read("*a")
      f:close()
      local at = assert(doc:find(heading, 1, true), "no section " .. heading)
      return assert(doc:match("```lua\n(.-)```", at))
    end

    for _, path in ipairs { "docs/guide.md", "docs/guide.zh.md" } do
      it("the luv example of " .. path .. " §6 runs to completion", function()
        local has_luv = pcall(require, "luv")
        if not has_luv then return pending("lua-luv is not installed") end
        local code = section_code(path, "## 6.")
        if not compat.load(code) then return pending(_VERSION .. " cannot read the example") end
        local out, ok, how, n = support.run_script('local mp = require "mproc"\n'
          .. "local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end\n"
          .. code .. '\nprint("exited")\n')
        assert.is_true(ok == true, ("%s %s: %s"):format(how, tostring(n), out))
        assert.equal("got\t75025\nexited\n", out)
      end)
    end
  end)
end)

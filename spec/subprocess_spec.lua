local mp = require "mproc"
local support = require "support"
local sp = mp.subprocess
local compat = require "mproc.compat"

local errmsg = support.errmsg

local elapsed = support.elapsed

describe("mproc.subprocess", function()
  describe(".run()", function()
    it("returns the returncode without capturing by default", function()
      local r = sp.run({ "sh", "-c", "exit 3" })
      assert.equal(3, r.returncode)
      assert.is_nil(r.stdout)
      assert.is_nil(r.stderr)
    end)

    it("captures stdout and stderr", function()
      local r = sp.run({ "sh", "-c", "echo out; echo err >&2" }, { capture = true })
      assert.equal(0, r.returncode)
      assert.equal("out\n", r.stdout)
      assert.equal("err\n", r.stderr)
    end)

    it("feeds input", function()
      local r = sp.run({ "cat" }, { input = "a\0b", capture = true })
      assert.equal("a\0b", r.stdout)
    end)

    it("moves 10 MiB on stdout and stderr at once without deadlock", function()
      local script = "head -c 10485760 /dev/zero & head -c 10485760 /dev/zero >&2; wait"
      local r = sp.run({ "sh", "-c", script },
        { capture = true, timeout = 60 })
      assert.equal(10485760, #r.stdout)
      assert.equal(10485760, #r.stderr)
    end)

    it("writes 10 MiB of input while reading 10 MiB of output", function()
      local input = string.rep("0123456789abcdef", 655360)
      local r = sp.run({ "cat" }, { input = input, capture = true, timeout = 60 })
      assert.equal(#input, #r.stdout)
      assert.is_true(r.stdout == input)
    end)

    it("raises Timeout and kills and reaps the child", function()
      local dt, ok, err = elapsed(function()
        return sp.run({ "sleep", "10" }, { timeout = 0.2 })
      end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(err, "Timeout"))
      assert.truthy(dt >= 0.18 and dt < 1.5)
    end)

    it("raises CalledProcessError with check = true", function()
      local err = errmsg(sp.run, { "sh", "-c", "echo x; exit 4" }, { check = true, capture = true })
      assert.is_true(mp.is_error(err, "CalledProcessError"))
      assert.equal(4, err.returncode)
      assert.equal("x\n", err.stdout)
      assert.equal("command 'sh -c echo x; exit 4' returned non-zero exit status 4", err.message)
    end)

    it("raises OSError for a missing program, not exit code 127", function()
      local err = errmsg(sp.run, { "/nonexistent/program" })
      assert.is_true(mp.is_error(err, "OSError"))
      assert.equal(2, err.errno)
      assert.equal("cannot run '/nonexistent/program': No such file or directory", err.message)
      err = errmsg(sp.run, { "no-such-program-mproc" })
      assert.is_true(mp.is_error(err, "OSError"))
    end)

    it("uses no shell unless shell = true", function()
      local r = sp.run({ "echo", "$HOME;", "x" }, { capture = true })
      assert.equal("$HOME; x\n", r.stdout)
      r = sp.run("echo a && echo b", { shell = true, capture = true })
      assert.equal("a\nb\n", r.stdout)
    end)

    it("runs in cwd with env", function()
      local r = sp.run({ "sh", "-c", "pwd; echo $FOO; echo ${HOME:-none}" },
        { capture = true, cwd = "/", env = { FOO = "bar" } })
      assert.equal("/\nbar\nnone\n", r.stdout)
      local err = errmsg(sp.run, { "true" }, { cwd = "/nonexistent-dir" })
      assert.is_true(mp.is_error(err, "OSError"))
    end)

    it("sends stderr to stdout and to /dev/null", function()
      local r = sp.run({ "sh", "-c", "echo a; echo b >&2" }, { stdout = "pipe", stderr = "stdout" })
      assert.equal("a\nb\n", r.stdout)
      r = sp.run({ "sh", "-c", "echo a; echo b >&2" }, { stdout = "pipe", stderr = "devnull" })
      assert.equal("a\n", r.stdout)
      assert.is_nil(r.stderr)
    end)

    it("writes to an open Lua file", function()
      local f = io.tmpfile()
      sp.run({ "echo", "to file" }, { stdout = f })
      f:seek("set")
      assert.equal("to file\n", f:read("*a"))
      f:close()
    end)

    it("rejects bad arguments", function()
      assert.equal("bad argument #1 to 'run' (table expected, got number)", errmsg(sp.run, 1))
      assert.equal("bad argument #1 to 'run' (argv must not be empty)", errmsg(sp.run, {}))
      assert.equal("bad argument #1 to 'run' (argv[2] must be a string, got table)",
        errmsg(sp.run, { "a", {} }))
      assert.equal("bad argument #2 to 'run' (table expected, got string)",
        errmsg(sp.run, { "true" }, "x"))
      assert.equal("bad argument #1 to 'run' (string expected with shell = true, got table)",
        errmsg(sp.run, { "true" }, { shell = true }))
      assert.equal("bad argument #2 to 'run' (timeout must be >= 0)",
        errmsg(sp.run, { "true" }, { timeout = -1 }))
      assert.equal("bad argument #2 to 'run' (input must be a string)",
        errmsg(sp.run, { "true" }, { input = 5 }))
      assert.equal("bad argument #2 to 'run' (stdout must be \"pipe\", \"devnull\", \"inherit\", "
        .. "a descriptor or an open file)", errmsg(sp.run, { "true" }, { stdout = "bogus" }))
      assert.equal("bad argument #2 to 'run' (env must map strings to strings)",
        errmsg(sp.run, { "true" }, { env = { 1 } }))
    end)
  end)

  describe(".call() / .check_call() / .check_output()", function()
    it("returns the exit status", function()
      assert.equal(0, sp.call({ "true" }))
      assert.equal(1, sp.call({ "false" }))
      assert.equal(0, sp.check_call({ "true" }))
      assert.is_true(mp.is_error(errmsg(sp.check_call, { "false" }), "CalledProcessError"))
    end)

    it("check_output returns stdout and raises on failure", function()
      assert.equal("hello\n", sp.check_output({ "echo", "hello" }))
      local err = errmsg(sp.check_output, { "sh", "-c", "echo partial; exit 2" })
      assert.is_true(mp.is_error(err, "CalledProcessError"))
      assert.equal(2, err.returncode)
      assert.equal("partial\n", err.stdout)
    end)
  end)

  describe(".Popen()", function()
    it("communicates like the seed's nslookup example", function()
      local p = sp.Popen({ "sh", "-c", "while read l; do echo \"got $l\"; done; echo bye >&2" },
        { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
      assert.is_number(p.pid)
      local out, err = p:communicate("set q=mx\npython.org\nexit\n", 5)
      assert.equal("got set q=mx\ngot python.org\ngot exit\n", out)
      assert.equal("bye\n", err)
      assert.equal(0, p.returncode)
    end)

    it("talks line by line through the pipe streams", function()
      local p = sp.Popen({ "cat" }, { stdin = "pipe", stdout = "pipe" })
      p.stdin:write("one\ntwo\n", 5)
      assert.equal("one", p.stdout:readline(5))
      assert.equal("two", p.stdout:readline(5))
      p.stdin:write("three")
      p.stdin:close()
      assert.equal("th", p.stdout:read(2, 5))
      assert.equal("ree", p.stdout:read(nil, 5))
      assert.is_nil(p.stdout:read(1, 5))
      assert.equal(0, p:wait(5))
      assert.equal("attempt to use a closed stream", errmsg(p.stdin.write, p.stdin, "x"))
      assert.equal("cannot write to stdout", errmsg(p.stdout.write, p.stdout, "x"))
      p:close()
    end)

    it("reads a chunk as true and the bytes, nothing else (issue 18: 5.3 crashed)", function()
      local p = sp.Popen({ "printf", "hello" }, { stdout = "pipe" })
      assert.equal(0, p:wait(5))
      local r = compat.pack(p._ud:_read(1))   -- stdout's raw read
      assert.same({ true, "hello", n = 2 }, r)
      p:close()
    end)

    it("iterates lines", function()
      local p = sp.Popen({ "printf", "a\\nb\\nc" }, { stdout = "pipe" })
      local got = {}
      for l in p.stdout:lines(5) do got[#got + 1] = l end
      assert.same({ "a", "b", "c" }, got)
      assert.equal(0, p:wait(5))
      p:close()
    end)

    it("reads time out with Timeout", function()
      local p = sp.Popen({ "sleep", "5" }, { stdout = "pipe" })
      local err = errmsg(p.stdout.read, p.stdout, 1, 0.1)
      assert.is_true(mp.is_error(err, "Timeout"))
      p:kill()
      assert.equal(-9, p:wait(5))
    end)

    it("poll() is nil while running; wait(timeout) raises Timeout; terminate ends it", function()
      local p = sp.Popen({ "sleep", "10" })
      assert.is_nil(p:poll())
      local dt, ok, err = elapsed(function() return p:wait(0.2) end)
      assert.is_false(ok)
      assert.is_true(mp.is_error(err, "Timeout"))
      assert.truthy(dt >= 0.18 and dt < 1.5)
      p:terminate()
      assert.equal(-15, p:wait(5))
      assert.equal(-15, p.returncode)
      assert.equal(-15, p:poll())
      p:kill()   -- a no-op once reaped
    end)

    it("waits by polling where there is no pidfd", function()
      local p = sp.Popen({ "sh", "-c", "sleep 0.3; exit 3" })
      local methods = getmetatable(p._ud).__index
      local waitfd = methods._waitfd
      methods._waitfd = function() return nil end  -- as on a kernel without pidfd_open
      local ok, e = pcall(function()
        local dt, ok1, err = elapsed(function() return p:wait(0.1) end)
        assert.is_false(ok1)
        assert.is_true(mp.is_error(err, "Timeout"))
        assert.truthy(dt >= 0.08 and dt < 1.5)
        assert.equal(3, p:wait(5))
      end)
      methods._waitfd = waitfd
      assert(ok, e)
      assert.equal(3, p.returncode)
    end)

    it("communicate raises Timeout and can be called again", function()
      local p = sp.Popen({ "sh", "-c", "echo early; sleep 0.5; echo late" }, { stdout = "pipe" })
      local err = errmsg(p.communicate, p, nil, 0.1)
      assert.is_true(mp.is_error(err, "Timeout"))
      local out = p:communicate(nil, 5)
      assert.equal("early\nlate\n", out)
      assert.equal(0, p.returncode)
    end)

    it("ignores a program that does not read its input", function()
      local p = sp.Popen({ "true" }, { stdin = "pipe" })
      p:communicate(string.rep("x", 2 ^ 20), 5)
      assert.equal(0, p.returncode)
    end)

    it("leaves no zombie when collected unwaited", function()
      local pid
      do
        local p = sp.Popen({ "true" })
        pid = p.pid
      end
      collectgarbage(); collectgarbage()
      require("mproc.core").sleep(0.2)
      sp.call({ "true" })   -- reaps the abandoned ones
      local f = io.open("/proc/" .. pid .. "/stat")
      local stat = f and f:read("*a")
      if f then f:close() end
      assert.is_true(stat == nil or not stat:match("^%d+ %b() Z"))
    end)

    it("rejects bad arguments", function()
      assert.equal("bad argument #2 to 'Popen' (stdin must be \"pipe\", \"devnull\", \"inherit\", "
        .. "a descriptor or an open file)", errmsg(sp.Popen, { "true" }, { stdin = "stdout" }))
      local p = sp.Popen({ "true" })
      assert.equal("bad argument #1 to 'wait' (timeout must be >= 0)", errmsg(p.wait, p, -1))
      assert.equal("bad argument #1 to 'communicate' (string expected, got number)",
        errmsg(p.communicate, p, 5))
      assert.equal("cannot send input: stdin is not a pipe", errmsg(p.communicate, p, "x"))
      assert.equal("bad argument #1 to 'poll' (Popen expected, got no value)", errmsg(p.poll))
      p:wait(5)
    end)
  end)

  describe("options and messages (issue 13)", function()
    it("refuses unknown options, with a hint for near misses", function()
      assert.equal("bad argument #2 to 'run' (unknown option 'capture_outptu'; "
        .. "did you mean 'capture_output'?)",
        errmsg(sp.run, { "true" }, { capture_outptu = true }))
      assert.equal("bad argument #2 to 'Popen' (unknown option 'stdot'; did you mean 'stdout'?)",
        errmsg(sp.Popen, { "true" }, { stdot = "pipe" }))
      assert.equal("bad argument #2 to 'check_output' (unknown option 'bogus')",
        errmsg(sp.check_output, { "true" }, { bogus = 1 }))
      assert.equal("bad argument #2 to 'call' (unknown option 'timout'; did you mean 'timeout'?)",
        errmsg(sp.call, { "true" }, { timout = 1 }))
      assert.equal("bad argument #2 to 'Popen' (unknown option 'input')",
        errmsg(sp.Popen, { "true" }, { input = "x" }))
      assert.equal("bad argument #2 to 'run' ('capture' must be a boolean, got string)",
        errmsg(sp.run, { "true" }, { capture = "yes" }))
      assert.equal("bad argument #2 to 'run' (number expected, got string)",
        errmsg(sp.run, { "true" }, { timeout = "5" }))
    end)

    it("accepts Python's capture_output and text", function()
      local r = sp.run({ "sh", "-c", "echo out; echo err >&2" },
        { capture_output = true, text = true })
      assert.equal("out\n", r.stdout)
      assert.equal("err\n", r.stderr)
      local p = sp.Popen({ "echo", "hi" }, { stdout = "pipe", text = true })
      assert.equal("hi\n", (p:communicate(nil, 5)))
    end)

    it("blames a bad cwd, not the program", function()
      local err = errmsg(sp.run, { "ls" }, { cwd = "/nope" })
      assert.is_true(mp.is_error(err, "OSError"))
      assert.equal("cannot use '/nope' as cwd (to run 'ls'): No such file or directory",
        err.message)
      assert.equal(2, err.errno)
      err = errmsg(sp.Popen, { "true" }, { cwd = "/etc/passwd" })
      assert.matches("^cannot use '/etc/passwd' as cwd %(to run 'true'%): Not a directory",
        err.message)
      -- a missing program in a good cwd still blames the program
      err = errmsg(sp.run, { "no-such-program-mproc" }, { cwd = "/" })
      assert.equal("cannot run 'no-such-program-mproc': No such file or directory", err.message)
    end)

    it("a run timeout names run and the command", function()
      local err = errmsg(sp.run, { "sleep", "10" }, { timeout = 0.1 })
      assert.is_true(mp.is_error(err, "Timeout"))
      assert.equal("run timed out after 0.1 s: sleep 10", err.message)
      assert.same({ "sleep", "10" }, err.cmd)
      err = errmsg(sp.check_output, { "sleep", 10 }, { timeout = 0.1 })
      assert.equal("check_output timed out after 0.1 s: sleep 10", err.message)
    end)
  end)

  describe("start_new_session", function()
    -- field 6 of /proc/<pid>/stat: the session id
    local function session(pid)
      local f = assert(io.open("/proc/" .. pid .. "/stat"))
      local st = f:read("*a")
      f:close()
      return tonumber(st:match("^%d+ %b() %S+ %d+ %d+ (%d+)"))
    end

    it("makes the child a session (and process group) leader", function()
      local p = sp.Popen({ "sleep", "10" }, { start_new_session = true })
      local sid = session(p.pid)
      p:kill(); p:wait(5)
      assert.equal(p.pid, sid)
      local q = sp.Popen({ "sleep", "10" })
      local sid2 = session(q.pid)
      q:kill(); q:wait(5)
      assert.are_not.equal(q.pid, sid2)
    end)

    it("is a boolean option", function()
      local ok, err = pcall(sp.Popen, { "true" }, { start_new_session = 1 })
      assert.is_false(ok)
      assert.matches("start_new_session", tostring(err))
    end)
  end)
end)

-- Starting programs (see subprocess.py): run /bin/true, and a capture of
-- 1 MiB of output.
local mp = require "mproc"
local bench = require "bench"
local sp = mp.subprocess

bench.report("run_true", bench.per_op(function(n)
  for _ = 1, n do sp.run({ "/bin/true" }) end
end), "s", "<=0.5")
bench.report("check_output_echo", bench.per_op(function(n)
  for _ = 1, n do sp.check_output({ "/bin/echo", "hello" }) end
end), "s", "<=0.5")
bench.report("capture_16MiB", bench.per_op(function(n)
  for _ = 1, n do sp.run({ "head", "-c", "16777216", "/dev/zero" }, { capture = true }) end
end, 0.5), "s")

-- The floor: posix_spawn of /bin/true + waitpid from a small C program.
local floor = require("floor")("spawn")
if floor then bench.report("C posix_spawn+waitpid floor", floor, "s") end

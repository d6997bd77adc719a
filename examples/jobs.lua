-- A jobs file for `mproc run` (docs/cli.md): a small build-like pipeline.
--   bin/mproc run examples/jobs.lua -j 4
-- Makes 4 input files, converts each (upper case), compresses each, then a
-- Lua function job checks the results and writes a summary.  Everything
-- goes under OUT (default .mproc/example), logs under .mproc/logs.
local OUT = os.getenv("OUT") or ".mproc/example"
local N = 4

local jobs = {
  { name = "setup", cmd = { "mkdir", "-p", OUT } },
}
local compressed = {}
for i = 1, N do
  local raw, up = ("%s/part%d.txt"):format(OUT, i), ("%s/part%d.up"):format(OUT, i)
  jobs[#jobs + 1] = { name = "fetch-" .. i, deps = { "setup" },
    -- stands in for a download: 2000 numbered lines
    cmd = ("seq 1 2000 | sed 's/^/line of part %d: /' > %s"):format(i, raw) }
  jobs[#jobs + 1] = { name = "convert-" .. i, deps = { "fetch-" .. i },
    cmd = ("tr a-z A-Z < %s > %s"):format(raw, up) }
  jobs[#jobs + 1] = { name = "compress-" .. i, deps = { "convert-" .. i },
    cmd = { "gzip", "-f", "-k", up }, retries = 1, timeout = 30 }
  compressed[#compressed + 1] = "compress-" .. i
end

-- A Lua job: runs on a pool worker; print goes to .mproc/logs/summary.out.
jobs[#jobs + 1] = { name = "summary", deps = compressed, fn = function(job)
  local total = 0
  for i = 1, N do
    local f = assert(io.open(("%s/part%d.up"):format(OUT, i)))
    for line in f:lines() do
      assert(line == line:upper(), "not converted: " .. line)
      total = total + 1
    end
    f:close()
  end
  local f = assert(io.open(OUT .. "/summary.txt", "w"))
  f:write(("%d files, %d lines\n"):format(N, total))
  f:close()
  print(job.name .. ": " .. total .. " lines checked")
end }

return { jobs = jobs }

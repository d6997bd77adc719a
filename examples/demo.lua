-- mproc demo: a CPU-bound job done serially, then with a Pool of worker
-- processes (with a progress bar on stderr), printing both times and the
-- speedup.  The job: count the primes below N in blocks, by trial division.
local mp = require "mproc"

local N, BLOCK = 3000000, 50000

-- A plain Lua function: it travels to the workers as bytecode.
local function count_primes(lo, hi)
  local count = 0
  for n = math.max(lo, 2), hi do
    local prime = true
    if n % 2 == 0 then
      prime = n == 2
    else
      local d = 3
      while d * d <= n do
        if n % d == 0 then prime = false break end
        d = d + 2
      end
    end
    if prime then count = count + 1 end
  end
  return count
end

local blocks = {}
for lo = 1, N, BLOCK do blocks[#blocks + 1] = { lo, math.min(lo + BLOCK - 1, N) } end

print(("counting the primes below %d in %d blocks; %d CPUs"):format(N, #blocks, mp.cpu_count()))

local now = require("mproc.core").now
local t0 = now()
local serial = 0
for _, b in ipairs(blocks) do serial = serial + count_primes(b[1], b[2]) end
local t_serial = now() - t0
print(("serial:   %d primes in %.2f s"):format(serial, t_serial))

t0 = now()
local parallel = 0
do
  local pool <close> = mp.Pool()              -- one worker per CPU
  local results = pool:imap_unordered(function(b) return count_primes(b[1], b[2]) end, blocks)
  for _, count in mp.progress(results, { total = #blocks, label = "pool" }) do
    parallel = parallel + count
  end
end                                           -- <close>: close + join, no process left
local t_pool = now() - t0
print(("pool:     %d primes in %.2f s"):format(parallel, t_pool))
assert(parallel == serial, "the two counts differ")
print(("speedup:  %.2fx with %d workers"):format(t_serial / t_pool, mp.cpu_count()))

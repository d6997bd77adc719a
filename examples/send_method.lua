-- Sending an object's method to a Pool: in Python 2 this failed with
-- "Can't pickle instancemethod".  In mproc a closure crosses with its
-- upvalues, and a table crosses with its metatable, so both work.
-- Seed: "遇到的一些问题" in 002.
local mp = require "mproc"
io.stdout:setvbuf("line")

local A = {}
A.__index = A
function A.new(k) return setmetatable({ k = k }, A) end
function A:run(i) return i * i * self.k end

local a = A.new(1)
local pool <close> = mp.Pool(3)
local results = {}
for i = 0, 9 do
  -- a "bound method": a closure over the object
  results[#results + 1] = pool:apply_async(function(x) return a:run(x) end, { i })
end
for _, r in ipairs(results) do io.write(r:get(), " ") end
print()

-- The object itself as an argument: its metatable (and so its methods) travels too.
print(pool:apply(function(obj, x) return obj:run(x) end, A.new(10), 3))
-- And the method as a function value with the object as first argument.
print(pool:apply(A.run, a, 4))

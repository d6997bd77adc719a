-- An OpenResty-style script on plain LuaJIT (OpenResty is not in Debian):
-- a handler module keeps one Pool made once per process (as in
-- init_worker_by_lua), and each "request" is a light thread (mp.spawn, as
-- ngx.thread.spawn) that fans work out to the pool and answers within a
-- deadline.  Waiting inside mp.run suspends only the request's coroutine.
--   luajit examples/resty_style.lua   (or lua5.1, lua5.3, lua5.4)
local mp = require "mproc"

local _M = {}
local pool

-- init_worker_by_lua: once per server process
function _M.init_worker()
  pool = mp.Pool(2)
end

local function word_count(text)
  local n = 0
  for _ in text:gmatch("%S+") do n = n + 1 end
  return n
end

local function checksum(text)
  local h = 0
  for i = 1, #text do h = (h * 31 + text:byte(i)) % 2147483647 end
  return h
end

-- content_by_lua: one request; ngx.say is `say` here
function _M.handle(id, body, say)
  local words = pool:apply_async(word_count, { body })
  local sum = pool:apply_async(checksum, { body })
  -- (no pcall around a wait: Lua 5.1 cannot yield through it)
  words:wait(2)
  sum:wait(2)
  if words:ready() and sum:ready() and words:successful() and sum:successful() then
    say(("request %d: %d words, checksum %d"):format(id, words:get(), sum:get()))
  else
    say(("request %d: 504 (not ready within 2 s)"):format(id))
  end
end

-- exit_worker_by_lua
function _M.exit_worker()
  pool:close()
  pool:join()
end

-- A tiny "server": five concurrent requests
_M.init_worker()
local replies = {}
mp.run(function()
  local threads = {}
  for id = 1, 5 do
    local body = string.rep("lorem ipsum dolor ", id * 100)
    threads[id] = mp.spawn(_M.handle, id, body, function(line) replies[id] = line end)
  end
  for _, t in ipairs(threads) do t:join() end
end)
_M.exit_worker()
for id = 1, #replies do print(replies[id]) end

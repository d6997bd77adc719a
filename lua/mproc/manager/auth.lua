-- Managers, the handshake and the framed I/O of both sides (see
-- lua/mproc/manager.lua): the keys, the challenges and the proofs.  Only
-- raw bytes of at most AUTH_MAX are read before a peer has proved the key;
-- then both sides seal every frame (NetConn:_secure, src/lua/net.c).
local core = require "mproc.core"
local errors = require "mproc.errors"
local sched = require "mproc.sched"

local check, raise = errors.check, errors.raise

local M = {}

M.AUTH_MAX = 256                     -- longest handshake frame
M.MAX_FRAME = 1073741824             -- 2^30: longest request or reply
local AUTH_MAX = M.AUTH_MAX
local CHALLENGE_S, CHALLENGE_C = "#CHALLENGE#S", "#CHALLENGE#C"
local NONCE = 32                     -- random bytes after a challenge's prefix
local WELCOME, FAILURE = "#WELCOME#", "#FAILURE#"

-- The family authkey: made once in the main process (before any fork),
-- inherited by every child, like Python's process.authkey.  It is the
-- default key of every manager and the key a received proxy uses when its
-- process never connected to that address itself.  known: address key ->
-- authkey.
M.keys = { family = core.net_random_bytes(32), known = {} }

-- A spawned child (no inherited memory) gets both from its parent.
require("mproc.context").inherit("manager.keys",
  function() return { M.keys.family, M.keys.known } end,
  function(v) M.keys.family, M.keys.known = v[1], v[2] end)

-- {=====================================================================
-- Framed I/O (both sides)
-- ======================================================================

-- Sends one frame, waiting for the socket up to deadline; false when the
-- deadline passed.  Raises Closed/OSError.
function M.send_frame(c, bytes, deadline)
  local done = check(c:_send(bytes))
  while not done do
    if not sched.wait_fd(c:_fileno(), "w", deadline) then return false end
    done = check(c:_flush())
  end
  return true
end

-- A reply usually comes within tens of microseconds: polling that long
-- first saves the two cross-CPU wake-ups that blocking costs (pipes do
-- the same in src/core/pipe.c); after it, the wait costs no CPU.
M.SPIN = 50e-6
local SPIN = M.SPIN

-- Receives one frame (mode "raw" or "value"); nil when the deadline passed.
function M.recv_frame(c, maxlen, mode, deadline)
  local spin_until = core.now() + SPIN
  while true do
    local ok, have, v = c:_recv(maxlen, mode)
    if not ok then raise(have, v) end
    if have then return true, v end
    if core.now() >= spin_until
       and not sched.wait_fd(c:_fileno(), "r", deadline) then return nil end
  end
end

-- }=====================================================================

-- {=====================================================================
-- The handshake
-- ======================================================================

-- Server side: the challenge that opens a connection.
function M.challenge()
  return CHALLENGE_S .. core.net_random_bytes(NONCE)
end

-- Server side: one handshake frame `msg` of the connection cs (state
-- "auth1", "auth2", "auth3", then "ready"); send(bytes) answers, drop()
-- ends the connection.
function M.server_step(cs, key, msg, send, drop)
  if cs.state == "auth1" then
    if core.net_bytes_equal(msg, core.net_hmac_sha256(key, cs.challenge)) then
      cs.state = "auth2"
      send(WELCOME)
    else
      send(FAILURE)
      drop()
    end
  elseif cs.state == "auth2" then
    if #msg ~= #CHALLENGE_C + NONCE or msg:sub(1, #CHALLENGE_C) ~= CHALLENGE_C then
      return drop()
    end
    cs.state, cs.cchallenge = "auth3", msg
    send(core.net_hmac_sha256(key, msg))
  elseif cs.state == "auth3" then
    if msg ~= WELCOME then return drop() end
    local ok, secured = pcall(cs.conn._secure, cs.conn, key, cs.challenge, cs.cchallenge,
                              "server")
    if not (ok and secured) then
      return drop()                                -- libcrypto failed: not this peer's fault
    end
    cs.state, cs.auth_deadline, cs.challenge, cs.cchallenge = "ready", nil, nil, nil
  end
end

-- Client side: proves the key on the fresh connection c and checks that
-- the server knows it too; raises AuthenticationError.
function M.client_auth(c, key, deadline)
  local ok, msg = M.recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no challenge from the manager (timeout)") end
  if #msg ~= #CHALLENGE_S + NONCE or msg:sub(1, #CHALLENGE_S) ~= CHALLENGE_S then
    raise("AuthenticationError", "the peer is not an mproc manager")
  end
  local sch = msg
  M.send_frame(c, core.net_hmac_sha256(key, msg), deadline)
  ok, msg = M.recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no answer from the manager (timeout)") end
  if msg ~= WELCOME then
    raise("AuthenticationError", "digest sent was rejected (wrong authkey)")
  end
  local ch = CHALLENGE_C .. core.net_random_bytes(NONCE)
  M.send_frame(c, ch, deadline)
  ok, msg = M.recv_frame(c, AUTH_MAX, "raw", deadline)
  if not ok then raise("AuthenticationError", "no answer from the manager (timeout)") end
  if not core.net_bytes_equal(msg, core.net_hmac_sha256(key, ch)) then
    M.send_frame(c, FAILURE, deadline)
    raise("AuthenticationError", "digest received was wrong (wrong authkey)")
  end
  M.send_frame(c, WELCOME, deadline)
  check(c:_secure(key, sch, ch, "client"))  -- every frame from now on is sealed
end

-- }=====================================================================

return M

-- The specs of codec_spec.lua that use 5.4-only syntax and library calls
-- (integer operators, math.type's subtypes, string.pack).
local mp = require "mproc"

local TRUST = { functions = true }
local function rt(v, opts)
  return mp.loads(mp.dumps(v), opts or TRUST)
end

local function bits(x) return string.pack("<d", x) end

describe("mproc.codec", function()
  describe("mp.dumps() and mp.loads()", function()
    it("round-trip integers exactly, keeping their subtype", function()
      for _, i in ipairs { 0, 1, -1, 127, 128, -32, -33, -128, -129, 255, 256, 32767,
          32768, -32768, -32769, 65535, 65536, 2 ^ 31 | 0, -(2 ^ 31 | 0), 2 ^ 32 | 0,
          2 ^ 53 | 0, math.maxinteger, math.mininteger, math.mininteger + 1 } do
        local r = rt(i)
        assert.equal("integer", math.type(r))
        assert.equal(i, r)
      end
      assert.equal("float", math.type(rt(1.0)))
    end)

    it("round-trip floats bit for bit", function()
      local payload = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")   -- a NaN with a payload
      for _, x in ipairs { 0.0, 1.5, -2.25, 1e308, 5e-324, math.pi, math.huge,
          -math.huge, 2 ^ 63, payload, 0 / 0 } do
        assert.equal(bits(x), bits(rt(x)))
      end
      local nan = rt(0 / 0)
      assert.is_true(nan ~= nan)
      assert.equal(-math.huge, 1 / rt(-0.0))
      assert.equal(math.huge, 1 / rt(0.0))
    end)
  end)
end)

local json = require "bomarun.json"

-- encode(decode(text)) with the default (compact, sorted) output.
local function reencode(text)
  local value, err = json.decode(text)
  assert(value ~= nil, err)
  return json.encode(value)
end

-- The message of the error raised by fn(...), or nil if it did not raise.
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  return err
end

-- n nested arrays: "[[[...]]]".
local function nested_arrays(n)
  return string.rep("[", n) .. string.rep("]", n)
end

describe("bomarun.json", function()
  describe("module", function()
    it("exposes the public API", function()
      for _, name in ipairs { "decode", "encode", "array", "object", "is_array" } do
        assert.is_function(json[name], name)
      end
      assert.are.equal("userdata", type(json.null))
      assert.is_table(json.array_mt)
      assert.is_table(json.object_mt)
    end)

    it("names its metatables and keeps them in the registry", function()
      assert.are.equal("bomarun.json.array", json.array_mt.__name)
      assert.are.equal("bomarun.json.object", json.object_mt.__name)
      local registry = debug.getregistry()
      assert.are.equal(json.array_mt, registry["bomarun.json.array"])
      assert.are.equal(json.object_mt, registry["bomarun.json.object"])
    end)

    it("re-exports the C module", function()
      local c = require "bomarun._json"
      assert.are.equal(c.null, json.null)
      assert.are.equal(c.array_mt, json.array_mt)
      assert.are.equal(c.object_mt, json.object_mt)
    end)
  end)

  describe("decode", function()
    it("decodes scalars at top level", function()
      assert.are.equal(42, json.decode("42"))
      assert.are.equal("hi", json.decode('"hi"'))
      assert.is_true(json.decode("true"))
      assert.is_false(json.decode("false"))
      assert.are.equal(json.null, json.decode("null"))
    end)

    it("keeps integers as integers and reals as floats", function()
      local v = json.decode("[1, -5, 1.0, 1e2, 2.5, -0.0, 0]")
      assert.are.same({ "integer", "integer", "float", "float", "float", "float", "integer" }, {
        math.type(v[1]), math.type(v[2]), math.type(v[3]), math.type(v[4]),
        math.type(v[5]), math.type(v[6]), math.type(v[7]),
      })
      assert.are.equal(100.0, v[4])
      assert.are.equal(2.5, v[5])
    end)

    it("decodes big integers exactly", function()
      assert.are.equal(1 << 62, json.decode("4611686018427387904"))
      assert.are.equal(-(1 << 62), json.decode("-4611686018427387904"))
      assert.are.equal(math.maxinteger, json.decode("9223372036854775807"))
      assert.are.equal(math.mininteger, json.decode("-9223372036854775808"))
      assert.are.equal((1 << 53) + 1, json.decode("9007199254740993"))
    end)

    it("decodes unicode escapes, including surrogate pairs, to UTF-8", function()
      assert.are.equal("é", json.decode('"\\u00e9"'))
      assert.are.equal("€", json.decode('"\\u20AC"'))
      assert.are.equal("😀", json.decode('"\\ud83d\\ude00"'))
      assert.are.equal("a\nb\t\"/\\", json.decode('"a\\nb\\t\\"\\/\\\\"'))
    end)

    it("keeps embedded NUL characters", function()
      local s = json.decode('"a\\u0000b"')
      assert.are.equal(3, #s)
      assert.are.equal("a\0b", s)
    end)

    it("marks arrays and objects, including empty ones", function()
      local v = json.decode('{"list": [1, 2], "empty_list": [], "map": {"k": 1}, "empty_map": {}}')
      assert.are.equal(json.object_mt, getmetatable(v))
      assert.are.equal(json.array_mt, getmetatable(v.list))
      assert.are.equal(json.array_mt, getmetatable(v.empty_list))
      assert.are.equal(json.object_mt, getmetatable(v.map))
      assert.are.equal(json.object_mt, getmetatable(v.empty_map))
      assert.are.equal(0, #v.empty_list)
      assert.is_nil(next(v.empty_map))
    end)

    it("keeps object keys that look like numbers as strings", function()
      local v = json.decode('{"1": "one"}')
      assert.are.equal("one", v["1"])
      assert.is_nil(v[1])
    end)

    it("decodes null as json.null, distinct from nil, in arrays and objects", function()
      local a = json.decode("[1, null, 3]")
      assert.are.equal(3, #a)
      assert.are.equal(json.null, a[2])
      local o = json.decode('{"a": null}')
      assert.are.equal(json.null, o.a)
      assert.is_not_nil(o.a)
      assert.is_nil(o.b)
    end)

    it("decodes nesting up to jansson's depth limit of 2048", function()
      local v = assert(json.decode(nested_arrays(2048)))
      local depth = 0
      while v do
        depth = depth + 1
        v = v[1]
      end
      assert.are.equal(2048, depth)
    end)

    it("applies reject_duplicates", function()
      assert.are.equal(2, json.decode('{"a": 1, "a": 2}').a)
      local v, err = json.decode('{"a": 1, "a": 2}', { reject_duplicates = true })
      assert.is_nil(v)
      assert.matches("duplicate object key", err, 1, true)
    end)

    it("raises on programmer errors", function()
      assert.has_error(function() json.decode() end)
      assert.has_error(function() json.decode({}) end)
      assert.are.equal("json: unknown option 'nope'", error_of(json.decode, "1", { nope = true }))
      assert.has_error(function() json.decode("1", "opts") end)
    end)
  end)

  describe("decode errors", function()
    it("return nil, 'json: LINE:COL: reason', 'JSON'", function()
      local text = '{\n  "a": 1,\n  "b": [1, 2,, 3]\n}'
      local n = select("#", json.decode(text))
      local v, err, code = json.decode(text)
      assert.are.equal(3, n)
      assert.is_nil(v)
      assert.are.equal("JSON", code)
      assert.are.equal("json: 3:14: unexpected token near ','", err)
    end)

    it("report the line of an error deep in a multi-line document", function()
      local text = '[\n  {"ok": true},\n  {"bad": tru}\n]'
      local v, err = json.decode(text)
      assert.is_nil(v)
      assert.matches("^json: 3:%d+: ", err)
    end)

    it("report truncated input", function()
      for _, text in ipairs { '{"a": [1, 2', '[1, 2', '{"a":', '"unterminated', "" } do
        local v, err, code = json.decode(text)
        assert.is_nil(v, text)
        assert.matches("^json: %d+:%d+: ", err)
        assert.are.equal("JSON", code)
      end
      local _, err = json.decode("[1, 2")
      assert.are.equal("json: 1:5: ']' expected near end of file", err)
    end)

    it("report trailing garbage", function()
      local v, err = json.decode("[1] x")
      assert.is_nil(v)
      assert.are.equal("json: 1:5: end of file expected near 'x'", err)
      assert.is_nil((json.decode('{"a": 1}}')))
    end)

    it("report invalid UTF-8 in the input", function()
      local v, err = json.decode('"\xff"')
      assert.is_nil(v)
      assert.matches("^json: 1:1: .*0xff", err)
      assert.is_nil((json.decode('["ok", "\xc3\x28"]')))
    end)

    it("report nesting beyond the depth limit", function()
      local v, err = json.decode(nested_arrays(2049))
      assert.is_nil(v)
      assert.matches("maximum parsing depth", err, 1, true)
    end)

    it("report integers that do not fit in a Lua integer", function()
      local v, err = json.decode("99999999999999999999")
      assert.is_nil(v)
      assert.matches("too big integer", err, 1, true)
    end)
  end)

  describe("encode", function()
    it("encodes scalars", function()
      assert.are.equal("42", json.encode(42))
      assert.are.equal('"hi"', json.encode("hi"))
      assert.are.equal("true", json.encode(true))
      assert.are.equal("false", json.encode(false))
      assert.are.equal("null", json.encode(json.null))
    end)

    it("keeps integers and floats apart", function()
      assert.are.equal("2", json.encode(2))
      assert.are.equal("2.0", json.encode(2.0))
      assert.are.equal("-0.0", json.encode(-0.0))
      assert.are.equal("[1,1.5,-3]", json.encode { 1, 1.5, -3 })
      assert.are.equal("4611686018427387904", json.encode(1 << 62))
      assert.are.equal("-4611686018427387904", json.encode(-(1 << 62)))
      assert.are.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.are.equal("-9223372036854775808", json.encode(math.mininteger))
    end)

    it("prints reals with the fewest digits that round-trip", function()
      assert.are.equal("[0.1,0.3333333333333333,1e300,1.5e-7]", json.encode { 0.1, 1 / 3, 1e300, 1.5e-7 })
      local x = 0.1 + 0.2
      assert.are.equal(x, json.decode(json.encode(x)))
      assert.are.equal(math.pi, json.decode(json.encode(math.pi)))
    end)

    it("encodes the empty unmarked table as an object", function()
      assert.are.equal("{}", json.encode {})
      assert.are.equal("[]", json.encode(json.array()))
      assert.are.equal("{}", json.encode(json.object()))
      assert.are.equal('{"a":[],"b":{}}', json.encode { a = json.array {}, b = {} })
    end)

    it("classifies unmarked tables by their keys", function()
      assert.are.equal("[1,2,3]", json.encode { 1, 2, 3 })
      assert.are.equal('{"a":1}', json.encode { a = 1 })
      assert.are.equal('[["x"],{"y":true}]', json.encode { { "x" }, { y = true } })
    end)

    it("encodes json.null in arrays and objects", function()
      assert.are.equal("[1,null,3]", json.encode { 1, json.null, 3 })
      assert.are.equal('{"a":null}', json.encode { a = json.null })
    end)

    it("escapes control characters and keeps UTF-8", function()
      assert.are.equal('"a\\u0000b\\n\\"q\\""', json.encode('a\0b\n"q"'))
      assert.are.equal('"é😀"', json.encode("é😀"))
    end)

    it("encodes shared (acyclic) subtables more than once", function()
      local shared = { 1 }
      assert.are.equal('{"a":[1],"b":[1]}', json.encode { a = shared, b = shared })
    end)

    it("encodes nesting up to the decode limit", function()
      local text = nested_arrays(2048)
      assert.are.equal(text, reencode(text))
    end)
  end)

  describe("round trips", function()
    it("preserve nested documents", function()
      local text = '{"a":[1,2.5,"x",{"b":null}],"c":{"d":[[],{}]},"e":true,"f":false,"g":-7}'
      assert.are.equal(text, reencode(text))
    end)

    it("preserve empty arrays and objects", function()
      for _, text in ipairs { "[]", "{}", "[[]]", "[{}]", '{"a":[]}', '{"a":{}}', "[[],{},[{}]]" } do
        assert.are.equal(text, reencode(text))
      end
    end)

    it("preserve integers versus floats", function()
      for _, text in ipairs { "1", "1.0", "-1", "-1.5", "[0,0.0,100,100.0]", "4611686018427387904", "-4611686018427387904" } do
        assert.are.equal(text, reencode(text))
      end
    end)

    it("preserve unicode escapes as UTF-8", function()
      local v = json.decode('["\\u00e9", "\\ud83d\\ude00", "\\u0000"]')
      assert.are.equal('["é","😀","\\u0000"]', json.encode(v))
      assert.are.same(v, json.decode(json.encode(v)))
    end)

    it("preserve null in arrays and objects", function()
      local text = '{"a":null,"b":[null,1,null]}'
      assert.are.equal(text, reencode(text))
      local v = json.decode(text)
      assert.are.equal(3, #v.b)
    end)

    it("preserve a Lua value through encode then decode", function()
      local value = {
        name = "bomarun",
        list = { 1, 2, { deep = { 1.25, "s", json.null } } },
        flags = { on = true, off = false },
        big = 1 << 62,
        neg = -(1 << 62),
      }
      local back = json.decode(json.encode(value))
      assert.are.same(value, back) -- same ignores the metatables decode adds
      assert.are.equal("integer", math.type(back.big))
      assert.are.equal("float", math.type(back.list[3].deep[1]))
    end)
  end)

  describe("encode errors", function()
    it("name the path of a value that cannot be encoded", function()
      assert.are.equal("json: cannot encode a function at $.a[3]",
        error_of(json.encode, { a = { 1, 2, print } }))
      assert.are.equal("json: cannot encode a userdata at $[1]",
        error_of(json.encode, { io.stdout }))
      assert.are.equal("json: cannot encode a thread at $.co",
        error_of(json.encode, { co = coroutine.create(print) }))
      assert.are.equal("json: cannot encode a function at $",
        error_of(json.encode, print))
      assert.are.equal('json: cannot encode a function at $["odd key"].x',
        error_of(json.encode, { ["odd key"] = { x = print } }))
    end)

    it("refuse nil", function()
      assert.matches("^json: cannot encode nil", error_of(json.encode, nil))
      assert.has_error(function() json.encode() end)
    end)

    it("detect cycles", function()
      local t = {}
      t.x = t
      assert.are.equal("json: cycle at $.x", error_of(json.encode, t))
      local a = { {} }
      a[1][1] = a
      assert.are.equal("json: cycle at $[1][1]", error_of(json.encode, a))
    end)

    it("refuse NaN and infinities", function()
      assert.are.equal("json: cannot encode NaN at $.x", error_of(json.encode, { x = 0 / 0 }))
      assert.are.equal("json: cannot encode inf at $[1]", error_of(json.encode, { math.huge }))
      assert.are.equal("json: cannot encode -inf at $", error_of(json.encode, -math.huge))
    end)

    it("refuse sparse arrays and mixed keys", function()
      assert.matches("^json: sparse array .* at %$%.s$", error_of(json.encode, { s = { [1] = 1, [3] = 3 } }))
      assert.matches("^json: sparse array", error_of(json.encode, { [0] = "zero" }))
      assert.matches("^json: sparse array", error_of(json.encode, { [-1] = 1 }))
      assert.are.equal("json: table mixes integer and string keys at $",
        error_of(json.encode, { 1, 2, name = "x" }))
    end)

    it("refuse keys that are neither strings nor integers", function()
      assert.are.equal("json: cannot use a boolean as a key at $.t",
        error_of(json.encode, { t = { [true] = 1 } }))
      assert.are.equal("json: cannot use a non-integer number as a key at $",
        error_of(json.encode, { [1.5] = 1 }))
      assert.are.equal("json: cannot use a table as a key at $",
        error_of(json.encode, { [{}] = 1 }))
    end)

    it("enforce the marks of array_mt and object_mt tables", function()
      assert.are.equal("json: array has a string key at $",
        error_of(json.encode, json.array { 1, x = 2 }))
      assert.matches("^json: sparse array", error_of(json.encode, json.array { [2] = 1 }))
      assert.matches("^json: object has an integer key",
        error_of(json.encode, json.object { 1 }))
    end)

    it("refuse invalid UTF-8, naming the path", function()
      assert.are.equal("json: invalid UTF-8 in string at $.a[2]",
        error_of(json.encode, { a = { "ok", "bad\xff" } }))
      assert.are.equal("json: invalid UTF-8 in object key at $.o",
        error_of(json.encode, { o = { ["\xc3\x28"] = 1 } }))
      -- overlong encoding and UTF-16 surrogate halves are not UTF-8 either
      assert.has_error(function() json.encode("\xc0\xaf") end)
      assert.has_error(function() json.encode("\xed\xa0\x80") end)
    end)

    it("refuse nesting deeper than the decode limit", function()
      local root = {}
      local cur = root
      for _ = 1, 3000 do
        cur[1] = {}
        cur = cur[1]
      end
      local err = error_of(json.encode, root)
      assert.matches("^json: nesting deeper than 2048 at %$%[1%]", err)
      assert.is_true(#err < 200, "long paths are abbreviated")
    end)

    it("leave the encoder usable after an error", function()
      local t = {}
      t.self = t
      assert.has_error(function() json.encode(t) end)
      t.self = nil
      assert.are.equal("{}", json.encode(t))
    end)

    it("reject unknown and malformed options", function()
      assert.are.equal("json: unknown option 'indnet'", error_of(json.encode, {}, { indnet = 2 }))
      assert.matches("'indent' must be an integer", error_of(json.encode, {}, { indent = 99 }), 1, true)
      assert.matches("'indent' must be an integer", error_of(json.encode, {}, { indent = 1.5 }), 1, true)
      assert.has_error(function() json.encode({}, 2) end)
    end)
  end)

  describe("encode options", function()
    local value = { zebra = 1, apple = 2, mango = { 3, 4 } }

    it("sort keys by default", function()
      assert.are.equal('{"apple":2,"mango":[3,4],"zebra":1}', json.encode(value))
      assert.are.equal('{"apple":2,"mango":[3,4],"zebra":1}', json.encode(value, { sort_keys = true }))
    end)

    it("may leave keys in traversal order", function()
      local text = json.encode(value, { sort_keys = false })
      assert.are.equal(#'{"apple":2,"mango":[3,4],"zebra":1}', #text)
      assert.are.same(value, json.decode(text))
    end)

    it("indent", function()
      local expected = table.concat({
        "{",
        '  "apple": 2,',
        '  "mango": [',
        "    3,",
        "    4",
        "  ],",
        '  "zebra": 1',
        "}",
      }, "\n")
      assert.are.equal(expected, json.encode(value, { indent = 2 }))
      assert.are.equal('{"apple":2,"mango":[3,4],"zebra":1}', json.encode(value, { indent = 0 }))
    end)

    it("ensure_ascii", function()
      assert.are.equal('"\\u00e9\\ud83d\\ude00"', json.encode("é😀", { ensure_ascii = true }):lower())
    end)
  end)

  describe("helpers", function()
    it("array and object mark and return the given table", function()
      local t = { 1, 2 }
      assert.are.equal(t, json.array(t))
      assert.are.equal(json.array_mt, getmetatable(t))
      local o = {}
      assert.are.equal(o, json.object(o))
      assert.are.equal(json.object_mt, getmetatable(o))
    end)

    it("array and object make a new table when given none", function()
      assert.are.equal(json.array_mt, getmetatable(json.array()))
      assert.are.equal(json.object_mt, getmetatable(json.object()))
      assert.are_not.equal(json.array(), json.array())
    end)

    it("can re-mark a JSON table but not replace a foreign metatable", function()
      local t = json.array {}
      json.object(t)
      assert.are.equal(json.object_mt, getmetatable(t))
      local classy = setmetatable({}, { __index = {} })
      assert.matches("non%-JSON metatable", error_of(json.array, classy))
      assert.has_error(function() json.object(42) end)
    end)

    it("is_array mirrors the encoder's choice", function()
      assert.is_true(json.is_array(json.array()))
      assert.is_true(json.is_array({ 1, 2 }))
      assert.is_true(json.is_array(json.decode("[]")))
      assert.is_false(json.is_array({}))
      assert.is_false(json.is_array(json.object { 1 }))
      assert.is_false(json.is_array({ a = 1 }))
      assert.is_false(json.is_array({ [2] = 1 }))
      assert.is_false(json.is_array({ 1, a = 1 }))
      assert.is_false(json.is_array("[]"))
      assert.is_false(json.is_array(nil))
    end)
  end)
end)

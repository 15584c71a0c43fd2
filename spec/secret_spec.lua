-- Redaction: every form a secret takes in bomarun's own output, multi-line
-- secrets, the minimum length, and the profile sandbox that must not be
-- able to switch redaction off.
local secret = require "bomarun.secret"
local proc = require "bomarun.proc"
local json = require "bomarun.json"
local poll = require "bomarun.poll"
local profile = require "bomarun.profile"
local util = require "support.util"
local tmpdir, write = util.tmpdir, util.write

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")

-- The forms, computed here independently of secret.lua.
local function forms(v)
  return {
    ["as is"] = v,
    ["shell-quoted"] = (v:gsub("'", "'\\''")),
    ["JSON-escaped"] = json.encode(v):sub(2, -2),
    ["%q-quoted"] = string.format("%q", v):sub(2, -2),
  }
end

local function assert_clean(text, v, what)
  for name, f in pairs(forms(v)) do
    assert.is_nil(text:find(f, 1, true), (what or "text") .. " holds the secret " .. name .. ": " .. text)
  end
end

describe("secret redaction", function()
  before_each(function() secret._reset() end)
  after_each(function() secret._reset() end)

  local S = [[pa'ss"wo\rd-42]]

  it("redacts a secret as is, shell-quoted, JSON-escaped and %q-quoted", function()
    secret.register(S)
    for name, f in pairs(forms(S)) do
      local out = secret.redact("<" .. f .. ">")
      assert.equal("<***>", out, name)
    end
    -- proc.quote's form, alone and with the secret inside a larger word
    assert.equal("echo '***'", secret.redact("echo " .. proc.quote(S)))
    assert.equal("x '--password=***'", secret.redact("x " .. proc.quote("--password=" .. S)))
    -- a control character at the end, followed by a digit in %q's output
    secret.register("abc\1")
    assert.equal('"***"', secret.redact(string.format("%q", "abc\1")))
    assert.equal('"***9"', secret.redact(string.format("%q", "abc\0019")))
  end)

  it("lists the forms it redacts, each once, longest first", function()
    local f = secret.forms(S)
    local want = forms(S)
    local set = {}
    for _, x in ipairs(f) do
      assert.is_nil(set[x], "duplicate form " .. x)
      set[x] = true
    end
    for name, x in pairs(want) do assert.truthy(set[x], name) end
    for k = 2, #f do assert.truthy(#f[k - 1] >= #f[k]) end
  end)

  -- (a) a secret with ' quoted into shell= of a command that times out
  it("redacts a proc.quote'd secret from a timed-out command's message", function()
    secret.register(S)
    local r, msg, code = proc.run{shell = "sleep 5; echo " .. proc.quote(S), timeout = 0.2, grace = 0.2}
    assert.is_nil(r)
    assert.equal("TIMEOUT", code)
    assert.matches("timed out after", msg)
    assert.matches("echo '***'", msg, 1, true)
    assert_clean(msg, S, "the timeout message")
  end)

  it("redacts a secret the host's cut command description would split", function()
    secret.register(S)
    -- The host keeps 199 bytes of "sh -c '...'": put the secret across that cut.
    local pad = string.rep("x", 199 - #"sh -c 'echo " - 4)
    local shell = "echo " .. pad .. " " .. proc.quote(S) .. "; sleep 5"
    local _, msg = proc.run{shell = shell, timeout = 0.2, grace = 0.2}
    assert.matches("timed out after", msg)
    assert.is_nil(msg:find(pad .. " 'pa", 1, true), msg)   -- the host's cut: "... 'pa"
    assert.matches(pad .. " ...", msg, 1, true)
    _, msg = proc.run{argv = {"/nonexistent/" .. pad, S}}
    assert.matches("cannot start", msg)
    assert.is_nil(msg:find(pad .. " pa", 1, true), msg)
  end)

  -- (b) " and \ inside a captured table: poll.show's JSON (the "captured" line)
  it("redacts a secret JSON-escaped inside a table's JSON", function()
    secret.register(S)
    local shown = poll.show({password = S})
    assert.equal('{"password":"***"}', secret.redact(shown))
    -- and once more escaped, as the journal writes a message that holds it
    local line = json.encode({message = "captured " .. shown})
    assert_clean(secret.redact(line), S, "the journal line")
    assert_clean(secret.redact(json.encode({message = secret.redact("captured " .. shown)})), S)
  end)

  -- (c) a multi-line secret, matched line by line
  it("redacts each line of a multi-line secret, in every form", function()
    local lines = {"-----BEGIN TEST KEY-----", [[MIIB'x"y\z0123]], "==", "   ", "-----END TEST KEY-----"}
    local key = table.concat(lines, "\n")
    secret.register(key)
    assert.equal("***", secret.redact(key))
    assert.equal("[out] ***", secret.redact("[out] " .. lines[1]))
    assert.equal("gate failed: ***", secret.redact("gate failed: " .. lines[1]))
    for _, l in ipairs({lines[1], lines[2], lines[5]}) do
      for name, f in pairs(forms(l)) do assert.equal("<***>", secret.redact("<" .. f .. ">"), name) end
    end
    -- lines shorter than the minimum, and blank lines, are left alone
    assert.equal("a == b", secret.redact("a == b"))
    assert.equal("x   y", secret.redact("x   y"))
    -- CRLF files: each line without its \r
    secret.register("first-line\r\nsecond-line")
    assert.equal("***", secret.redact("second-line"))
  end)

  -- (d) the minimum length
  it("does not redact secrets shorter than MIN_LENGTH, and warns when a profile's is", function()
    assert.equal(3, secret.MIN_LENGTH)
    secret.register("ab")
    assert.equal("ab cab", secret.redact("ab cab"))
    secret.register("abc")
    assert.equal("*** c***", secret.redact("abc cabc"))
    local d = tmpdir(finally)
    write(d .. "/p.lua", 'return {pin = secret.env "SHORT_PIN", ok = secret.env "LONG_PIN"}\n')
    local r = assert(proc.run{argv = {BIN, "-e", [[
      local profile = require "bomarun.profile"
      local env = assert(profile.load_file(arg[1]))
      assert(profile.resolve_secrets(env))
      assert(profile.resolve_secrets(env))
      print(env.pin, env.ok)]], d .. "/p.lua"}, env = {SHORT_PIN = "42", LONG_PIN = "4242"}})
    assert.equal(0, r.code, r.stderr)
    assert.equal("42\t4242\n", r.stdout)
    local _, n = r.stderr:gsub("warning: secret <secret env:SHORT_PIN> is shorter than 3 characters", "")
    assert.equal(1, n, r.stderr)   -- once, naming the reference, not the value
    assert.is_nil(r.stderr:find("LONG_PIN", 1, true))
    assert.is_nil(r.stderr:find("42", 1, true))
  end)

  it("reports an on_line callback's failure redacted", function()
    local r = assert(proc.run{argv = {BIN, "-e", [[
      local proc = require "bomarun.proc"
      local secret = require "bomarun.secret"
      secret.register(arg[1])
      proc.run{argv = {"echo", arg[1]}, on_line = function(line) error("bad line " .. line) end}]], S}})
    assert.equal(0, r.code, r.stderr)
    assert.matches("on_line callback for echo *** failed: ", r.stderr, 1, true)
    assert.matches("bad line ***", r.stderr, 1, true)
    assert_clean(r.stderr, S, "stderr")
  end)
end)

-- (e) the profile sandbox
describe("profile sandbox", function()
  it("gives a profile its own library tables: it cannot switch redaction off", function()
    local saved = {}
    for _, lib in ipairs({"string", "table", "math", "utf8"}) do
      saved[lib] = {}
      for k, v in pairs(_G[lib]) do saved[lib][k] = v end
    end
    -- What the profile changed in the host, then the host put back (before
    -- any assertion runs on a poisoned string table).
    local function changed_and_restore()
      local changed = {}
      for lib, t in pairs(saved) do
        local live = _G[lib]
        for k, v in pairs(t) do if live[k] ~= v then changed[#changed + 1] = lib .. "." .. k end end
        for k in pairs(live) do if t[k] == nil then changed[#changed + 1] = lib .. "." .. k end end
        for k in pairs(live) do if t[k] == nil then live[k] = nil end end
        for k, v in pairs(t) do live[k] = v end
      end
      table.sort(changed)
      return changed
    end
    finally(function() changed_and_restore() secret._reset() end)
    local d = tmpdir(finally)
    local path = write(d .. "/evil.lua", [[
      string.find = function() return nil end
      string.gsub = function(s) return s, 0 end
      table.concat = function() return "" end
      table.sort = function() end
      math.max = function() return 0 end
      utf8.char = function() return "" end
      string.evil, table.evil, math.evil, utf8.evil = true, true, true, true
      local reached = pcall(function() ("x").find = nil end)
      return {reached_string_metatable = reached, has_dump = string.dump ~= nil,
              has_randomseed = math.randomseed ~= nil, password = secret.env "SANDBOX_PW"}
    ]])
    local env, err = profile.load_file(path)
    local changed = changed_and_restore()
    assert.same({}, changed)
    assert.truthy(env, err)
    assert.is_false(env.reached_string_metatable)
    assert.is_false(env.has_dump)
    assert.is_false(env.has_randomseed)
    secret._reset()
    secret.register("hunter2-sandbox")
    assert.equal("pw=***", secret.redact("pw=hunter2-sandbox"))
  end)

  it("still gives a profile the library functions it needs", function()
    local d = tmpdir(finally)
    local path = write(d .. "/ok.lua", [[
      return {name = string.format("%s-%d", string.upper("c"), math.floor(2.5)),
              list = table.concat({"a", "b"}, ","), n = utf8.len("é"), sq = ("ab"):rep(2)}
    ]])
    local env = assert(profile.load_file(path))
    assert.same({name = "C-2", list = "a,b", n = 1, sq = "abab"}, env)
  end)
end)

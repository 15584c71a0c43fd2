-- The secret scan: a runbook uses two profile secrets through every channel
-- bomarun offers (argv, env, stdin, subprocess output, gates, checks,
-- captures, polls, s:log, a timed-out shell command, a raised error); then
-- every file under the run directory and the console (stdout, stderr) are
-- searched for each secret in every form bomarun's output can give it.
-- Not covered here: a fragment of a line cut short by poll.show (it cuts a
-- table's JSON at 120 bytes before anything redacts it).
local proc = require "bomarun.proc"
local json = require "bomarun.json"
local util = require "support.util"
local tmpdir, read, write = util.tmpdir, util.read, util.write

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")
local MIN = 3   -- secret.MIN_LENGTH: shorter lines of a multi-line secret are not redacted (documented)

-- A multi-line secret (secret.file) with ', " and \ on some lines, and a
-- short line (under the minimum; not asserted), and a single-line one
-- (secret.env) with all three as well.
local KEY_LINES = {
  "-----BEGIN SCAN TEST KEY-----",
  "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj'AgEAAoIBAQC7",
  [[plain/line+with=base64ish "double" quotes 0123456789]],
  [[back\slash\line\nnot-a-newline-9f8e7d6c5b4a]],
  "it's-a-quote-line-'single'-and-\"double\"-and-\\",
  "==",
  "-----END SCAN TEST KEY-----",
}
local KEY = table.concat(KEY_LINES, "\n")
local TOKEN = [[tok'3n"s3cr\et-4242]]

-- Every form a secret takes in bomarun's own output.
local function forms(v)
  local out = {
    {"as is", v},
    {"shell-quoted", (v:gsub("'", "'\\''"))},
    {"JSON-escaped", json.encode(v):sub(2, -2)},
    {"%q-quoted", string.format("%q", v):sub(2, -2)},
  }
  return out
end

local function needles()
  local list = {}
  for _, f in ipairs(forms(TOKEN)) do list[#list + 1] = {"the token " .. f[1], f[2]} end
  for _, f in ipairs(forms(KEY)) do list[#list + 1] = {"the key " .. f[1], f[2]} end
  for n, line in ipairs(KEY_LINES) do
    if #line >= MIN then
      for _, f in ipairs(forms(line)) do list[#list + 1] = {"key line " .. n .. " " .. f[1], f[2]} end
    end
  end
  return list
end

local PROFILE = [[
return {
  key = secret.file "%s",
  token = secret.env "SCAN_TOKEN",
  plain = "nothing secret here",
}
]]

local RUNBOOK = [==[
local runbook = require "bomarun.runbook"
local proc = require "bomarun.proc"

return runbook{
  id = "secret-scan",
  title = "Secrets through every channel",
  needs = {key = "string", token = "string"},

  runbook.phase{"Channels",
    runbook.step{"1.0", "Subprocesses", function(s)
      local key, token = s.env.key, s.env.token
      -- argv (and a printing subprocess, one line and all lines)
      local r = assert(proc.run{argv = {"sh", "-c", 'printf "%s\n" "$1"; printf "%s\n" "$2"', "sh", token, key},
                                prefix = "[argv]"})
      s:gate(r.code == 0, "argv printer exited 0")
      -- argv of a command that cannot start: its description is in the message
      local _, err = proc.run{argv = {"/nonexistent/bomarun-scan", token, key}}
      s:log("start failed: %s", tostring(err))
      -- env
      r = assert(proc.run{argv = {"sh", "-c", 'printf "%s\n" "$SCAN_A"; printf "%s\n" "$SCAN_B" >&2'},
                          env = {SCAN_A = token, SCAN_B = key}, echo = true})
      s:check(r.stdout == token .. "\n", "env reached the child")
      -- stdin
      r = assert(proc.run{argv = {"cat"}, stdin = key .. "\n" .. token .. "\n", prefix = "[stdin]"})
      s:check(r.stdout == key .. "\n" .. token .. "\n", "stdin reached the child")
      s:log("stdout was: %s", r.stdout)
    end},
    runbook.step{"1.1", "Messages, captures, polls, logs", function(s)
      local key, token = s.env.key, s.env.token
      s:gate(true, "passing gate with " .. token .. " and " .. key)
      s:check(true, "passing check with " .. key .. " and " .. token)
      s:check(false, "failing check with " .. token .. " and " .. key)
      s:capture("token", token)
      s:capture("key", key)
      s:capture("bundle", {token = token})
      s:capture("keyed", {key = key})
      s:capture("both", {t = token, k = key, list = {token, key}})
      local n = 0
      s:poll{function()
               n = n + 1
               if n == 1 then return {state = "PENDING", token = token} end
               if n == 2 then return "waiting on " .. key end
               if n == 3 then return {pending = key} end
               return token
             end,
             ok = function(v) return v == token end, timeout = 10, interval = 0.05, what = "secret poll"}
      s:log("log %s", token)
      s:log(key)
      s:log("quoted %q and %q", token, key)
    end},
  },

  runbook.acceptance{"A-1", "Failures carrying secrets",
    runbook.item{"A-1.1", "A failing gate", function(i)
      i:gate(false, i.env.key .. " / " .. i.env.token)
    end},
    runbook.item{"A-1.2", "A raised error", function(i)
      error("raised with " .. i.env.token .. " and\n" .. i.env.key)
    end},
    runbook.item{"A-1.3", "A quoted shell command that times out", function(i)
      assert(proc.run{shell = "sleep 5; echo " .. proc.quote(i.env.token) .. " " .. proc.quote(i.env.key),
                      timeout = 0.3, grace = 0.2})
    end},
    runbook.item{"A-1.4", "A short quoted shell command that times out", function(i)
      assert(proc.run{shell = "sleep 5; echo " .. proc.quote(i.env.token), timeout = 0.3, grace = 0.2})
    end},
    runbook.item{"A-1.5", "A poll that fails on a secret", function(i)
      i:poll{function() return i.env.token end, ok = {"never"}, fail = {i.env.token}, timeout = 5,
             interval = 0.05, what = "failing poll"}
    end},
  },
}
]==]

local function files_under(dir)
  local r = assert(proc.run{argv = {"find", dir, "-type", "f"}})
  local list = {}
  for f in r.stdout:gmatch("[^\n]+") do list[#list + 1] = f end
  table.sort(list)
  return list
end

describe("secret scan", function()
  it("finds no secret, in any form, in the run directory or on the console", function()
    local d = tmpdir(finally)
    write(d .. "/key.pem", KEY .. "\n")
    write(d .. "/scan.profile.lua", string.format(PROFILE, d .. "/key.pem"))
    write(d .. "/scan.lua", RUNBOOK)
    local runs = d .. "/runs"
    local r = assert(proc.run{argv = {BIN, d .. "/scan.lua", "--profile", d .. "/scan.profile.lua",
                                      "--run-dir", runs},
                              env = {SCAN_TOKEN = TOKEN, BOMARUN_VERBOSE = "1", NO_COLOR = "1"},
                              cwd = d, timeout = 60})
    -- The run itself went as designed: every channel was exercised.
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local dirs = files_under(runs)
    local texts = {["(console stdout)"] = r.stdout, ["(console stderr)"] = r.stderr}
    local names = {}
    for _, f in ipairs(dirs) do
      texts[f] = assert(read(f))
      names[#names + 1] = f:match("[^/]+/[^/]+$")
    end
    local joined = table.concat(names, " ")
    for _, want in ipairs({"events.jsonl", "report.json", "junit.xml", "summary.txt", "01%-1.0.log",
                           "02%-1.1.log", "A%-1.3.log"}) do
      assert.matches(want, joined)
    end
    local events = texts[runs .. "/" .. names[1]:match("^[^/]+") .. "/events.jsonl"]
    assert.truthy(events, "events.jsonl read")
    assert.matches('"type":"capture"', events)
    assert.matches('"type":"poll"', events)
    assert.matches("timed out after", events)
    assert.matches("raised with", events)
    assert.matches("failing check with", events)
    assert.matches("start failed: proc: cannot start", texts["(console stdout)"])
    assert.matches("failing poll reached failure state", events)
    assert.matches("NOT ACCEPTED %(5 FAIL%)", texts["(console stdout)"])
    -- The scan.
    local leaks = {}
    for where, text in pairs(texts) do
      for _, nd in ipairs(needles()) do
        if text:find(nd[2], 1, true) then leaks[#leaks + 1] = nd[1] .. " in " .. where end
      end
    end
    table.sort(leaks)
    assert.same({}, leaks)
  end)
end)

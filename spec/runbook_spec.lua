local runbook = require "bomarun.runbook"
local profile = require "bomarun.profile"
local secret = require "bomarun.secret"
local poll = require "bomarun.poll"
local report = require "bomarun.report"
local journal = require "bomarun.journal"
local task = require "bomarun.task"
local host = require "bomarun._host"
local util = require "support.util"
local tmpdir, write = util.tmpdir, util.write

describe("runbook language", function()
  it("keeps structure as data: phases, steps, acceptance items in order", function()
    local rb = runbook{id = "rb", title = "T", decisions = {"D-1"},
      runbook.phase{"P1", runbook.step{"1.0", "first", function() end}},
      runbook.step{"2.0", "second", mutation = true, timeout = 5, function() end},
      runbook.acceptance{"D-1", "bar",
        runbook.item{"D-1.1", "checked", function() end},
        runbook.item{"D-1.2", "later", outstanding = "operator"},
        runbook.item{"D-1.3", "not now", deferred = "D-019: DNS deferred to v2"},
      },
    }
    assert.equal(3, #rb.units)
    assert.equal("P1", rb.units[1].phase)
    assert.is_true(rb.units[2].node.mutation)
    assert.equal(5, rb.units[2].node.timeout)
    local items = rb.units[3].node.items
    assert.same({decision = "D-019", reason = "DNS deferred to v2"}, items[3].deferred)
    assert.equal("operator", items[2].outstanding)
  end)

  it("rejects definition mistakes with the file and line", function()
    local ok, err = pcall(function() local s = runbook.step{"1.0", "no body"}; return s end)
    assert.is_false(ok)
    assert.is_true(err.runbook_error)
    assert.matches("runbook_spec%.lua:%d+: step 1.0 needs a body function", err.message)
    ok, err = pcall(runbook.new, {id = "x", title = "t",
      runbook.step{"1", "a", function() end}, runbook.step{"1", "b", function() end}})
    assert.is_false(ok)
    assert.matches("duplicate id '1'", err.message)
    ok, err = pcall(runbook.item, {"I", "no body, no status"})
    assert.is_false(ok)
    assert.matches("needs a body function, outstanding", err.message)
    ok, err = pcall(runbook.new, {title = "no id"})
    assert.is_false(ok)
    assert.matches("needs an id", err.message)
  end)
end)

describe("profiles", function()
  it("evaluate in a sandbox without io, os, require or load", function()
    local d = tmpdir(finally)
    for _, bad in ipairs({"io.open('/etc/passwd')", "os.execute('true')", "require('bomarun.proc')",
                          "load('return 1')()", "dofile('/etc/passwd')"}) do
      local p = write(d .. "/bad.lua", "local x = " .. bad .. "\nreturn {x = x}\n")
      local c, err = profile.load_file(p)
      assert.is_nil(c, bad .. " was allowed")
      assert.matches("bad%.lua:1:", err)
    end
  end)

  it("returns constants, or collects assigned globals", function()
    local d = tmpdir(finally)
    local c = assert(profile.load_file(write(d .. "/a.lua", "return {cluster = 'c1', count = 3}")))
    assert.same({cluster = "c1", count = 3}, c)
    c = assert(profile.load_file(write(d .. "/b.lua", "cluster = 'c2'\nports = {22, 80}\n")))
    assert.same({cluster = "c2", ports = {22, 80}}, c)
  end)

  it("stops a profile that loops forever", function()
    local d = tmpdir(finally)
    local c, err = profile.load_file(write(d .. "/loop.lua", "while true do end"))
    assert.is_nil(c)
    assert.matches("timed out", err)
  end)

  it("reports every missing or mistyped constant, naming who needs it", function()
    local rb = runbook{id = "n", title = "t", needs = {cluster = "string", replicas = "number"},
      runbook.step{"1", "s", needs = {"image"}, function() end}}
    local problems = profile.check_needs({replicas = "three"}, rb)
    table.sort(problems)
    assert.same({
      "constant 'replicas' is a string, the runbook needs a number",
      "missing constant 'cluster' (needed by the runbook)",
      "missing constant 'image' (needed by step 1)",
    }, problems)
  end)

  it("applies --set with types and dotted keys", function()
    local env = {replicas = 1, name = "a"}
    profile.apply_sets(env, {{"replicas", "3"}, {"name", "42"}, {"flavors.master", "gp.mid"}, {"debug", "true"}})
    assert.equal(3, env.replicas)
    assert.equal("42", env.name)
    assert.equal("gp.mid", env.flavors.master)
    assert.is_true(env.debug)
  end)

  it("resolves secret references and redacts their values everywhere", function()
    local d = tmpdir(finally)
    local pw = "hunter2-" .. host.random_hex(6)
    local p = write(d .. "/s.lua", "return {password = secret.file('" .. d .. "/pw'), user = 'admin'}")
    write(d .. "/pw", pw .. "\n")
    local c = assert(profile.load_file(p))
    assert.is_true(secret.is_ref(c.password))
    assert(profile.resolve_secrets(c))
    assert.equal(pw, c.password)
    assert.equal("login with ***", secret.redact("login with " .. pw))
    local jr = journal.open(d)
    jr:emit({type = "capture", step = "1", key = "k", value = {nested = "x" .. pw .. "y"}})
    jr:close()
    local text = io.open(d .. "/events.jsonl"):read("a")
    assert.is_nil(text:find(pw, 1, true))
    assert.matches("x%*%*%*y", text)
  end)

  it("reports an unset secret variable by name", function()
    local env = {token = secret.env("BOMARUN_SPEC_UNSET_" .. host.random_hex(4))}
    local ok, err = profile.resolve_secrets(env)
    assert.is_nil(ok)
    assert.matches("BOMARUN_SPEC_UNSET_%x+ is not set %(profile constant 'token'%)", err)
  end)
end)

describe("poll", function()
  it("calls the function afresh each attempt until a success state", function()
    local calls = 0
    local v = poll.run{function() calls = calls + 1 return calls < 3 and "BUILD" or "ACTIVE" end,
                       ok = {"ACTIVE"}, fail = {"ERROR"}, timeout = 5, interval = 0.01}
    assert.equal("ACTIVE", v)
    assert.equal(3, calls)
  end)

  it("fails at once on a failure state", function()
    local calls = 0
    local t0 = task.now()
    local v, err, code, last = poll.run{function() calls = calls + 1 return "CREATE_FAILED" end,
      ok = {"CREATE_COMPLETE"}, fail = {"CREATE_FAILED"}, timeout = 30, interval = 5, what = "cluster status"}
    assert.is_nil(v)
    assert.equal("FAILED_STATE", code)
    assert.equal("CREATE_FAILED", last)
    assert.matches("cluster status reached failure state CREATE_FAILED after 1 attempt", err)
    assert.equal(1, calls)
    assert.is_true(task.now() - t0 < 1)
  end)

  it("gives up at the timeout with the last value", function()
    local t0 = task.now()
    local v, err, code = poll.run{function() return "PENDING" end, ok = {"DONE"}, timeout = 0.3, interval = 0.05,
                                  what = "job"}
    assert.is_nil(v)
    assert.equal("TIMEOUT", code)
    assert.matches("job: timed out after 0%.%d s %(%d+ attempts%); last: PENDING", err)
    assert.is_true(task.now() - t0 < 1)
  end)

  it("treats nil, err as transient and reports attempts as it goes", function()
    local n, seen = 0, {}
    local v = poll.run{function()
        n = n + 1
        if n == 1 then return nil, "connection refused" end
        return n >= 3 and "UP" or "DOWN"
      end, ok = {"UP"}, timeout = 5, interval = 0.01,
      on_attempt = function(info) seen[#seen + 1] = info.err or info.value end}
    assert.equal("UP", v)
    assert.same({"connection refused", "DOWN", "UP"}, seen)
  end)

  it("keeps a callee's own TIMEOUT apart from the poll's deadline, with the callee's message", function()
    local seen = {}
    local v, err, code = poll.run{function()
        return nil, "openstack: GET http://127.0.0.1:1/x: Operation timed out after 60000 ms", "TIMEOUT"
      end, ok = {"UP"}, timeout = 0.2, interval = 0.05, what = "status",
      on_attempt = function(info) seen[#seen + 1] = info.err end}
    assert.is_nil(v)
    assert.equal("TIMEOUT", code)
    assert.matches("Operation timed out after 60000 ms (TIMEOUT)", seen[1], 1, true)
    assert.is_nil(seen[1]:find("did not finish before the poll's deadline", 1, true))
    assert.matches("last: no value: openstack: GET", err, 1, true)
  end)

  it("journals the callee's message for s:poll in a runbook", function()
    local d = util.tmpdir(finally)
    util.write(d .. "/rb.lua", [[
      local runbook = require "bomarun.runbook"
      return runbook{id = "polltimeout", title = "t",
        runbook.step{"1", "poll", function(s)
          s:poll{function() return nil, "http: GET http://127.0.0.1:1/: Operation timed out after 5 ms", "TIMEOUT" end,
                 ok = {"UP"}, timeout = 0.3, interval = 0.1, what = "svc"}
        end}}
    ]])
    local bin = os.getenv("BOMARUN_BIN") or "build/bomarun"
    local r = assert(require("bomarun.proc").run{argv = {bin, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 30})
    assert.equal(1, r.code)
    local ls = assert(require("bomarun.proc").run{shell = "cat " .. d .. "/runs/*/events.jsonl"})
    local found
    for line in ls.stdout:gmatch("[^\n]+") do
      if line:find('"type":"poll"', 1, true) and line:find("Operation timed out after 5 ms", 1, true) then found = line end
    end
    assert(found, "no poll event with the callee's message in:\n" .. ls.stdout)
  end)

  it("cleanup handles: h:run() undoes now, h:done() discharges; neither runs again at the end", function()
    local d = util.tmpdir(finally)
    util.write(d .. "/rb.lua", [[
      local runbook = require "bomarun.runbook"
      local undone = {}
      return runbook{id = "handles", title = "t",
        runbook.step{"1", "resources", function(s)
          local a = s:cleanup("remove A", function() undone[#undone + 1] = "A" end)
          local b = s:cleanup("remove B", function() undone[#undone + 1] = "B" end)
          s:cleanup("remove C", function() undone[#undone + 1] = "C" end)
          local e = s:cleanup("remove E", function() error("E will not go") end)
          assert(a:run())
          local ok, err = a:run()
          s:gate(ok == nil and err:find("already run", 1, true), "a second run is refused")
          b:done()
          local eok, eerr = e:run()
          s:gate(eok == nil and eerr:find("E will not go", 1, true), "a failing early cleanup returns its error")
        end},
        runbook.step{"2", "fails", function(s)
          s:gate(#undone == 1 and undone[1] == "A", "only A undone so far")
          s:fail("on purpose")
        end},
        runbook.step{"3", "never", function(s) s:log("undone: %s", table.concat(undone, ",")) end}}
    ]])
    local bin = os.getenv("BOMARUN_BIN") or "build/bomarun"
    local r = assert(require("bomarun.proc").run{argv = {bin, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 30})
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cleanup%s+remove C", r.stdout)
    assert.is_nil(r.stdout:find("cleanup  remove A", 1, true))
    assert.is_nil(r.stdout:find("cleanup  remove B", 1, true))
    local ev = assert(require("bomarun.proc").run{shell = "cat " .. d .. "/runs/*/events.jsonl"}).stdout
    local statuses = {}
    for line in ev:gmatch("[^\n]+") do
      local e = require("bomarun.json").decode(line)
      if e.type == "cleanup_end" then statuses[e.index] = e.status end
    end
    assert.same({"DONE", "DISCHARGED", "DONE", "FAILED"}, statuses)
    local summary = assert(require("bomarun.proc").run{shell = "cat " .. d .. "/runs/*/summary.txt"}).stdout
    assert.is_nil(summary:find("remove B", 1, true))
    assert.matches("FAILED%s+remove E", summary)
  end)

  it("journals the waits of modules (ssh readiness) in a step: one progress path", function()
    local d = util.tmpdir(finally)
    util.write(d .. "/rb.lua", [[
      local runbook = require "bomarun.runbook"
      local ssh = require "bomarun.ssh"
      return runbook{id = "modwait", title = "t",
        runbook.step{"1", "wait", function(s)
          local _, err = ssh.wait_for_port{host = "127.0.0.1", port = 9, timeout = 0.6, interval = 0.2}
          s:check(err ~= nil, "port 9 stays closed")
        end}}
    ]])
    local bin = os.getenv("BOMARUN_BIN") or "build/bomarun"
    local r = assert(require("bomarun.proc").run{argv = {bin, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 30})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local ev = assert(require("bomarun.proc").run{shell = "cat " .. d .. "/runs/*/events.jsonl"}).stdout
    local attempts, outcome = 0, nil
    for line in ev:gmatch("[^\n]+") do
      local e = require("bomarun.json").decode(line)
      if e.type == "poll" and e.what == "port 127.0.0.1:9" then
        assert.equal("1", e.step)
        attempts = attempts + 1
        outcome = e.outcome or outcome
      end
    end
    assert.is_true(attempts >= 2, "poll events: " .. attempts)
    assert.equal("timeout", outcome)
    local steplog = assert(require("bomarun.proc").run{shell = "cat " .. d .. "/runs/*/steps/01-1.log"}).stdout
    assert.matches("poll port 127.0.0.1:9: attempt 1", steplog, 1, true)
  end)

  it("bounds an attempt that hangs by the poll's deadline", function()
    local t0 = task.now()
    local v, _, code = poll.run{function() task.sleep(60) return "never" end, ok = {"x"}, timeout = 0.2}
    assert.is_nil(v)
    assert.equal("TIMEOUT", code)
    assert.is_true(task.now() - t0 < 1)
  end)
end)

describe("reports", function()
  local function events()
    return {
      {type = "run_start", t = 100, run_id = "r1", runbook = {id = "rb", title = "T", decisions = {"D-1"}},
       plan = {{kind = "step", id = "1", title = "one", phase = "P"},
               {kind = "acceptance", id = "D-1", title = "bar",
                items = {{id = "D-1.1", title = "i1"},
                         {id = "D-1.2", title = "i2", deferred = {decision = "D-9", reason = "later"}}}}}},
      {type = "step_start", t = 101, id = "1"},
      {type = "gate", t = 101, step = "1", ok = true, message = "g <ok> & fine"},
      {type = "step_end", t = 102, id = "1", status = "PASS", duration = 1},
      {type = "step_start", t = 102, id = "D-1.1"},
    }
  end

  it("marks the running entry INTERRUPTED when the journal has no run_end", function()
    local m = report.build(events())
    assert.is_false(m.complete)
    assert.equal("INTERRUPTED", m.by_id["D-1.1"].status)
    assert.equal(1, m.exit_code)
    assert.matches("INCOMPLETE", report.summary_text(m))
  end)

  it("writes JUnit with a testcase per step, gate and item; deferred is skipped with its decision", function()
    local ev = events()
    ev[#ev + 1] = {type = "step_end", t = 103, id = "D-1.1", status = "FAIL", duration = 1, reason = "check failed"}
    ev[#ev + 1] = {type = "step_end", t = 103, id = "D-1.2", status = "DEFERRED", duration = 0,
                   deferred = {decision = "D-9", reason = "later"}}
    ev[#ev + 1] = {type = "run_end", t = 104, status = "FAILED", exit_code = 1, duration = 4}
    local x = report.junit_text(report.build(ev))
    assert.matches('tests="4" failures="1" errors="0" skipped="1"', x)
    assert.matches('name="gate 1: g &lt;ok&gt; &amp; fine"', x)
    assert.matches('<skipped message="DEFERRED: D%-9: later"/>', x)
    assert.matches('<failure message="check failed">', x)
  end)

  it("skips a torn last line in the journal (kill -9 mid-write) and says so", function()
    local d = tmpdir(finally)
    write(d .. "/events.jsonl", '{"type":"run_start","t":1,"runbook":{"id":"x","title":"t"},"plan":[]}\n{"type":"step_st')
    local m = assert(report.load(d))
    assert.equal("x", m.runbook.id)
    local found = false
    for _, w in ipairs(m.warnings) do if w:match("events.jsonl:2: skipped an unreadable event") then found = true end end
    assert.is_true(found)
  end)
end)

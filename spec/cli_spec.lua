-- End-to-end: the bomarun binary run as an operator or CI would run it.
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local json = require "bomarun.json"
local host = require "bomarun._host"
local util = require "support.util"
local tmpdir, read, write, wait_for, pid_alive = util.tmpdir, util.read, util.write, util.wait_for, util.pid_alive

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")

local bomarun, run_dirs = util.bomarun, util.run_dirs

local RB_HEAD = 'local runbook = require "bomarun.runbook"\nlocal proc = require "bomarun.proc"\n'

describe("bomarun command line", function()
  it("answers --version and --help, and exits 2 on a bad option", function()
    local r = bomarun({"--version"})
    assert.equal(0, r.code)
    assert.matches("^bomarun %d+%.%d+%.%d+", r.stdout)
    r = bomarun({"--help"})
    assert.equal(0, r.code)
    assert.matches("bomarun plan RUNBOOK", r.stdout)
    assert.matches("Exit status", r.stdout)
    r = bomarun({SRC .. "/examples/first-run.lua", "--bogus"})
    assert.equal(2, r.code)
    assert.matches("unknown option '%-%-bogus'", r.stderr)
  end)

  it("runs a plain script with arguments, and -e chunks", function()
    local d = tmpdir(finally)
    write(d .. "/s.lua", "local task = require 'bomarun.task'\ntask.sleep(0.01)\nprint(arg[0], ...)\n")
    local r = bomarun({d .. "/s.lua", "a", "b c"})
    assert.equal(0, r.code)
    assert.equal(d .. "/s.lua\ta\tb c\n", r.stdout)
    r = bomarun({"-e", "print(select('#', ...), ...)", "x", "y"})
    assert.equal("2\tx\ty\n", r.stdout)
    r = bomarun({"-e", "error('scripted failure')"})
    assert.equal(1, r.code)
    assert.matches("scripted failure", r.stderr)
  end)

  it("runs the example runbook: exit 0, acceptance summary, full run directory", function()
    local d = tmpdir(finally)
    local r = bomarun({SRC .. "/examples/first-run.lua", "--run-dir", d})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("ACCEPTANCE D%-001 %-%- Acceptance bar:", r.stdout)
    assert.matches("D%-001%.4%s+DEFERRED%s+Name resolution %-%- D%-002: DNS checks deferred to v2", r.stdout)
    assert.matches("D%-001%.3%s+OUTSTANDING", r.stdout)
    assert.matches("=> ACCEPTED", r.stdout)
    assert.is_nil(r.stdout:find("\27[", 1, true), "colour codes off a terminal")
    local dirs = run_dirs(d)
    assert.equal(1, #dirs)
    for _, f in ipairs({"events.jsonl", "report.json", "junit.xml", "summary.txt"}) do
      assert.truthy(read(dirs[1] .. "/" .. f), f .. " missing")
    end
    local rep = assert(json.decode(read(dirs[1] .. "/report.json")))
    assert.equal(0, rep.exit_code)
    assert.equal("PASSED", rep.status)
    local junit = read(dirs[1] .. "/junit.xml")
    assert.matches('<skipped message="DEFERRED: D%-002: DNS checks deferred to v2"/>', junit)
    local log = read(dirs[1] .. "/steps/03-2.0.log")
    assert.matches("%[job%] working", log)
    assert.matches("poll job marker", log)
  end)

  it("exits 1 when a gate fails, runs the cleanups, and marks later steps NOT_RUN", function()
    local d = tmpdir(finally)
    local src = read(SRC .. "/examples/first-run.lua")
    src = src:gsub('s:gate%(r%.code == 0, "the job exited 0"%)', 's:gate(r.code == 9, "the job exited 9")')
    write(d .. "/failing.lua", src)
    local r = bomarun({d .. "/failing.lua", "--run-dir", d .. "/runs"})
    assert.equal(1, r.code)
    assert.matches("gate failed: the job exited 9 %(" .. d:gsub("%p", "%%%0") .. "/failing%.lua:%d+%)", r.stdout)
    assert.matches("2%.1%s+NOT_RUN", r.stdout)
    assert.matches("cleanup%s+remove .- PASS", r.stdout)
    assert.matches("FAILED %(exit 1%)", r.stdout)
  end)

  it("plan mode runs no step body and writes nothing", function()
    local d = tmpdir(finally)
    local marker = d .. "/created-by-body"
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "plan-test", title = "Plan touches nothing",
  runbook.step{"1", "Create a file", mutation = true, function(s)
    local f = io.open("]] .. marker .. [[", "w") f:write("x") f:close()
    s:gate(true, "file created")
  end},
  runbook.acceptance{"A", "bar", runbook.item{"A.1", "later", deferred = "D-9: not yet"}},
}
]])
    local r = bomarun({"plan", d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(0, r.code, r.stderr)
    assert.matches("1%s+Create a file%s+%[MUTATION%]", r.stdout)
    assert.matches("gate: file created", r.stdout)
    assert.matches("A%.1%s+later %-%- DEFERRED by D%-9: not yet", r.stdout)
    assert.matches("nothing was run", r.stdout)
    assert.is_nil(read(marker))
    assert.is_nil(host.exists(d .. "/runs"))
    r = bomarun({d .. "/rb.lua", "--plan", "--run-dir", d .. "/runs"})
    assert.equal(0, r.code)
    assert.is_nil(read(marker))
  end)

  it("reports a runbook with a syntax error by file and line, exit 2", function()
    local d = tmpdir(finally)
    write(d .. "/bad.lua", RB_HEAD .. 'return runbook{id = "x", title = "t",\n  runbook.step{"1", "a" function() end},\n}\n')
    local r = bomarun({d .. "/bad.lua"})
    assert.equal(2, r.code)
    assert.matches("bad%.lua:4: '}' expected near 'function'", r.stderr)
  end)

  it("reports missing profile constants before any step runs, exit 2", function()
    local d = tmpdir(finally)
    local marker = d .. "/ran"
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "needs", title = "t", needs = {cluster = "string", replicas = "number"},
  runbook.step{"1", "a", function() io.open("]] .. marker .. [[", "w"):close() end}}
]])
    write(d .. "/site.lua", "return {replicas = 'two'}\n")
    local r = bomarun({d .. "/rb.lua", "--profile", d .. "/site.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code)
    assert.matches("missing constant 'cluster'", r.stderr)
    assert.matches("constant 'replicas' is a string, the runbook needs a number", r.stderr)
    assert.is_nil(read(marker))
    r = bomarun({d .. "/rb.lua", "--profile", d .. "/site.lua", "--set", "cluster=c1", "--set", "replicas=2",
                 "--run-dir", d .. "/runs"})
    assert.equal(0, r.code, r.stderr)
    assert.truthy(read(marker))
  end)

  it("selects with --only and --from", function()
    local d = tmpdir(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
local steps = {}
for k = 1, 4 do
  steps[#steps + 1] = runbook.step{tostring(k), "step " .. k, function(s) s:log("body %d ran", k) end}
end
return runbook{id = "sel", title = "t", table.unpack(steps)}
]])
    local r = bomarun({d .. "/rb.lua", "--only", "2", "--run-dir", d .. "/runs"})
    assert.equal(0, r.code)
    assert.matches("body 2 ran", r.stdout)
    assert.is_nil(r.stdout:find("body 1 ran", 1, true))
    assert.matches("3%s+SKIPPED%s+step 3", r.stdout)
    r = bomarun({d .. "/rb.lua", "--from", "3", "--run-dir", d .. "/runs"})
    assert.is_nil(r.stdout:find("body 2 ran", 1, true))
    assert.matches("body 4 ran", r.stdout)
    r = bomarun({d .. "/rb.lua", "--only", "9", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code)
    assert.matches("no such step", r.stderr)
  end)

  it("--resume skips the steps that passed and restores what they captured", function()
    local d = tmpdir(finally)
    local count = d .. "/count"
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "res", title = "t", defaults = {ready = false},
  runbook.step{"1", "expensive", function(s)
    local f = io.open("]] .. count .. [[", "a") f:write("x") f:close()
    s:capture("lb_id", "lb-1234")
  end},
  runbook.step{"2", "needs ready", function(s)
    s:gate(s.env.ready, "ready is set")
    s:gate(s.state.lb_id == "lb-1234", "lb_id captured by step 1")
  end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(1, r.code)
    local first = run_dirs(d .. "/runs")[1]
    r = bomarun({d .. "/rb.lua", "--resume", first, "--set", "ready=true", "--run-dir", d .. "/runs"})
    assert.equal(0, r.code, r.stdout)
    assert.equal("x", read(count))
    assert.matches("1%s+expensive %.+ PASS%s+resumed", r.stdout)
    assert.matches("Resumed from res%-", r.stdout)
  end)

  it("never shows a secret's value: console, journal, step logs, reports", function()
    local d = tmpdir(finally)
    local pw = "s3cr3t-" .. host.random_hex(8)
    write(d .. "/site.lua", "return {password = secret.env 'BOMARUN_SPEC_PW'}\n")
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "sec", title = "t", needs = {password = "string"},
  runbook.step{"1", "use it", function(s)
    s:log("logging the password: %s", s.env.password)
    proc.run{argv = {"echo", "argv has " .. s.env.password}, prefix = "[echo]"}
    s:capture("pw_copy", s.env.password)
    s:gate(false, "gate message with " .. s.env.password)
  end}}
]])
    local r = bomarun({d .. "/rb.lua", "--profile", d .. "/site.lua", "--run-dir", d .. "/runs"},
                      {env = {BOMARUN_SPEC_PW = pw}})
    assert.equal(1, r.code)
    assert.matches("logging the password: %*%*%*", r.stdout)
    assert.matches("%[echo%] argv has %*%*%*", r.stdout)
    local everything = r.stdout .. r.stderr ..
      proc.run{shell = "cat " .. d .. "/runs/*/events.jsonl " .. d .. "/runs/*/steps/* " .. d .. "/runs/*/report.json " ..
                       d .. "/runs/*/junit.xml " .. d .. "/runs/*/summary.txt"}.stdout
    assert.is_nil(everything:find(pw, 1, true), "the secret leaked")
    assert.matches("gate message with %*%*%*", everything)
    r = bomarun({d .. "/rb.lua", "--profile", d .. "/site.lua", "--run-dir", d .. "/runs"}, {env = {BOMARUN_SPEC_PW = false}})
    assert.equal(2, r.code)
    assert.matches("BOMARUN_SPEC_PW is not set", r.stderr)
  end)

  it("stops a runaway step at its timeout and carries a traceback for errors", function()
    local d = tmpdir(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "rw", title = "t",
  runbook.step{"1", "spins", timeout = 0.5, function(s) while true do end end},
}
]])
    local t0 = task.now()
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(1, r.code)
    assert.matches("timed out", r.stdout)
    assert.is_true(task.now() - t0 < 10)
    write(d .. "/err.lua", RB_HEAD .. [[
return runbook{id = "er", title = "t",
  runbook.step{"1", "bug", function(s)
    local cfg = nil
    return cfg.missing
  end},
}
]])
    r = bomarun({d .. "/err.lua", "--run-dir", d .. "/runs2"})
    assert.equal(1, r.code)
    assert.matches("err%.lua:6: attempt to index a nil value %(local .cfg.%)", r.stdout)
    local log = proc.run{shell = "cat " .. d .. "/runs2/*/steps/*.log"}.stdout
    assert.matches("stack traceback", log)
  end)

  it("does not hang on a grandchild that holds the step's pipe", function()
    local d = tmpdir(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "gc", title = "t",
  runbook.step{"1", "daemon holds stdout", function(s)
    local r = assert(proc.run{shell = "sleep 120 & echo child=$!", prefix = "[gc]"})
    s:capture("child", r.stdout:match("child=(%d+)"))
    s:gate(r.code == 0, "parent exited 0")
  end},
  runbook.step{"2", "timeout with a grandchild", function(s)
    local r, msg, code = proc.run{shell = "sleep 120 & sleep 120", timeout = 0.5, grace = 0.5}
    s:gate(code == "TIMEOUT", "timed out as asked")
  end},
}
]])
    local t0 = task.now()
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"}, {timeout = 30})
    local took = task.now() - t0
    assert.equal(0, r.code, r.stdout)
    assert.is_true(took < 10, "took " .. took .. " s")
    local child = tonumber(r.stdout:match("child = (%d+)"))
    assert.is_false(pid_alive(child), "the grandchild " .. child .. " was left running")
  end)

  describe("interrupts and crashes", function()
    local function slow_runbook(d)
      return write(d .. "/slow.lua", RB_HEAD .. [[
return runbook{id = "slow", title = "Slow",
  runbook.step{"1", "create", mutation = true, function(s)
    s:cleanup("write the cleaned marker", function()
      local f = assert(io.open("]] .. d .. [[/cleaned", "w")) f:write("cleaned\n") f:close()
    end)
  end},
  runbook.step{"2", "wait long", function(s)
    local r = proc.run{shell = "sleep 60 & echo grandchild=$! > ]] .. d .. [[/gc; sleep 60"}
    s:gate(r.code == 0, "long job ok")
  end},
  runbook.step{"3", "never reached", function(s) end},
}
]])
    end

    local function start(d)
      local h = assert(proc.spawn{argv = {BIN, d .. "/slow.lua", "--run-dir", d .. "/runs"}})
      wait_for(function()
        local dirs = run_dirs(d .. "/runs")
        local ev = dirs[1] and read(dirs[1] .. "/events.jsonl")
        return ev and ev:find('"id":"2"', 1, true) and read(d .. "/gc")
      end, 20, "step 2 to start")
      return h, run_dirs(d .. "/runs")[1]
    end

    it("SIGINT: exit 130, the running step cancelled, cleanups run, reports written", function()
      local d = tmpdir(finally)
      slow_runbook(d)
      local h, dir = start(d)
      local gc = tonumber(read(d .. "/gc"):match("(%d+)"))
      local t0 = task.now()
      h:kill("INT")
      local r = h:wait()
      assert.equal(130, r.code, r.stdout .. r.stderr)
      assert.is_true(task.now() - t0 < 10)
      assert.equal("cleaned\n", read(d .. "/cleaned"))
      assert.matches("2%s+INTERRUPTED", r.stdout)
      local rep = assert(json.decode(read(dir .. "/report.json")))
      assert.equal(130, rep.exit_code)
      assert.equal("INTERRUPTED", rep.status)
      assert.matches("<error", read(dir .. "/junit.xml"))
      assert.matches("INTERRUPTED", read(dir .. "/summary.txt"))
      assert.is_false(pid_alive(gc), "the step's grandchild survived SIGINT")
    end)

    it("SIGINT stops a step spinning in Lua (no waits) and later steps never start", function()
      local d = tmpdir(finally)
      write(d .. "/spin.lua", RB_HEAD .. [[
return runbook{id = "spin", title = "t",
  runbook.step{"1", "spins", function(s) io.open("]] .. d .. [[/spinning", "w"):close() while true do end end},
  runbook.step{"2", "must not start", mutation = true, function(s) io.open("]] .. d .. [[/ran2", "w"):close() end},
}
]])
      local h = assert(proc.spawn{argv = {BIN, d .. "/spin.lua"}, env = {BOMARUN_RUN_DIR = d .. "/envruns"}})
      wait_for(function() return read(d .. "/spinning") end, 20, "step 1 to spin")
      task.sleep(0.2)
      h:kill("INT")
      local r = h:wait()
      assert.equal(130, r.code, r.stdout .. r.stderr)
      assert.is_nil(read(d .. "/ran2"))
      assert.equal(1, #run_dirs(d .. "/envruns"), "BOMARUN_RUN_DIR was not used")
    end)

    it("SIGTERM: exit 143, cleanups run", function()
      local d = tmpdir(finally)
      slow_runbook(d)
      local h = start(d)
      h:kill("TERM")
      local r = h:wait()
      assert.equal(143, r.code, r.stdout .. r.stderr)
      assert.equal("cleaned\n", read(d .. "/cleaned"))
    end)

    it("kill -9: bomarun report rebuilds every report from the journal", function()
      local d = tmpdir(finally)
      slow_runbook(d)
      local h, dir = start(d)
      local gc = tonumber(read(d .. "/gc"):match("(%d+)"))
      h:kill("KILL")
      h:wait()
      assert.is_nil(read(dir .. "/report.json"))
      local r = bomarun({"report", dir})
      assert.equal(1, r.code)
      assert.matches("INCOMPLETE", r.stdout)
      assert.matches("1%s+PASS%s+create", r.stdout)
      assert.matches("2%s+INTERRUPTED%s+wait long", r.stdout)
      assert.matches("IN_PLACE%s+write the cleaned marker", r.stdout)
      local rep = assert(json.decode(read(dir .. "/report.json")))
      assert.is_false(rep.complete)
      assert.truthy(read(dir .. "/junit.xml"))
      assert.truthy(read(dir .. "/summary.txt"))
      -- kill -9 cannot be caught, but the watchdog outlives bomarun and
      -- kills the step's process group; the report names the group, since
      -- the journal never saw it end.
      assert.is_true(util.wait_dead(gc, 5), "the step's process group survived kill -9 of bomarun")
      assert.matches("Process groups still running when the journal ended", r.stdout, 1, true)
    end)
  end)
end)

-- Hardening of the runbook engine: evidence that is never lost (odd bytes,
-- odd values, a full disk), runbook files that return the wrong thing,
-- clear errors instead of tracebacks, process groups left running.  Each
-- runbook runs as a subprocess (build/bomarun FILE --run-dir DIR); the run
-- directory is what is inspected.
local proc = require "bomarun.proc"
local json = require "bomarun.json"
local host = require "bomarun._host"
local task = require "bomarun.task"
local util = require "support.util"
local read, write = util.read, util.write


local RB_HEAD = 'local runbook = require "bomarun.runbook"\nlocal proc = require "bomarun.proc"\n'

local bomarun, run_dirs = util.bomarun, util.run_dirs

-- A scratch directory, and tmpfs mounts in it, all undone when the test
-- ends (busted keeps one `finally` per test: this is it).
local function scratch(finally)
  local d = os.tmpname()
  os.remove(d)
  assert(host.mkdir(d))
  local mounts = {}
  finally(function()
    for k = #mounts, 1, -1 do proc.run{argv = {"umount", mounts[k]}} end
    proc.run{argv = {"rm", "-rf", d}}
  end)
  return d, function(dir, options)
    assert(host.mkdir(dir))
    local r = assert(proc.run{argv = {"mount", "-t", "tmpfs", "-o", options, "tmpfs", dir}})
    assert(r.code == 0, "mount failed (this test needs root): " .. r.stderr)
    mounts[#mounts + 1] = dir
    return dir
  end
end

-- Every line of a journal, decoded; fails on an unreadable one (the last
-- may be torn when `torn_ok`).
local function journal(dir, torn_ok)
  local text = assert(read(dir .. "/events.jsonl"), "no events.jsonl in " .. dir)
  local events, lines = {}, {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  for k, line in ipairs(lines) do
    local ev, err = json.decode(line)
    if not ev then
      assert(torn_ok and k == #lines, "unreadable journal line " .. k .. ": " .. tostring(err) .. "\n" .. line)
    else
      events[#events + 1] = ev
    end
  end
  return events
end

local function find_event(events, pred)
  for _, ev in ipairs(events) do if pred(ev) then return ev end end
end

local function entry(rep, id)
  for _, e in ipairs(rep.entries) do if e.id == id then return e end end
end

local function is_root()
  return proc.run{argv = {"id", "-u"}}.stdout:match("^0") ~= nil
end

describe("hardening: evidence that holds any value", function()
  it("keeps a passing run's evidence when a check message holds Latin-1 bytes (\\xE9 everywhere)", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "latin", title = "Latin-1 in a message",
  runbook.step{"1", "r\233sum\233", function(s)
    s:check(true, "out " .. proc.run{argv = {"printf", "r\\351s"}}.stdout)
  end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local dir = run_dirs(d .. "/runs")[1]
    local events = journal(dir)
    local check = find_event(events, function(ev) return ev.type == "check" end)
    assert(check, "the check event was dropped")
    assert.equal("out r\\xE9s", check.message)
    assert.equal("PASSED", find_event(events, function(ev) return ev.type == "run_end" end).status)
    local start = find_event(events, function(ev) return ev.type == "step_start" end)
    assert.equal("r\\xE9sum\\xE9", start.title)
    local rep = assert(json.decode((assert(read(dir .. "/report.json"), "no report.json"))))
    assert.equal(0, rep.exit_code)
    assert.equal("out r\\xE9s", entry(rep, "1").checks[1].message)
    assert.truthy(read(dir .. "/junit.xml"), "no junit.xml")
    assert.matches("r\\xE9sum\\xE9", read(dir .. "/summary.txt"), 1, true)
    assert.matches("r\\xE9sum\\xE9", r.stdout, 1, true)
    local steplog = read(dir .. "/steps/01-1.log")
    assert.matches("check ok: out r\\xE9s", steplog, 1, true)
    assert.is_nil(steplog:find("\233", 1, true), "a raw Latin-1 byte in the step log")
  end)

  it("fails a failing check with a Latin-1 message (exit 1, every report written)", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "latin2", title = "t",
  runbook.step{"1", "a", function(s)
    s:check(false, "out " .. proc.run{argv = {"printf", "r\\351s"}}.stdout)
  end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_nil(r.stderr:find("invalid UTF-8", 1, true), r.stderr)
    local dir = run_dirs(d .. "/runs")[1]
    for _, f in ipairs({"report.json", "junit.xml", "summary.txt"}) do assert.truthy(read(dir .. "/" .. f), f) end
    assert.matches("check failed: out r\\xE9s", read(dir .. "/summary.txt"), 1, true)
    assert.matches("check failed: out r\\xE9s", read(dir .. "/junit.xml"), 1, true)
  end)

  it("captures: a function or a cycle fails the step naming the key; NaN, inf and a NUL key are journaled", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
local cyc = {}
cyc.me = cyc
return runbook{id = "values", title = "t",
  runbook.acceptance{"A", "values",
    runbook.item{"A.1", "a function", function(i) i:capture("k", function() end) end},
    runbook.item{"A.2", "a cycle", function(i) i:capture("c", cyc) end},
    runbook.item{"A.3", "numbers", function(i) i:capture("n", {nan = 0/0, inf = math.huge, ninf = -math.huge}) end},
    runbook.item{"A.4", "a NUL key", function(i) i:capture("t", {["a\0b"] = "v", [1] = "one", x = "mixed"}) end},
    runbook.item{"A.5", "an event with a function", function(i) i:event{type = "mine", fn = print, ok = true} end},
  },
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local dir = run_dirs(d .. "/runs")[1]
    local events = journal(dir)
    local rep = assert(json.decode((assert(read(dir .. "/report.json"), "no report.json"))))
    assert.equal("FAIL", entry(rep, "A.1").status)
    assert.matches("capture k: a function cannot be journaled", entry(rep, "A.1").reason, 1, true)
    assert.equal("FAIL", entry(rep, "A.2").status)
    assert.matches("capture c: a cycle at c.me cannot be journaled", entry(rep, "A.2").reason, 1, true)
    assert.equal("PASS", entry(rep, "A.3").status)
    assert.same({nan = "nan", inf = "inf", ninf = "-inf"}, rep.captures.n)
    assert.equal("PASS", entry(rep, "A.4").status)
    assert.same({["a\\x00b"] = "v", ["1"] = "one", x = "mixed"}, rep.captures.t)
    local mine = find_event(events, function(ev) return ev.type == "mine" end)
    assert(mine, "the module event was dropped")
    assert.equal("<function>", mine.fn)
    assert.matches("step A.5: mine event: a function at $.fn cannot be journaled", mine.journal_error, 1, true)
    -- `bomarun report` reads every event back (nothing skipped as unreadable).
    local rr = bomarun({"report", dir})
    assert.equal(1, rr.code, rr.stderr)
    assert.is_nil(rr.stdout:find("unreadable", 1, true), rr.stdout)
    assert.is_nil(rr.stderr:find("traceback", 1, true), rr.stderr)
  end)

  it("refuses a NUL in a step id when the runbook is defined, with its file and line", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "nul", title = "t",
  runbook.step{"1", "a", function(s) end},
  runbook.step{"a\0b", "b", function(s) end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("rb%.lua:5: id \"a\\0b\" contains a NUL byte", r.stderr)
    assert.is_nil(host.exists(d .. "/runs"))
  end)

  it("writes each report on its own: one that cannot be written does not stop the others (exit 3)", function()
    local d = scratch(finally)
    local dir = d .. "/run"
    assert(host.mkdir(dir .. "/report.json"))   -- a directory where report.json goes
    write(dir .. "/events.jsonl", table.concat({
      '{"type":"run_start","seq":1,"t":1,"run_id":"r","runbook":{"id":"x","title":"t"},' ..
        '"plan":[{"kind":"step","id":"1","title":"one"}]}',
      '{"type":"step_start","seq":2,"t":2,"id":"1"}',
      '{"type":"step_end","seq":3,"t":3,"id":"1","status":"PASS","duration":1}',
      '{"type":"run_end","seq":4,"t":4,"status":"PASSED","exit_code":0,"duration":3}',
    }, "\n") .. "\n")
    local r = bomarun({"report", dir})
    assert.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("report: cannot write " .. dir .. "/report.json", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
    assert.matches("testcase", read(dir .. "/junit.xml"))
    assert.matches("PASSED", read(dir .. "/summary.txt"))
  end)
end)

describe("hardening: a disk that fills", function()
  it("stops, says which file could not be written and why, and exits 3; never PASSED with cut reports", function()
    if not is_root() then
      print("hardening_spec: skipped (mounting a tmpfs needs root)")
      return
    end
    local d, mount = scratch(finally)
    local disk = mount(d .. "/disk", "size=64k")
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "full", title = "fills the disk",
  runbook.step{"1", "journals more than 64k", function(s)
    for k = 1, 25 do s:capture("blob" .. k, {data = string.rep("x", 8000)}) end
  end},
  runbook.step{"2", "after", function(s) io.open("]] .. d .. [[/ran2", "w"):close() end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", disk .. "/runs"})
    assert.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("journal: cannot write " .. disk .. "/runs/full-[%w-]+/events%.jsonl: No space left on device",
      r.stderr)
    assert.is_nil(r.stdout:find("PASSED", 1, true), r.stdout:sub(-400))
    assert.is_nil(r.stdout:find("reports: " .. disk, 1, true), "said the reports were written")
    assert.is_nil(read(d .. "/ran2"), "the next step ran without a journal")
    local dir = run_dirs(disk .. "/runs")[1]
    for _, f in ipairs({"report.json", "junit.xml", "summary.txt"}) do
      local text = read(dir .. "/" .. f)
      assert(text == nil or #text > 0, f .. " was left empty")
      if f == "report.json" and text then assert(json.decode(text), "report.json was cut") end
    end
    journal(dir, true)   -- at most the last line is torn
  end)

  it("runs nothing when not even the first event can be written (exit 3)", function()
    if not is_root() then return end
    local d, mount = scratch(finally)
    local disk = mount(d .. "/disk", "size=64k")
    proc.run{shell = "head -c 1048576 /dev/zero > " .. disk .. "/fill 2>/dev/null"}
    write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "nospace", title = "t",
  runbook.step{"1", "must not run", function(s) io.open("]] .. d .. [[/ran", "w"):close() end},
}
]])
    local r = bomarun({d .. "/rb.lua", "--run-dir", disk .. "/runs"})
    assert.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("events.jsonl: No space left on device", r.stderr, 1, true)
    assert.is_nil(read(d .. "/ran"))
  end)

  it("reports a run directory that cannot be written as a usage error, exit 2", function()
    local d, mount = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. 'return runbook{id = "ro", title = "t", runbook.step{"1", "a", function() end}}\n')
    write(d .. "/file", "not a directory\n")
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/file/runs"})
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("cannot create the run directory .* %(%-%-run%-dir " .. d:gsub("%p", "%%%0") ..
      "/file/runs must be a writable directory%): mkdir: .*: Not a directory", r.stderr)
    if is_root() then
      local ro = mount(d .. "/ro", "ro,size=64k")
      r = bomarun({d .. "/rb.lua", "--run-dir", ro .. "/runs"})
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches("%-%-run%-dir " .. ro:gsub("%p", "%%%0") .. "/runs must be a writable directory%): .*Read%-only file system",
        r.stderr)
    end
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
  end)
end)

describe("hardening: files that return the wrong thing", function()
  local cases = {
    {"a plain table", 'return {id = "x", title = "t"}\n', "returned a table that is not a runbook"},
    {"a step", RB_HEAD .. 'return runbook.step{"1", "a", function() end}\n', "returned a runbook.step{...}, not a runbook"},
    {"a phase", RB_HEAD .. 'return runbook.phase{"P", runbook.step{"1", "a", function() end}}\n',
     "returned a runbook.phase{...}, not a runbook"},
    {"256", "return 256\n", "returned the number 256, not an exit status"},
    {"-1", "return -1\n", "returned the number -1, not an exit status"},
    {"a string", 'return "ok"\n', "returned a string, not a runbook or an exit status"},
  }
  for _, c in ipairs(cases) do
    it("exits 2 naming the file when it returns " .. c[1], function()
      local d = scratch(finally)
      write(d .. "/f.lua", c[2])
      local r = bomarun({d .. "/f.lua", "--run-dir", d .. "/runs"})
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches(d .. "/f.lua " .. c[3], r.stderr, 1, true)
      assert.is_nil(host.exists(d .. "/runs"))
    end)
  end

  it("still exits with what a script returns in 0..255, 0 for nothing", function()
    local d = scratch(finally)
    write(d .. "/seven.lua", "return 7\n")
    assert.equal(7, bomarun({d .. "/seven.lua"}).code)
    write(d .. "/none.lua", "local x = 1\n")
    assert.equal(0, bomarun({d .. "/none.lua"}).code)
    assert.equal(255, bomarun({"-e", "return 255"}).code)
    assert.equal(2, bomarun({"-e", "return 256"}).code)
  end)
end)

describe("hardening: clear errors, not tracebacks", function()
  it("task.parallel({}) returns {}", function()
    assert.same({}, task.parallel({}))
    assert.same({}, task.parallel({}, {settle = true}))
  end)

  it("blames a duplicate step id on the runbook's file and line, and locates an invalid runbook id", function()
    local d = scratch(finally)
    write(d .. "/dup.lua", RB_HEAD .. [[
return runbook{id = "dup", title = "t",
  runbook.step{"1", "a", function(s) end},
  runbook.step{"1", "b", function(s) end},
}
]])
    local r = bomarun({d .. "/dup.lua"})
    assert.equal(2, r.code)
    assert.matches("^bomarun: " .. d:gsub("%p", "%%%0") .. "/dup%.lua:5: duplicate id '1' %(step; the first is at " ..
      d:gsub("%p", "%%%0") .. "/dup%.lua:4%)", r.stderr)
    write(d .. "/badid.lua", RB_HEAD .. 'return runbook{id = "bad id!", title = "t"}\n')
    r = bomarun({d .. "/badid.lua"})
    assert.equal(2, r.code)
    assert.matches("^bomarun: " .. d:gsub("%p", "%%%0") .. "/badid%.lua:3: a runbook needs an id", r.stderr)
    -- Not a tail call: the frame itself gives the line.
    write(d .. "/badid2.lua", RB_HEAD .. 'local rb = runbook{id = 5, title = "t"}\nreturn rb\n')
    r = bomarun({d .. "/badid2.lua"})
    assert.equal(2, r.code)
    assert.matches("badid2%.lua:3: a runbook needs an id", r.stderr)
  end)

  it("secret.file on a directory, needs = \"x\", events.jsonl a directory: clear errors, exit 2", function()
    local d = scratch(finally)
    write(d .. "/site.lua", 'return {pw = secret.file "/etc"}\n')
    write(d .. "/rb.lua", RB_HEAD .. 'return runbook{id = "s", title = "t", needs = {"pw"}, ' ..
      'runbook.step{"1", "a", function() end}}\n')
    local r = bomarun({d .. "/rb.lua", "--profile", d .. "/site.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("secret: cannot read /etc: Is a directory (profile constant 'pw')", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)

    write(d .. "/needs.lua", RB_HEAD .. 'return runbook{id = "n", title = "t",\n' ..
      '  runbook.step{"1", "a", needs = "x", function() end}}\n')
    r = bomarun({d .. "/needs.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("needs%.lua:4: step 1: needs must be a list of names", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)

    assert(host.mkdir(d .. "/run/events.jsonl"))
    r = bomarun({"report", d .. "/run"})
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("journal: cannot read " .. d .. "/run/events.jsonl: Is a directory", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
  end)

  it("an error while a runbook loads is a runbook error (exit 2); a script's error stays 1", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. 'local cfg = nil\nlocal x = cfg.field\nreturn runbook{id = "e", title = "t"}\n')
    local r = bomarun({d .. "/rb.lua"})
    assert.equal(2, r.code, r.stderr)
    assert.matches("cannot load the runbook " .. d .. "/rb.lua: " .. d .. "/rb.lua:4: attempt to index", r.stderr, 1, true)
    write(d .. "/script.lua", "error('scripted')\n")
    assert.equal(1, bomarun({d .. "/script.lua"}).code)
  end)

  it("needs errors name the runbook's file, not =[C]", function()
    local d = scratch(finally)
    write(d .. "/rb.lua", RB_HEAD .. 'return runbook{id = "n", title = "t", needs = {"zz"}, ' ..
      'runbook.step{"1", "a", function() end}}\n')
    local r = bomarun({d .. "/rb.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code)
    assert.matches("bomarun: " .. d .. "/rb.lua: profile (none) does not give what the runbook needs", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("=[C]", 1, true), r.stderr)
    -- And a profile next to the runbook is found through that file.
    assert(host.mkdir(d .. "/profiles"))
    write(d .. "/profiles/site.lua", "return {zz = 1}\n")
    r = bomarun({d .. "/rb.lua", "--profile", "site", "--run-dir", d .. "/runs"}, {cwd = "/"})
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)

  it("loads runbooks and profiles as text only: precompiled bytecode is refused", function()
    local d = scratch(finally)
    local f = assert(io.open(d .. "/bc.lua", "wb"))
    f:write(string.dump(load("io.open('" .. d .. "/ran', 'w'):close() return {zz = 1}")))
    f:close()
    local r = bomarun({d .. "/bc.lua"})
    assert.equal(2, r.code, r.stderr)
    assert.matches("bc.lua: precompiled bytecode is not accepted", r.stderr, 1, true)
    assert.is_nil(read(d .. "/ran"), "the bytecode ran")
    write(d .. "/rb.lua", RB_HEAD .. 'return runbook{id = "p", title = "t", needs = {"zz"}, ' ..
      'runbook.step{"1", "a", function() end}}\n')
    r = bomarun({d .. "/rb.lua", "--profile", d .. "/bc.lua", "--run-dir", d .. "/runs"})
    assert.equal(2, r.code, r.stderr)
    assert.matches("binary chunk", r.stderr, 1, true)
    assert.is_nil(read(d .. "/ran"), "the bytecode profile ran")
  end)
end)

describe("hardening: process groups left running", function()
  local function write_journal(dir, with_run_end)
    assert(host.mkdir(dir))
    local lines = {
      '{"type":"run_start","seq":1,"t":100,"run_id":"r1","runbook":{"id":"pg","title":"Procs"},' ..
        '"plan":[{"kind":"step","id":"1","title":"one"},{"kind":"step","id":"2","title":"two"}]}',
      '{"type":"step_start","seq":2,"t":101,"id":"1"}',
      '{"type":"proc_start","seq":3,"t":101,"step":"1","pgid":4241,"pid":4241,"argv0":"true"}',
      '{"type":"proc_end","seq":4,"t":101,"step":"1","pgid":4241,"code":0}',
      '{"type":"step_end","seq":5,"t":102,"id":"1","status":"PASS","duration":1}',
      '{"type":"step_start","seq":6,"t":102,"id":"2"}',
      '{"type":"proc_start","seq":7,"t":102,"step":"2","pgid":4242,"pid":4242,"argv0":"sleep"}',
      '{"type":"proc_start","seq":8,"t":102,"step":"2","pgid":4250,"pid":4250,"argv0":"ssh"}',
      '{"type":"proc_end","seq":9,"t":103,"step":"2","pgid":4250,"signal":"TERM"}',
    }
    if with_run_end then
      lines[#lines + 1] = '{"type":"step_end","seq":10,"t":104,"id":"2","status":"PASS","duration":2}'
      lines[#lines + 1] = '{"type":"run_end","seq":11,"t":104,"status":"PASSED","exit_code":0,"duration":4}'
    end
    write(dir .. "/events.jsonl", table.concat(lines, "\n") .. "\n")
  end

  it("bomarun report lists the process groups that started and never ended when the run did not end", function()
    local d = scratch(finally)
    write_journal(d .. "/killed", false)
    local r = bomarun({"report", d .. "/killed"})
    assert.equal(1, r.code, r.stderr)
    local line = "Process groups still running when the journal ended: pgid 4242 (sleep, step 2)"
    assert.matches(line .. "\n", r.stdout, 1, true)
    assert.matches(line .. "\n", read(d .. "/killed/summary.txt"), 1, true)
    local rep = assert(json.decode(read(d .. "/killed/report.json")))
    assert.same({{pgid = 4242, pid = 4242, argv0 = "sleep", step = "2"}}, rep.leftover_process_groups)
  end)

  it("lists none when the run ended cleanly", function()
    local d = scratch(finally)
    write_journal(d .. "/clean", true)
    local r = bomarun({"report", d .. "/clean"})
    assert.equal(0, r.code, r.stderr)
    assert.is_nil(r.stdout:find("Process groups still running", 1, true))
    local rep = assert(json.decode(read(d .. "/clean/report.json")))
    assert.same({}, rep.leftover_process_groups)
  end)
end)

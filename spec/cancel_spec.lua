-- Cancellation cannot be swallowed by a runbook's own pcall, xpcall or
-- coroutine.resume: a step's timeout and a SIGTERM end a body that loops on
-- them, its cleanups run and the reports are written.
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local util = require "support.util"

local BIN = os.getenv("BOMARUN_BIN") or "build/bomarun"

local function runbook_with(body, timeout)
  return string.format([[
local runbook = require "bomarun.runbook"
return runbook{id = "swallow", title = "t",
  runbook.step{"1", "spin", timeout = %s, function(s)
    s:cleanup("note", function() print("CLEANUP RAN") end)
    %s
  end},
  runbook.step{"2", "never", function() end}}
]], timeout or "nil", body)
end

local LOOPS = {
  pcall = "repeat local ok = pcall(function() error('x') end) until ok",
  xpcall = "repeat local ok = xpcall(function() error('x') end, debug.traceback) until ok",
  ["pcall around a wait"] = "while true do pcall(require('bomarun.task').sleep, 5) end",
  coroutine = "while true do coroutine.resume(coroutine.create(function() error('x') end)) end",
}

describe("a runbook cannot swallow its cancellation", function()
  for name, loop in pairs(LOOPS) do
    it("a step timeout ends a loop on " .. name, function()
      local d = util.tmpdir(finally)
      util.write(d .. "/rb.lua", runbook_with(loop, 1))
      local t0 = task.now()
      local r = assert(proc.run{argv = {BIN, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 20})
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.is_true(task.now() - t0 < 8, "took " .. (task.now() - t0) .. " s")
      assert.matches("step 1 timed out after 1 s", r.stdout, 1, true)
      assert.matches("CLEANUP RAN", r.stdout, 1, true)
      assert.matches("2%s+NOT_RUN", r.stdout)
      local summary = assert(proc.run{shell = "cat " .. d .. "/runs/*/summary.txt"})
      assert.matches("FAILED", summary.stdout, 1, true)
    end)
  end

  it("SIGTERM ends a pcall loop with cleanups and reports (exit 143)", function()
    local d = util.tmpdir(finally)
    util.write(d .. "/rb.lua", runbook_with(LOOPS.pcall, nil))
    local p = assert(proc.spawn{argv = {BIN, d .. "/rb.lua", "--run-dir", d .. "/runs"}, quiet = true})
    task.sleep(0.7)
    p:kill("TERM")
    local r = task.timeout(10, function() return p:wait() end)
    assert(r, "bomarun did not end within 10 s of SIGTERM")
    assert.equal(143, r.code)
    assert.matches("CLEANUP RAN", r.stdout, 1, true)
    local summary = assert(proc.run{shell = "cat " .. d .. "/runs/*/summary.txt"})
    assert.matches("INTERRUPTED", summary.stdout, 1, true)
  end)

  it("leaves pcall alone in a task that is not cancelled", function()
    local ok, err = pcall(error, "plain")
    assert.is_false(ok)
    assert.equal("plain", err)
    local t = task.spawn(function() return pcall(task.sleep, 0.01) end)
    assert.same({true, true}, {t:wait()})
  end)
end)

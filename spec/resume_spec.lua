-- --resume after a failed run whose cleanups ran: a passed step whose work
-- was undone runs again (its captures dropped); a passed step whose
-- resource is still there is resumed as passed.
local proc = require "bomarun.proc"
local util = require "support.util"

local BIN = os.getenv("BOMARUN_BIN") or "build/bomarun"

local RUNBOOK = [[
local runbook = require "bomarun.runbook"
return runbook{id = "undo", title = "t",
  runbook.step{"1", "create", function(s)
    s:capture("made", "r1")
    s:cleanup("delete r1", function() print("DELETED r1") end)
  end},
  runbook.step{"1b", "note", function(s) s:capture("note", "kept") end},
  runbook.step{"2", "use", function(s)
    print("STATE made=" .. tostring(s.state.made) .. " note=" .. tostring(s.state.note))
    s:gate(os.getenv("PASS2") == "1", "step 2 passes when PASS2=1")
  end}}
]]

describe("--resume", function()
  it("runs again a passed step whose cleanup ran, and resumes the others", function()
    local d = util.tmpdir(finally)
    util.write(d .. "/rb.lua", RUNBOOK)
    local r1 = assert(proc.run{argv = {BIN, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 30})
    assert.equal(1, r1.code)
    assert.matches("DELETED r1", r1.stdout, 1, true)
    local first = assert(proc.run{shell = "ls -d " .. d .. "/runs/*"}).stdout:gsub("%s+$", "")
    local r2 = assert(proc.run{argv = {BIN, d .. "/rb.lua", "--run-dir", d .. "/runs", "--resume", first},
                               env = {PASS2 = "1"}, timeout = 30})
    assert.equal(0, r2.code, r2.stdout .. r2.stderr)
    assert.matches("step 1 runs again: its cleanup ran", r2.stdout, 1, true)
    assert.matches("1%s+create %.+ PASS", r2.stdout)
    assert.is_nil(r2.stdout:match("1%s+create %.+ PASS%s+resumed"))
    assert.matches("1b%s+note %.+ PASS%s+resumed", r2.stdout)
    -- step 1's capture came from this run, step 1b's from the first
    assert.matches("STATE made=r1 note=kept", r2.stdout, 1, true)
  end)
end)

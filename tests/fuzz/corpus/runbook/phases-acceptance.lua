local runbook = require "bomarun.runbook"
local proc = require "bomarun.proc"
return runbook{id = "fail", title = "Fails", decisions = {"D-1"},
  runbook.phase{"setup"},
  runbook.step{"1", "create", mutation = true, function(s)
    s:cleanup("remove it", function() end)
    s:capture("name", "thing-1")
    local r = proc.run{shell = "echo hi; exit 2"}
    s:check(r.code == 0, "exit 0 (check)")
  end},
  runbook.step{"2", "gate fails", function(s) s:gate(false, "never true") end},
  runbook.step{"3", "not run", function(s) end},
  runbook.acceptance{"A", "bar", runbook.item{"A.1", "works", function(s) s:gate(true, "yes") end},
    runbook.item{"A.2", "later", deferred = "D-1: not now"}},
}

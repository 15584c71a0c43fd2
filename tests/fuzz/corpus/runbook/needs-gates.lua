local runbook = require "bomarun.runbook"
return runbook{id = "needs", title = "Needs and declared gates", profile = "local",
  needs = {cluster = "string", replicas = "number", "region"},
  defaults = {replicas = 1},
  description = "A runbook with needs,\ndefaults and declared gates.",
  runbook.step{"1.0", "declared", timeout = 30, needs = {"image"}, gates = {"the image exists"},
    diagnose = function(s) s:log("diagnosing") end,
    function(s)
      s:gate(true, "inline gate")
      s:check(1 == 1, "a check")
      s:cleanup("undo it", function() end)
      s:poll{what = "ready", every = 1, timeout = 5, function() return true end}
    end},
  runbook.step{"1.1", "detail", detail = {plan_lines = function() return {"line one", "line two"} end},
    function(s) end},
}

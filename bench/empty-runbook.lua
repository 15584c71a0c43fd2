-- The smallest runbook: no phases, no steps.  bench/startup.lua times
-- `bomarun bench/empty-runbook.lua --run-dir TMP`: start the host, load the
-- library, create a run directory, write the journal and the reports, exit.
local runbook = require "bomarun.runbook"

return runbook{id = "empty", title = "Empty runbook"}

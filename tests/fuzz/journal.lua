-- fuzz_journal's driver: an events.jsonl of arbitrary bytes read by
-- journal.read, then the report built and rendered as `bomarun report`
-- does.  journal.read must never raise (it skips what it cannot read).
local journal = require "bomarun.journal"
local report = require "bomarun.report"
local common = dofile(FUZZ_DIR .. "/common.lua")

return function(_, path)
  local events, err, warnings = journal.read(path)
  if not events then fuzz_bug("journal.read failed on a readable file: " .. tostring(err)) end
  local ok, m = pcall(report.build, events, warnings)
  if not ok then return common.expected("report.build", m) end
  for _, render in ipairs({"summary_text", "junit_text", "json_text"}) do
    local rok, rerr = pcall(report[render], m)
    if not rok then common.expected("report." .. render, rerr) end
  end
end

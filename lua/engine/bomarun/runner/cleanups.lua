--- Cleanups: what steps registered to undo, run last-in-first-out when a
--- run fails or is interrupted (unless --keep), each as a bounded task with
--- a log of its own.
local log = require "bomarun.log"
local report = require "bomarun.report"
local task = require "bomarun.task"
local execute = require "bomarun.runner.execute"
local step_mod = require "bomarun.runner.step"

local M = {}

local CLEANUP_TIMEOUT = 600

--- Run the run's pending cleanups, last in first out (or, with --keep,
--- journal them as KEPT), each bounded and journaled.
---@param run bomarun.Run
function M.run(run)
  if #run.cleanups == 0 then return end
  local pending = 0
  for _, c in ipairs(run.cleanups) do if not c.settled then pending = pending + 1 end end
  if pending == 0 then return end
  if run.keep then
    log.console(string.format("  keeping %d resource%s (--keep): cleanups not run", pending,
      pending == 1 and "" or "s"))
    for _, c in ipairs(run.cleanups) do
      if not c.settled then run.journal:emit({type = "cleanup_end", index = c.index, status = "KEPT", duration = 0}) end
    end
    return
  end
  log.console(log.paint("bold", "  == cleanup (" .. pending .. ", last in first out)"))
  for k = #run.cleanups, 1, -1 do
    local c = run.cleanups[k]
    if c.settled then -- luacheck: ignore 542
      -- run early by its handle, or discharged: nothing to undo
    elseif run.abandon_cleanups then
      run.journal:emit({type = "cleanup_end", index = c.index, status = "ABANDONED", duration = 0,
                        error = "abandoned after a second interrupt"})
      execute.console_result(run, "cleanup", c.description, "SKIPPED", nil, "abandoned")
    else
      run.journal:emit({type = "cleanup_start", index = c.index, description = c.description})
      local sink, close_log = execute.open_step_log(run, "cleanup-" .. c.index)
      local t0 = task.now()
      local t = task.spawn_named("cleanup " .. c.index, function()
        task.current():locals().log_sink = sink
        return task.timeout(CLEANUP_TIMEOUT, c.fn)
      end)
      run.cleanup_task = t
      local ok, v, err = t:wait()
      run.cleanup_task = nil
      local status, emsg = step_mod.cleanup_outcome(ok, v, err)
      if emsg then sink("FAILED: " .. emsg) end
      close_log()
      run.journal:emit({type = "cleanup_end", index = c.index, status = status, duration = task.now() - t0,
                        error = emsg})
      execute.console_result(run, "cleanup", c.description, status == "DONE" and "PASS" or "FAIL", task.now() - t0,
        emsg and report.first_line(emsg))
    end
  end
end

return M

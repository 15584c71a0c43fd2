--- Running a runbook's units: each step or item body as a task of its own,
--- its log, its outcome, the console line; acceptance bars item by item.
local json = require "bomarun.json"
local log = require "bomarun.log"
local report = require "bomarun.report"
local sched = require "bomarun._sched"
local secret = require "bomarun.secret"
local step_ctx = require "bomarun.step"
local step_mod = require "bomarun.runner.step"
local task = require "bomarun.task"

local M = {}

---@class bomarun.Cleanup  a registered cleanup (Step:cleanup)
---@field index integer
---@field step string
---@field description string
---@field fn fun(): any
---@field settled "run"|"discharged"|nil  set once it was run early or discharged

---@class bomarun.Run  one run of a runbook, as the runner's parts share it
---@field id string
---@field dir string
---@field env table              the profile constants
---@field state table            captured values
---@field journal bomarun.Journal
---@field cleanups bomarun.Cleanup[]
---@field log_seq integer        step logs opened so far
---@field keep boolean|nil       --keep
---@field profile_name string|nil
---@field verbose boolean
---@field t_start number
---@field mark_interrupted fun(signame: string)
---@field interrupted string|nil the signal name
---@field aborted string|nil     the id whose failure stops the run
---@field pending_abort string|nil
---@field abandon_cleanups boolean|nil
---@field current_task bomarun.Task|nil
---@field cleanup_task bomarun.Task|nil
---@field evidence_error string|nil  the journal or a step log could not be written
---@field evidence_failed fun(msg: string)  say so once; the run stops after the running step

local STATUS_COLOUR = {PASS = "green", FAIL = "red", INTERRUPTED = "red", DEFERRED = "blue",
                       OUTSTANDING = "yellow", SKIPPED = "grey", NOT_RUN = "grey"}

--- Print a step's, item's or cleanup's result line on the console.
---@param run bomarun.Run
---@param id string
---@param title string
---@param status string     PASS, FAIL, SKIPPED, ... (coloured)
---@param duration? number  seconds
---@param note? string
function M.console_result(run, id, title, status, duration, note)
  id, title = json.escape_utf8(tostring(id)), json.escape_utf8(tostring(title))
  if type(note) == "string" then note = json.escape_utf8(secret.redact(note)) end
  local dots = string.rep(".", math.max(2, 46 - math.max(#id, 8) - #title))
  local badge = log.paint(STATUS_COLOUR[status] or "bold", string.format("%-11s", status))
  local line = string.format("  %-8s %s %s %s", id, title, dots, badge)
  if duration then line = line .. " " .. report.fmt_duration(duration) end
  if note and note ~= "" then line = line .. "  " .. note end
  log.console(line)
  local _ = run
end

--- Open the next step log, steps/NN-ID.log in the run directory.
--- Returns a line writer (redacted, invalid UTF-8 escaped as in the
--- journal, time-stamped, one unbuffered write per line), its closer and
--- the log's relative path.  A log that cannot be opened or written is
--- evidence lost: run.evidence_failed says so (and the writer stops).
---@param run bomarun.Run
---@param id string
---@return fun(line: string) sink, fun() close, string rel
function M.open_step_log(run, id)
  run.log_seq = run.log_seq + 1
  local rel = string.format("steps/%02d-%s.log", run.log_seq, (id:gsub("[^%w._-]+", "_")))
  local path = run.dir .. "/" .. rel
  local f, oerr = io.open(path, "a")
  if f then
    f:setvbuf("no")
  elseif run.evidence_failed then
    run.evidence_failed("step log: cannot open " .. path .. ": " .. tostring(oerr))
  end
  local function sink(line)
    if not f then return end
    local ok, err = f:write(os.date("!%H:%M:%S ") .. json.escape_utf8(secret.redact(tostring(line))) .. "\n")
    if not ok then
      pcall(f.close, f)
      f = nil
      if run.evidence_failed then run.evidence_failed("step log: cannot write " .. path .. ": " .. tostring(err)) end
    end
  end
  -- Late lines (a process the step left behind) are dropped, not errors.
  local function close()
    if f then f:close() f = nil end
  end
  return sink, close, rel
end

--- A body's error as a message, and its traceback when it has one.
M.error_message = step_mod.error_message

-- The body as a task of its own, with the step's log sink and context, and
-- the step's timeout as a bound (its expiry is a failure of the step).
local function spawn_body(node, kind, ctx, sink)
  local body = function()
    local me = task.current()
    me:locals().log_sink = sink
    step_ctx.bind(me, ctx)
    return node.body(ctx)
  end
  return task.spawn_named(kind .. " " .. node.id, function()
    if node.timeout then
      local r = table.pack(task.deadline(node.timeout, body))
      if r[1] == nil and r[3] == "DEADLINE" and r.n == 3 then
        step_mod.raise_failure("timeout", string.format("%s %s timed out after %g s", kind, node.id, node.timeout))
      end
      return table.unpack(r, 1, r.n)
    end
    return body()
  end)
end

-- What the body's task ended with, as an outcome (status, reason, ...).
local function outcome_of(run, ctx, ok, err, out, sink)
  if ok then
    out.status = ctx._failed_checks > 0 and "FAIL" or "PASS"
    if ctx._failed_checks > 0 then
      out.reason = ctx._failed_checks .. " check" .. (ctx._failed_checks == 1 and "" or "s") .. " failed"
    end
  elseif getmetatable(err) == step_mod.SKIP_MT then
    out.status = err.status or "SKIPPED"
    out.reason = err.reason
    out.deferred, out.outstanding = err.deferred, err.outstanding
  else
    local msg, tb = step_mod.error_message(err)
    local code = sched.cancel_code(err)
    if code == "INTERRUPTED" or (code and run.interrupted) then
      -- The count hook can stop a spinning body before the loop has
      -- delivered the signal to the handler: stop here all the same.
      run.mark_interrupted("SIGINT")
      out.status = "INTERRUPTED"
      out.reason = run.interrupted and ("interrupted by " .. run.interrupted) or msg
    else
      out.status = "FAIL"
      out.reason = msg
      out.error = tb and (msg .. "\n" .. tb) or nil
      -- Gates, errors and timeouts stop the run; failed checks do not.
      out.aborts = true
    end
    sink("FAILED: " .. msg)
    if tb then sink(tb) end
  end
  return out
end

-- A failed step's diagnose function, bounded, into the step's log.
local function diagnose(node, ctx, sink)
  sink("-- diagnose --")
  local dt = task.spawn_named("diagnose " .. node.id, function()
    task.current():locals().log_sink = sink
    return node.diagnose(ctx)
  end)
  local dok, derr = dt:wait(120)
  if not dok then sink("diagnose failed: " .. tostring(derr)) end
end

-- Runs one step or item body in its own task; returns an outcome table.
local function run_body(run, node, kind, bar)
  local id = node.id
  local sink, close_log, rel = M.open_step_log(run, id)
  local ctx = step_mod.new(run, node, kind, sink)
  run.journal:emit({type = "step_start", id = id, kind = kind, title = node.title, bar = bar,
                    mutation = node.mutation, log = rel})
  sink(string.format("== %s %s %s", kind, id, node.title))
  local t0 = task.now()
  local t = spawn_body(node, kind, ctx, sink)
  run.current_task = t
  local ok, err = t:wait()
  run.current_task = nil
  local out = outcome_of(run, ctx, ok, err, {duration = task.now() - t0, log = rel}, sink)
  if out.status == "FAIL" and node.diagnose then diagnose(node, ctx, sink) end
  run.journal:emit({type = "step_end", id = id, kind = kind, status = out.status, duration = out.duration,
                    reason = out.reason, error = out.error, deferred = out.deferred,
                    outstanding = out.outstanding, log = rel, aborts = out.aborts})
  close_log()
  return out
end

local function skip_entry(run, id, kind, status, reason)
  run.journal:emit({type = "step_end", id = id, kind = kind, status = status, duration = 0, reason = reason,
                    resumed = reason == "resumed" or nil})
end

--- Run an acceptance bar item by item (skipped, deferred, outstanding or by
--- its body); returns whether none of its items failed.
---@param run bomarun.Run
---@param node bomarun.AcceptanceNode
---@param sel table<string, string>  id -> why it is skipped (runner.select)
---@return boolean
function M.run_acceptance(run, node, sel)
  log.console(log.paint("bold", json.escape_utf8("  == " .. node.id .. " " .. node.title)))
  local failed = false
  for _, it in ipairs(node.items) do
    if run.aborted or run.interrupted or run.evidence_error then
      skip_entry(run, it.id, "item", "NOT_RUN", run.interrupted and "the run was interrupted"
        or run.evidence_error and "the evidence could not be written" or "an earlier gate failed")
    elseif sel[it.id] then
      local status = sel[it.id] == "resumed" and "PASS" or "SKIPPED"
      skip_entry(run, it.id, "item", status, sel[it.id])
      M.console_result(run, it.id, it.title, status, nil, sel[it.id])
    elseif it.deferred then
      run.journal:emit({type = "step_end", id = it.id, kind = "item", status = "DEFERRED", duration = 0,
                        deferred = it.deferred})
      M.console_result(run, it.id, it.title, "DEFERRED", nil, report.deferred_text(it.deferred))
    elseif not it.body then
      run.journal:emit({type = "step_end", id = it.id, kind = "item", status = "OUTSTANDING", duration = 0,
                        outstanding = it.outstanding})
      M.console_result(run, it.id, it.title, "OUTSTANDING", nil, it.outstanding)
    else
      local out = run_body(run, it, "item", node.id)
      local note = out.status == "DEFERRED" and report.deferred_text(out.deferred)
        or out.status == "OUTSTANDING" and out.outstanding or report.first_line(out.reason)
      M.console_result(run, it.id, it.title, out.status, out.duration, note)
      if out.status == "FAIL" then failed = true end
      if out.aborts then run.pending_abort = it.id end
    end
  end
  if run.pending_abort then run.aborted = run.pending_abort end
  return not failed
end

--- Run a step's body (or record it as skipped or not run).
---@param run bomarun.Run
---@param node bomarun.StepNode
---@param sel table<string, string>  id -> why it is skipped (runner.select)
function M.run_step(run, node, sel)
  if run.aborted or run.interrupted or run.evidence_error then
    skip_entry(run, node.id, "step", "NOT_RUN", run.interrupted and "the run was interrupted"
      or run.aborted and ("step " .. run.aborted .. " failed") or "the evidence could not be written")
    return
  end
  if sel[node.id] then
    local status = sel[node.id] == "resumed" and "PASS" or "SKIPPED"
    skip_entry(run, node.id, "step", status, sel[node.id])
    M.console_result(run, node.id, node.title, status, nil, sel[node.id])
    return
  end
  local out = run_body(run, node, "step", nil)
  M.console_result(run, node.id, node.title, out.status, out.duration, report.first_line(out.reason))
  if out.aborts then run.aborted = node.id end
end

return M

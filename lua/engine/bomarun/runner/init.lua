--- The runbook runner: profile, plan, steps as tasks, gates, acceptance,
--- cleanups, journal, console and reports.  Its parts: runner.step (the
--- step context a body sees), runner.plan (plan mode), runner.select
--- (--only, --from, --resume), runner.execute (a body as a task, its
--- outcome), runner.cleanups; this file sets a run up and drives it.
local host = require "bomarun._host"
local sched = require "bomarun._sched"
local json = require "bomarun.json"
local journal_mod = require "bomarun.journal"
local log = require "bomarun.log"
local proc = require "bomarun.proc"
local profile = require "bomarun.profile"
local report = require "bomarun.report"
local task = require "bomarun.task"
local step_ctx = require "bomarun.step"
local plan = require "bomarun.runner.plan"
local select_mod = require "bomarun.runner.select"
local execute = require "bomarun.runner.execute"
local cleanups = require "bomarun.runner.cleanups"

local M = {}

local EXIT_OK, EXIT_USAGE, EXIT_EVIDENCE = 0, 2, 3

local function run_dir_parent(opts)
  return opts.run_dir or os.getenv("BOMARUN_RUN_DIR") or "runs"
end

local function load_profile(rb, opts)
  local env = {}
  for k, v in pairs(rb.defaults) do env[k] = v end
  local name = opts.profile or rb.profile
  local path
  if name then
    local c, p = profile.load(name, rb.source)
    if not c then
      -- The runbook's own default profile is optional when its defaults
      -- cover what it needs; one asked for on the command line is not.
      if opts.profile then return nil, p end
      name = nil
    else
      for k, v in pairs(c) do env[k] = v end
      path = host.realpath(p) or p
    end
  end
  local needs = profile.needs_map(rb.needs)
  profile.apply_sets(env, opts.set, needs)
  return env, name, path
end

-- Resume: what passed before, and what it captured.
local function load_resume(rb, dir)
  local events, err = journal_mod.read(dir .. "/events.jsonl")
  if not events then return nil, err end
  local m = report.build(events)
  if not m.runbook or m.runbook.id ~= rb.id then
    return nil, "--resume " .. dir .. ": that run is of runbook '" .. tostring(m.runbook and m.runbook.id) ..
      "', not '" .. rb.id .. "'"
  end
  local passed = {}
  for _, e in ipairs(m.entries) do
    if e.status == "PASS" then passed[e.id] = true end
  end
  -- A passed step whose cleanup ran (DONE, or FAILED half-way) has had its
  -- work undone: it runs again, and what it captured is dropped.
  local undone = {}
  for _, c in pairs(m.cleanups) do
    if (c.status == "DONE" or c.status == "FAILED") and passed[c.step] then
      passed[c.step] = nil
      undone[#undone + 1] = {step = c.step, description = c.description}
    end
  end
  table.sort(undone, function(a, b) return a.step < b.step end)
  local captures = {}
  for k, v in pairs(m.captures) do captures[k] = v end
  for _, u in ipairs(undone) do
    for _, ev in ipairs(events) do
      if ev.type == "capture" and ev.step == u.step then captures[ev.key] = nil end
    end
  end
  return {passed = passed, captures = captures, id = m.run.id, dir = dir, profile = m.run.profile, undone = undone}
end

local function new_run_dir(rb, opts)
  local parent = run_dir_parent(opts)
  local id, dir
  repeat   -- never reuse an existing run directory
    id = os.date("!%Y%m%dT%H%M%SZ") .. "-" .. host.random_hex(3)
    dir = parent .. "/" .. rb.id .. "-" .. id
  until not host.exists(dir)
  local ok, err = host.mkdir(dir .. "/steps")
  if not ok then
    return nil, nil, "cannot create the run directory " .. dir .. " (--run-dir " .. parent ..
      " must be a writable directory): " .. err
  end
  return dir, rb.id .. "-" .. id
end

local function usage_error(msg)
  io.stderr:write("bomarun: " .. msg .. "\n")
  return EXIT_USAGE
end

-- Everything before a run directory exists: resume, profile, needs,
-- selection; plan mode ends here.  Returns a table for start_run, or an
-- exit status.
local function prepare(rb, opts)
  local resume
  if opts.resume then
    local r, err = load_resume(rb, opts.resume)
    if not r then return usage_error(err) end
    resume = r
    opts.profile = opts.profile or r.profile
  end
  local env, profile_name, profile_path = load_profile(rb, opts)
  if not env then return usage_error(profile_name) end
  local problems = profile.check_needs(env, rb)
  local sel, serr = select_mod.selection(rb, opts, resume and resume.passed)
  if not sel then return usage_error(serr) end
  if opts.plan then
    plan.print(rb, env, profile_name, profile_path, problems, sel)
    return #problems > 0 and EXIT_USAGE or EXIT_OK
  end
  if #problems > 0 then
    io.stderr:write(string.format("bomarun: %s: profile %s does not give what the runbook needs:\n  %s\n",
      rb.source or rb.id, profile_name and ("'" .. profile_name .. "' (" .. profile_path .. ")") or "(none)",
      table.concat(problems, "\n  ")))
    return EXIT_USAGE
  end
  local sok, serr2 = profile.resolve_secrets(env)
  if not sok then return usage_error(serr2) end
  return {resume = resume, env = env, profile_name = profile_name, profile_path = profile_path, sel = sel}
end

local function set_names(opts)
  local l = {}
  for _, kv in ipairs(opts.set) do l[#l + 1] = kv[1] end
  return json.array(l)
end

-- The run directory, the journal and its first event.  Returns the run
-- table, or nil and an exit status.
local function start_run(rb, opts, p)
  local dir, run_id, derr = new_run_dir(rb, opts)
  if not dir then return nil, usage_error(derr) end
  local jr, jerr = journal_mod.open(dir)
  if not jr then return nil, usage_error(jerr) end
  local run = {id = run_id, dir = dir, env = p.env, state = {}, journal = jr, cleanups = {}, log_seq = 0,
               keep = opts.keep, profile_name = p.profile_name, verbose = os.getenv("BOMARUN_VERBOSE") ~= nil,
               t_start = task.now()}
  -- Evidence that cannot be written (a full disk): said at once, the run
  -- stops after the running step, and it exits 3.
  function run.evidence_failed(msg)
    io.stderr:write("bomarun: " .. json.escape_utf8(msg) .. "\n")   -- each file that fails, once
    if run.evidence_error then return end
    run.evidence_error = msg
    log.console(log.paint("red", "  the evidence could not be written: no further step will run (exit 3)"))
    jr:emit({type = "evidence_error", message = msg})   -- kept in memory, for the reports
  end
  jr.on_error = run.evidence_failed
  if p.resume then
    for k, v in pairs(p.resume.captures) do run.state[k] = v end
  end
  function run.mark_interrupted(signame)
    if run.interrupted then return end
    run.interrupted = signame
    jr:emit({type = "interrupted", signal = signame})
  end
  jr:emit({type = "run_start", run_id = run_id, dir = dir, host = host.hostname(), pid = host.getpid(),
           runbook = {id = rb.id, title = rb.title, description = rb.description, decisions = json.array(rb.decisions),
                      source = rb.source},
           profile = p.profile_name, profile_path = p.profile_path, plan = plan.describe(rb),
           resumed_from = p.resume and p.resume.id or nil, strict = opts.strict or nil,
           options = {only = json.array(opts.only), from = opts.from, keep = opts.keep or false, set = set_names(opts)}})
  if jr.write_error then   -- not even the first event: run nothing
    jr:close()
    return nil, EXIT_EVIDENCE
  end
  if p.resume then
    for k, v in pairs(p.resume.captures) do
      jr:emit({type = "capture", step = "(resumed)", key = k, value = v})
    end
  end
  log.console(json.escape_utf8(string.format("%s %s -- %s", log.paint("bold", "bomarun"), rb.id, rb.title)))
  log.console(json.escape_utf8(string.format("  run %s  profile %s", dir, p.profile_name or "(defaults)")))
  for _, u in ipairs(p.resume and p.resume.undone or {}) do
    jr:emit({type = "resume_rerun", id = u.step, reason = "its cleanup ran: " .. u.description})
    log.console(json.escape_utf8(string.format("  step %s runs again: its cleanup ran in %s (%s)", u.step,
      p.resume.id, u.description)))
  end
  return run
end

-- Interrupts: the first cancels the running step (cleanups then run);
-- a second abandons the cleanups; a third kills everything at once.
local function on_interrupt(run)
  return function(signame, count)
    if count == 1 then
      run.mark_interrupted(signame)
      log.console(log.paint("red", "  " .. signame .. ": cancelling; cleanups will run (again to abandon them)"))
      if run.current_task then run.current_task:cancel("interrupted by " .. signame, "INTERRUPTED") end
    else
      run.abandon_cleanups = true
      log.console(log.paint("red", "  " .. signame .. " again: abandoning cleanups (a third kills everything)"))
      if run.cleanup_task then run.cleanup_task:cancel("abandoned after a second " .. signame, "INTERRUPTED") end
      if run.current_task then run.current_task:cancel("interrupted by " .. signame, "INTERRUPTED") end
    end
  end
end

local function run_units(rb, run, sel)
  local phase
  for _, u in ipairs(rb.units) do
    if u.phase ~= phase and u.phase then
      log.console(log.paint("bold", "  == " .. json.escape_utf8(u.phase)))
      run.journal:emit({type = "phase_start", phase = u.phase})
    end
    phase = u.phase
    if u.node.kind == "step" then
      execute.run_step(run, u.node, sel)
    else
      execute.run_acceptance(run, u.node, sel)
    end
  end
end

-- Cleanups if anything failed, the last event, the reports.  Each report
-- is written on its own; a journal or report that could not be written
-- makes the exit status 3.
local function finish(run)
  local jr = run.journal
  local failed = false
  for _, e in ipairs(report.build(jr.events).entries) do
    if e.status == "FAIL" or e.status == "INTERRUPTED" then failed = true end
  end
  if failed or run.interrupted or run.evidence_error then cleanups.run(run) end
  -- A cancelled step's process groups may still be dying (SIGTERM, then
  -- SIGKILL after the grace period): wait for them, so the journal shows
  -- them ended rather than left behind.
  if failed or run.interrupted then proc.settle(12) end
  sched.on_signal(nil)
  local m = report.build(jr.events)
  m.complete = true
  local code = report.exit_code(m)
  local status = code == 0 and "PASSED" or (run.interrupted and "INTERRUPTED" or "FAILED")
  jr:emit({type = "run_end", status = status, exit_code = code, duration = task.now() - run.t_start})
  jr:close()   -- a failed close calls run.evidence_failed
  m = report.build(jr.events)
  if m.evidence_error then m.exit_code = EXIT_EVIDENCE end
  local ok, werr = report.write_all(run.dir, m)
  if not ok then
    for line in werr:gmatch("[^\n]+") do io.stderr:write("bomarun: " .. json.escape_utf8(line) .. "\n") end
  end
  log.console("")
  local sok, summary = pcall(report.summary_text, m)
  log.console(sok and (summary:gsub("\n$", "")) or ("(no summary: " .. tostring(summary) .. ")"))
  if ok then
    log.console(json.escape_utf8("reports: " .. run.dir .. "/{summary.txt,report.json,junit.xml}"))
  else
    log.console(log.paint("red", "reports: not all written (see above); exit 3"))
  end
  if m.evidence_error or not ok then return EXIT_EVIDENCE end
  return code
end

--- Run (or plan) a runbook with parsed options; returns the exit status.
---@param rb table   a runbook (bomarun.runbook)
---@param opts table parsed command-line options (bomarun.cli)
---@return integer exit_status
function M.main(rb, opts)
  if opts.no_color then log.set_colour(false) end
  local p = prepare(rb, opts)
  if type(p) ~= "table" then return p end
  local run, code = start_run(rb, opts, p)
  if not run then return code end
  sched.on_signal(on_interrupt(run))
  run_units(rb, run, p.sel)
  return finish(run)
end

--- The step context of the running task (nil outside a runbook step).
--- Kept for scripts written against earlier versions: modules use
--- bomarun.step.
---@return bomarun.StepContext|nil
function M.current_step()
  return step_ctx.current()
end

return M

--- The runbook runner: profile, plan, steps as tasks, gates, acceptance,
--- cleanups, journal, console and reports.
local host = require "bomarun._host"
local sched = require "bomarun._sched"
local json = require "bomarun.json"
local journal_mod = require "bomarun.journal"
local log = require "bomarun.log"
local poll = require "bomarun.poll"
local profile = require "bomarun.profile"
local report = require "bomarun.report"
local secret = require "bomarun.secret"
local task = require "bomarun.task"
local step_ctx = require "bomarun.step"

local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
local CLEANUP_TIMEOUT = 600

-- Failures raised inside a body --------------------------------------------

local FAILURE_MT = {__name = "bomarun.failure"}
FAILURE_MT.__tostring = function(f) return f.message end
local SKIP_MT = {__name = "bomarun.skip"}

local function raise_failure(kind, message, level)
  local info = debug.getinfo((level or 2) + 1, "Sl")
  local where = info and info.currentline and info.currentline > 0 and (info.short_src .. ":" .. info.currentline) or nil
  error(setmetatable({kind = kind, message = message, where = where}, FAILURE_MT), 0)
end

local function caller_where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline
  end
end

-- The step context: what a body sees as `s` (or `i` for an item) -----------

---@class bomarun.StepContext
---@field id string
---@field title string
---@field env table            profile constants
---@field state table          values captured so far in this run (and resumed runs)
---@field run {id: string, dir: string, profile: string|nil}
local Step = {}
Step.__index = Step

local function msg_text(msg)
  if msg == nil then return "(no message)" end
  return tostring(msg)
end

--- Fail the runbook unless cond holds.  `level` says whose line to record:
--- 1 (the default) the caller of gate; 2 its caller (for helpers that gate
--- on a runbook's behalf, like ansible.gate).
---@param cond any
---@param msg string
---@param level? integer
function Step:gate(cond, msg, level)
  local ok = cond and true or false
  level = (level or 1) + 1
  local where = caller_where(level)
  self._run.journal:emit({type = "gate", step = self.id, ok = ok, message = msg_text(msg), where = where})
  self:_line(string.format("gate %s: %s", ok and "ok" or "FAILED", msg_text(msg)))
  if not ok then raise_failure("gate", "gate failed: " .. msg_text(msg), level) end
  return cond
end

--- Record a failure unless cond holds, and carry on (`level` as for gate).
---@param cond any
---@param msg string
---@param level? integer
---@return boolean
function Step:check(cond, msg, level)
  local ok = cond and true or false
  local where = caller_where((level or 1) + 1)
  self._run.journal:emit({type = "check", step = self.id, ok = ok, message = msg_text(msg), where = where})
  self:_line(string.format("check %s: %s", ok and "ok" or "FAILED", msg_text(msg)))
  if not ok then self._failed_checks = self._failed_checks + 1 end
  return ok
end

--- Fail this step (and the run) with a message.
function Step:fail(msg)
  raise_failure("fail", msg_text(msg), 2)
end

--- End this step as SKIPPED.
function Step:skip(reason)
  error(setmetatable({reason = reason}, SKIP_MT), 0)
end

--- An acceptance item: end as DEFERRED by a decision.
function Step:defer(decision, reason)
  error(setmetatable({status = "DEFERRED", deferred = {decision = decision, reason = reason}}, SKIP_MT), 0)
end

--- An acceptance item: end as OUTSTANDING.
function Step:outstanding(reason)
  error(setmetatable({status = "OUTSTANDING", outstanding = reason}, SKIP_MT), 0)
end

--- Write a line to this step's log (and to the console, indented).
function Step:log(fmt, ...)
  local line = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  self:_line(line, true)
end

function Step:_line(line, console)
  self._sink(line)
  if console or self._run.verbose then log.console("      | " .. line) end
end

--- Keep a value for later steps (journaled, restored by --resume).
function Step:capture(key, value)
  self.state[key] = value
  self._run.journal:emit({type = "capture", step = self.id, key = key, value = value})
  self:_line("captured " .. key .. " = " .. poll.show(value))
  return value
end

--- Register how to undo what this step created.  Cleanups run last-in-
--- first-out if the run fails or is interrupted, unless --keep.
---@param description string
---@param fn fun()
function Step:cleanup(description, fn)
  if type(fn) ~= "function" then error("cleanup: the second argument must be a function", 2) end
  local run = self._run
  local c = {index = #run.cleanups + 1, step = self.id, description = description, fn = fn}
  run.cleanups[#run.cleanups + 1] = c
  run.journal:emit({type = "cleanup_registered", index = c.index, step = self.id, description = description})
  self:_line("cleanup registered: " .. description)
end

--- Poll until fn's value is in `ok`; fail the step at once on a value in
--- `fail`, or at the timeout.  Returns the last value.
---@param spec bomarun.PollSpec
function Step:poll(spec)
  local what = spec.what or "condition"
  local last_shown
  local run = self._run
  local progress = poll.console_progress(what)
  local copy = {}
  for k, v in pairs(spec) do copy[k] = v end
  copy.on_attempt = function(info)
    local shown = info.value ~= nil and poll.show(info.value) or ("error: " .. tostring(info.err))
    self._sink(string.format("poll %s: attempt %d, %.1fs, last=%s", what, info.attempt, info.elapsed, shown))
    if shown ~= last_shown then
      run.journal:emit({type = "poll", step = self.id, what = what, attempt = info.attempt,
                        elapsed = info.elapsed, value = info.value, err = info.err})
      last_shown = shown
    end
    progress(info)
    if spec.on_attempt then spec.on_attempt(info) end
  end
  copy.on_done = function(info)
    log.progress_done()
    run.journal:emit({type = "poll", step = self.id, what = what, attempt = info.attempt,
                      elapsed = info.elapsed, value = info.value, err = info.err, outcome = info.outcome})
  end
  local v, err, code = poll.run(copy)
  if v == nil then raise_failure("poll", err .. (code == "FAILED_STATE" and "" or ""), 2) end
  return v
end

--- Journal an event of a module's own (type and fields), tagged with this
--- step; report.lua keeps unknown types under `events` in report.json.
---@param ev table  {type = "dag_component", ...}
function Step:event(ev)
  ev.step = self.id
  return self._run.journal:emit(ev)
end

--- The step context of the running task (nil outside a runbook step).
---@return bomarun.StepContext|nil
function M.current_step()
  return step_ctx.current()
end

--- Write an artifact file into the run directory; returns its path.
function Step:artifact(name, content)
  local dir = self._run.dir .. "/artifacts"
  host.mkdir(dir)
  local path = dir .. "/" .. (self.id .. "-" .. name):gsub("[^%w._-]", "_")
  local f = assert(io.open(path, "wb"))
  f:write(secret.redact(content))
  f:close()
  self:_line("artifact: " .. path)
  return path
end

-- Run set-up ----------------------------------------------------------------

local function slug(s)
  return (s:gsub("[^%w._-]+", "_"))
end

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

local function describe_plan(rb)
  local plan = {}
  for _, u in ipairs(rb.units) do
    local n = u.node
    if n.kind == "step" then
      plan[#plan + 1] = {kind = "step", id = n.id, title = n.title, phase = u.phase, mutation = n.mutation,
                         timeout = n.timeout}
    else
      local items = {}
      for _, it in ipairs(n.items) do
        items[#items + 1] = {id = it.id, title = it.title, outstanding = it.outstanding, deferred = it.deferred}
      end
      plan[#plan + 1] = {kind = "acceptance", id = n.id, title = n.title, phase = u.phase, items = items}
    end
  end
  return plan
end

-- Source scanning for plan mode: gates, cleanups and polls named in a body.
local source_cache = {}
local function source_lines(path)
  if source_cache[path] == nil then
    local lines = {}
    local f = path and io.open(path, "r")
    if f then
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
    end
    source_cache[path] = lines
  end
  return source_cache[path]
end

-- The second argument of a call, as written: a lone string literal is shown
-- unquoted, anything else as its source text.
local function second_arg(args)
  local inner = args:sub(2, -2)
  local depth, k, n, quote = 0, 1, #inner, nil
  while k <= n do
    local c = inner:sub(k, k)
    if quote then
      if c == "\\" then k = k + 1 elseif c == quote then quote = nil end
    elseif c == '"' or c == "'" then quote = c
    elseif c == "(" or c == "{" or c == "[" then depth = depth + 1
    elseif c == ")" or c == "}" or c == "]" then depth = depth - 1
    elseif c == "," and depth == 0 then
      local rest = inner:sub(k + 1):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s*\n%s*", " ")
      local lit = rest:match('^"([^"]*)"$') or rest:match("^'([^']*)'$")
      return lit or rest
    end
    k = k + 1
  end
  return nil
end

local function first_arg(args)
  local lit = args:match('^%(%s*"([^"]*)"%s*[,)]') or args:match("^%(%s*'([^']*)'%s*[,)]")
  if lit then return lit end
  local inner = args:sub(2, -2)
  return (inner:match("^(.-),%s*function") or inner):gsub("%s*\n%s*", " ")
end

local function scan_body(fn)
  if type(fn) ~= "function" then return {} end
  local info = debug.getinfo(fn, "S")
  if not info.source or info.source:sub(1, 1) ~= "@" then return {} end
  local lines = source_lines(info.source:sub(2))
  local last = math.min(info.lastlinedefined, #lines)
  if last < info.linedefined then return {} end
  local text = table.concat(lines, "\n", info.linedefined, last)
  local found = {}
  local function line_of(pos)
    local _, nl = text:sub(1, pos):gsub("\n", "")
    return info.linedefined + nl
  end
  local pos = 1
  while true do
    local a, b, kind, open = text:find(":(%a+)%s*([%({])", pos)
    if not a then break end
    local args = text:match(open == "(" and "^%b()" or "^%b{}", b)
    if args and (kind == "gate" or kind == "check") then
      local msg = second_arg(args)
      if msg then found[#found + 1] = {kind = kind, text = msg, line = line_of(a)} end
    elseif args and kind == "cleanup" then
      found[#found + 1] = {kind = "cleanup", text = first_arg(args), line = line_of(a)}
    elseif args and kind == "poll" then
      local what = args:match('what%s*=%s*"([^"]*)"') or args:match("what%s*=%s*'([^']*)'")
      found[#found + 1] = {kind = "poll", text = what or "(unnamed)", line = line_of(a)}
    end
    pos = b + 1
  end
  return found
end

-- Selection: --only, --from, --resume ----------------------------------------

local function selection(rb, opts, resumed_pass)
  local only = {}
  for _, id in ipairs(opts.only) do only[id] = true end
  local known = {}
  for _, u in ipairs(rb.units) do
    known[u.node.id] = true
    for _, it in ipairs(u.node.items or {}) do known[it.id] = true end
  end
  for id in pairs(only) do
    if not known[id] then return nil, "--only " .. id .. ": no such step or acceptance item in " .. rb.id end
  end
  if opts.from and not known[opts.from] then
    return nil, "--from " .. opts.from .. ": no such step in " .. rb.id
  end
  local started = opts.from == nil
  local sel = {}
  for _, u in ipairs(rb.units) do
    local ids = {u.node.id}
    for _, it in ipairs(u.node.items or {}) do ids[#ids + 1] = it.id end
    for _, id in ipairs(ids) do
      if id == opts.from then started = true end
      local why
      if next(only) and not (only[id] or (u.node.kind == "acceptance" and only[u.node.id])) then
        why = "not selected (--only)"
      elseif not started then
        why = "before --from " .. opts.from
      elseif resumed_pass and resumed_pass[id] then
        why = "resumed"
      end
      sel[id] = why
    end
  end
  return sel
end

-- Plan mode -------------------------------------------------------------------

local function print_plan(rb, env, profile_name, profile_path, problems, sel)
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("PLAN %s -- %s", rb.id, rb.title))
  if rb.description then add("  " .. rb.description:gsub("\n", "\n  ")) end
  if #rb.decisions > 0 then add("  decisions: " .. table.concat(rb.decisions, ", ")) end
  add("  profile: " .. (profile_name and (profile_name .. " (" .. profile_path .. ")") or "(none: runbook defaults)"))
  local _, order = profile.needs_map(rb.needs)
  if #order > 0 then add("  needs: " .. table.concat(order, ", ")) end
  local nsteps, nmut, nitems = 0, 0, 0
  local phase
  for _, u in ipairs(rb.units) do
    local n = u.node
    if u.phase ~= phase and u.phase then add("  == " .. u.phase) end
    phase = u.phase
    if n.kind == "step" then
      nsteps = nsteps + 1
      local flags = {}
      if n.mutation then nmut = nmut + 1; flags[#flags + 1] = log.paint("yellow", "MUTATION") end
      if n.timeout then flags[#flags + 1] = "timeout " .. n.timeout .. "s" end
      if sel[n.id] then flags[#flags + 1] = "skip: " .. sel[n.id] end
      add(string.format("     %-8s %s%s", n.id, n.title, #flags > 0 and ("   [" .. table.concat(flags, ", ") .. "]") or ""))
      for _, g in ipairs(n.gates or {}) do add("              gate: " .. g) end
      for _, f in ipairs(scan_body(n.body)) do
        add(string.format("              %s: %s   (line %d)", f.kind, f.text, f.line))
      end
      if n.diagnose then add("              diagnose on failure") end
      if n.detail and n.detail.plan_lines then
        for _, l in ipairs(n.detail:plan_lines()) do add("              " .. l) end
      end
    else
      add(string.format("     %s %s (acceptance bar)", n.id, n.title))
      for _, it in ipairs(n.items) do
        nitems = nitems + 1
        local what
        if it.deferred then what = "DEFERRED by " .. report.deferred_text(it.deferred)
        elseif it.outstanding then what = "OUTSTANDING: " .. it.outstanding
        else what = "checked by its body" end
        if sel[it.id] then what = what .. "   [skip: " .. sel[it.id] .. "]" end
        add(string.format("       %-10s %s -- %s", it.id, it.title, what))
        for _, f in ipairs(scan_body(it.body)) do
          add(string.format("                  %s: %s   (line %d)", f.kind, f.text, f.line))
        end
      end
    end
  end
  add(string.format("  %d step%s (%d mutation%s), %d acceptance item%s; nothing was run.",
    nsteps, nsteps == 1 and "" or "s", nmut, nmut == 1 and "" or "s", nitems, nitems == 1 and "" or "s"))
  for _, p in ipairs(problems) do add(log.paint("red", "  PROBLEM: ") .. p) end
  local _ = env
  log.console(table.concat(out, "\n"))
end

-- Running a unit ----------------------------------------------------------

local STATUS_COLOUR = {PASS = "green", FAIL = "red", INTERRUPTED = "red", DEFERRED = "blue",
                       OUTSTANDING = "yellow", SKIPPED = "grey", NOT_RUN = "grey"}

local function console_result(run, id, title, status, duration, note)
  local dots = string.rep(".", math.max(2, 46 - math.max(#id, 8) - #title))
  local line = string.format("  %-8s %s %s %s", id, title, dots, log.paint(STATUS_COLOUR[status] or "bold", string.format("%-11s", status)))
  if duration then line = line .. " " .. report.fmt_duration(duration) end
  if note and note ~= "" then line = line .. "  " .. note end
  log.console(line)
  local _ = run
end

local function open_step_log(run, id)
  run.log_seq = run.log_seq + 1
  local rel = string.format("steps/%02d-%s.log", run.log_seq, slug(id))
  local f = io.open(run.dir .. "/" .. rel, "a")
  if f then f:setvbuf("line") end
  local function sink(line)
    if f then f:write(os.date("!%H:%M:%S "), secret.redact(line), "\n") end
  end
  -- Late lines (a process the step left behind) are dropped, not errors.
  local function close()
    if f then f:close() f = nil end
  end
  return sink, close, rel
end

local function error_message(err)
  if getmetatable(err) == FAILURE_MT then
    return err.message .. (err.where and (" (" .. err.where .. ")") or ""), nil
  end
  local code = sched.cancel_code(err)
  if code then return tostring(err), nil end
  if type(err) == "table" then
    local m = err.message or tostring(err)
    return tostring(m), err.traceback
  end
  local s = tostring(err)
  local msg, tb = s:match("^(.-)\n(stack traceback:.*)$")
  return msg or s, tb
end

-- Runs one step or item body in its own task; returns an outcome table.
local function run_body(run, node, kind, bar)
  local id = node.id
  local sink, close_log, rel = open_step_log(run, id)
  local ctx = setmetatable({id = id, title = node.title, env = run.env, state = run.state,
                            run = {id = run.id, dir = run.dir, profile = run.profile_name},
                            kind = kind, _run = run, _sink = sink, _failed_checks = 0}, Step)
  run.journal:emit({type = "step_start", id = id, kind = kind, title = node.title, bar = bar,
                    mutation = node.mutation, log = rel})
  sink(string.format("== %s %s %s", kind, id, node.title))
  local t0 = task.now()
  local body = function()
    local me = task.current()
    me:locals().log_sink = sink
    step_ctx.bind(me, ctx)
    return node.body(ctx)
  end
  local t = task.spawn_named(kind .. " " .. id, function()
    if node.timeout then
      local r = table.pack(task.deadline(node.timeout, body))
      if r[1] == nil and r[3] == "DEADLINE" and r.n == 3 then
        raise_failure("timeout", string.format("%s %s timed out after %g s", kind, id, node.timeout))
      end
      return table.unpack(r, 1, r.n)
    end
    return body()
  end)
  run.current_task = t
  local ok, err = t:wait()
  run.current_task = nil
  local out = {duration = task.now() - t0, log = rel}
  if ok then
    out.status = ctx._failed_checks > 0 and "FAIL" or "PASS"
    if ctx._failed_checks > 0 then
      out.reason = ctx._failed_checks .. " check" .. (ctx._failed_checks == 1 and "" or "s") .. " failed"
    end
  elseif getmetatable(err) == SKIP_MT then
    out.status = err.status or "SKIPPED"
    out.reason = err.reason
    out.deferred, out.outstanding = err.deferred, err.outstanding
  else
    local msg, tb = error_message(err)
    local code = sched.cancel_code(err)
    if code == "INTERRUPTED" or (code and run.interrupted) then
      -- The count hook can stop a spinning body before the loop has
      -- delivered the signal to the handler below: stop here all the same.
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
  if out.status == "FAIL" and node.diagnose then
    sink("-- diagnose --")
    local dt = task.spawn_named("diagnose " .. id, function()
      task.current():locals().log_sink = sink
      return node.diagnose(ctx)
    end)
    local dok, derr = dt:wait(120)
    if not dok then sink("diagnose failed: " .. tostring(derr)) end
  end
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

local function run_acceptance(run, node, sel)
  log.console(log.paint("bold", "  == " .. node.id .. " " .. node.title))
  local failed = false
  for _, it in ipairs(node.items) do
    if run.aborted or run.interrupted then
      skip_entry(run, it.id, "item", "NOT_RUN", run.interrupted and "the run was interrupted" or "an earlier gate failed")
    elseif sel[it.id] then
      local status = sel[it.id] == "resumed" and "PASS" or "SKIPPED"
      skip_entry(run, it.id, "item", status, sel[it.id])
      console_result(run, it.id, it.title, status, nil, sel[it.id])
    elseif it.deferred then
      run.journal:emit({type = "step_end", id = it.id, kind = "item", status = "DEFERRED", duration = 0,
                        deferred = it.deferred})
      console_result(run, it.id, it.title, "DEFERRED", nil, report.deferred_text(it.deferred))
    elseif not it.body then
      run.journal:emit({type = "step_end", id = it.id, kind = "item", status = "OUTSTANDING", duration = 0,
                        outstanding = it.outstanding})
      console_result(run, it.id, it.title, "OUTSTANDING", nil, it.outstanding)
    else
      local out = run_body(run, it, "item", node.id)
      local note = out.status == "DEFERRED" and report.deferred_text(out.deferred)
        or out.status == "OUTSTANDING" and out.outstanding or report.first_line(out.reason)
      console_result(run, it.id, it.title, out.status, out.duration, note)
      if out.status == "FAIL" then failed = true end
      if out.aborts then run.pending_abort = it.id end
    end
  end
  if run.pending_abort then run.aborted = run.pending_abort end
  return not failed
end

local function run_step(run, node, sel)
  if run.aborted or run.interrupted then
    skip_entry(run, node.id, "step", "NOT_RUN", run.interrupted and "the run was interrupted"
      or ("step " .. run.aborted .. " failed"))
    return
  end
  if sel[node.id] then
    local status = sel[node.id] == "resumed" and "PASS" or "SKIPPED"
    skip_entry(run, node.id, "step", status, sel[node.id])
    console_result(run, node.id, node.title, status, nil, sel[node.id])
    return
  end
  local out = run_body(run, node, "step", nil)
  console_result(run, node.id, node.title, out.status, out.duration, report.first_line(out.reason))
  if out.aborts then run.aborted = node.id end
end

local function run_cleanups(run)
  if #run.cleanups == 0 then return end
  if run.keep then
    log.console(string.format("  keeping %d resource%s (--keep): cleanups not run", #run.cleanups,
      #run.cleanups == 1 and "" or "s"))
    for _, c in ipairs(run.cleanups) do
      run.journal:emit({type = "cleanup_end", index = c.index, status = "KEPT", duration = 0})
    end
    return
  end
  log.console(log.paint("bold", "  == cleanup (" .. #run.cleanups .. ", last in first out)"))
  for k = #run.cleanups, 1, -1 do
    local c = run.cleanups[k]
    if run.abandon_cleanups then
      run.journal:emit({type = "cleanup_end", index = c.index, status = "ABANDONED", duration = 0,
                        error = "abandoned after a second interrupt"})
      console_result(run, "cleanup", c.description, "SKIPPED", nil, "abandoned")
    else
      run.journal:emit({type = "cleanup_start", index = c.index, description = c.description})
      local sink, close_log = open_step_log(run, "cleanup-" .. c.index)
      local t0 = task.now()
      local t = task.spawn_named("cleanup " .. c.index, function()
        task.current():locals().log_sink = sink
        return task.timeout(CLEANUP_TIMEOUT, c.fn)
      end)
      run.cleanup_task = t
      local ok, v, err = t:wait()
      run.cleanup_task = nil
      local status, emsg = "DONE", nil
      if not ok then
        status, emsg = "FAILED", error_message(v)
      elseif v == nil and err then
        status, emsg = "FAILED", tostring(err)
      end
      if emsg then sink("FAILED: " .. emsg) end
      close_log()
      run.journal:emit({type = "cleanup_end", index = c.index, status = status, duration = task.now() - t0,
                        error = emsg})
      console_result(run, "cleanup", c.description, status == "DONE" and "PASS" or "FAIL", task.now() - t0,
        emsg and report.first_line(emsg))
    end
  end
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
  return {passed = passed, captures = m.captures, id = m.run.id, dir = dir, profile = m.run.profile}
end

local function new_run_dir(rb, opts)
  local parent = run_dir_parent(opts)
  local id, dir
  repeat   -- never reuse an existing run directory
    id = os.date("!%Y%m%dT%H%M%SZ") .. "-" .. host.random_hex(3)
    dir = parent .. "/" .. rb.id .. "-" .. id
  until not host.exists(dir)
  local ok, err = host.mkdir(dir .. "/steps")
  if not ok then return nil, nil, "cannot create the run directory: " .. err end
  return dir, rb.id .. "-" .. id
end

local function usage_error(msg)
  io.stderr:write("bomarun: " .. msg .. "\n")
  return EXIT_USAGE
end

--- Run (or plan) a runbook with parsed options; returns the exit status.
function M.main(rb, opts)
  if opts.no_color then log.set_colour(false) end
  local resume
  if opts.resume then
    local r, err = load_resume(rb, opts.resume)
    if not r then
      return usage_error(err)
    end
    resume = r
    opts.profile = opts.profile or r.profile
  end
  local env, profile_name, profile_path = load_profile(rb, opts)
  if not env then
    return usage_error(profile_name)
  end
  local problems = profile.check_needs(env, rb)
  local sel, serr = selection(rb, opts, resume and resume.passed)
  if not sel then
    return usage_error(serr)
  end
  if opts.plan then
    print_plan(rb, env, profile_name, profile_path, problems, sel)
    return #problems > 0 and EXIT_USAGE or EXIT_OK
  end
  if #problems > 0 then
    io.stderr:write(string.format("bomarun: %s: profile %s does not give what the runbook needs:\n  %s\n",
      rb.source or rb.id, profile_name and ("'" .. profile_name .. "' (" .. profile_path .. ")") or "(none)",
      table.concat(problems, "\n  ")))
    return EXIT_USAGE
  end
  local sok, serr2 = profile.resolve_secrets(env)
  if not sok then
    return usage_error(serr2)
  end
  local dir, run_id, derr = new_run_dir(rb, opts)
  if not dir then
    return usage_error(derr)
  end
  local jr, jerr = journal_mod.open(dir)
  if not jr then
    return usage_error(jerr)
  end
  local run = {id = run_id, dir = dir, env = env, state = {}, journal = jr, cleanups = {}, log_seq = 0,
               keep = opts.keep, profile_name = profile_name, verbose = os.getenv("BOMARUN_VERBOSE") ~= nil}
  if resume then
    for k, v in pairs(resume.captures) do run.state[k] = v end
  end
  function run.mark_interrupted(signame)
    if run.interrupted then return end
    run.interrupted = signame
    jr:emit({type = "interrupted", signal = signame})
  end
  local t_start = task.now()
  jr:emit({type = "run_start", run_id = run_id, dir = dir, host = host.hostname(), pid = host.getpid(),
           runbook = {id = rb.id, title = rb.title, description = rb.description, decisions = json.array(rb.decisions),
                      source = rb.source},
           profile = profile_name, profile_path = profile_path, plan = describe_plan(rb),
           resumed_from = resume and resume.id or nil, strict = opts.strict or nil,
           options = {only = json.array(opts.only), from = opts.from, keep = opts.keep or false,
                      set = json.array((function() local l = {} for _, kv in ipairs(opts.set) do l[#l + 1] = kv[1] end return l end)())}})
  if resume then
    for k, v in pairs(resume.captures) do
      jr:emit({type = "capture", step = "(resumed)", key = k, value = v})
    end
  end
  log.console(string.format("%s %s -- %s", log.paint("bold", "bomarun"), rb.id, rb.title))
  log.console(string.format("  run %s  profile %s", dir, profile_name or "(defaults)"))

  -- Interrupts: the first cancels the running step (cleanups then run);
  -- a second abandons the cleanups; a third kills everything at once.
  sched.on_signal(function(signame, count)
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
  end)

  local phase
  for _, u in ipairs(rb.units) do
    if u.phase ~= phase and u.phase then
      log.console(log.paint("bold", "  == " .. u.phase))
      jr:emit({type = "phase_start", phase = u.phase})
    end
    phase = u.phase
    if u.node.kind == "step" then
      run_step(run, u.node, sel)
    else
      run_acceptance(run, u.node, sel)
    end
  end

  local failed = false
  local m0 = report.build(jr.events)
  for _, e in ipairs(m0.entries) do
    if e.status == "FAIL" or e.status == "INTERRUPTED" then failed = true end
  end
  if failed or run.interrupted then run_cleanups(run) end
  sched.on_signal(nil)

  local m = report.build(jr.events)
  m.complete = true
  local code = report.exit_code(m)
  jr:emit({type = "run_end", status = code == 0 and "PASSED" or (run.interrupted and "INTERRUPTED" or "FAILED"),
           exit_code = code, duration = task.now() - t_start})
  jr:close()
  m = report.build(jr.events)
  local ok, werr = report.write_all(dir, m)
  if not ok then io.stderr:write("bomarun: " .. werr .. "\n") end
  log.console("")
  log.console((report.summary_text(m):gsub("\n$", "")))
  log.console("reports: " .. dir .. "/{summary.txt,report.json,junit.xml}")
  return code
end

return M

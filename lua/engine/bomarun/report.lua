--- Reports, built from the event journal alone: the runner and
--- `bomarun report RUN_DIR` use the same code, so a report rebuilt after a
--- kill -9 says everything the journal knew.
local json = require "bomarun.json"
local journal = require "bomarun.journal"

local M = {}

local FAILING = {FAIL = true, INTERRUPTED = true}

---@class bomarun.ReportVerdict  a gate or check as journaled
---@field ok boolean
---@field message string
---@field where string|nil  file:line of the call
---@field t number

---@class bomarun.ReportEntry  a step or acceptance item
---@field kind "step"|"item"
---@field id string
---@field title string
---@field phase string|nil
---@field bar string|nil        an item's acceptance bar
---@field mutation boolean|nil
---@field status string         NOT_RUN, RUNNING, PASS, FAIL, SKIPPED, DEFERRED, OUTSTANDING, INTERRUPTED
---@field gates bomarun.ReportVerdict[]
---@field checks bomarun.ReportVerdict[]
---@field outstanding string|nil
---@field deferred {decision: string|nil, reason: string}|nil
---@field started number|nil
---@field duration number|nil
---@field reason string|nil
---@field error string|nil
---@field log string|nil        the step log, relative to the run directory
---@field resumed boolean|nil
---@field poll table|nil        the last poll: {what, attempt, elapsed, value, outcome}

---@class bomarun.ReportBar  an acceptance bar
---@field id string
---@field title string
---@field phase string|nil
---@field items bomarun.ReportEntry[]

---@class bomarun.ReportCleanup
---@field index integer
---@field step string
---@field description string
---@field status string         PENDING, DONE, FAILED, KEPT, ABANDONED, DISCHARGED
---@field error string|nil
---@field duration number|nil

---@class bomarun.ReportModel  what a run did, rebuilt from its journal
---@field runbook {id: string, title: string, description: string|nil, decisions: string[], source: string|nil}|table
---@field run {id: string, dir: string, profile: string|nil, profile_path: string|nil, started: number, host: string, options: table, resumed_from: string|nil, strict: boolean|nil}|table
---@field entries bomarun.ReportEntry[]
---@field by_id table<string, bomarun.ReportEntry>
---@field bars bomarun.ReportBar[]
---@field cleanups bomarun.ReportCleanup[]
---@field captures table<string, any>
---@field capture_order string[]
---@field module_events bomarun.JournalEvent[]  events of a module's own (Step:event)
---@field warnings string[]
---@field complete boolean        it has a run_end event
---@field status string|nil       PASSED, FAILED, INTERRUPTED or INCOMPLETE
---@field exit_code integer|nil
---@field finished number|nil
---@field duration number|nil
---@field interrupted string|nil  the signal name
---@field aborted string|nil      the id whose failure stopped the run
---@field counts table<string, integer>  status -> entries
---@field process_groups bomarun.ReportProcessGroup[]  every proc_start, in order
---@field leftover_process_groups bomarun.ReportProcessGroup[]  started, never seen to end, and the run did not end cleanly
---@field evidence_error string|nil  the journal could not be written (the run exits 3)

---@class bomarun.ReportProcessGroup  a process group a step started (proc_start / proc_end events)
---@field pgid integer
---@field pid integer|nil
---@field argv0 string|nil
---@field step string|nil
---@field ended boolean
---@field code integer|nil
---@field signal string|nil

-- Text of a field a hand-edited or torn journal may lack or mistype.
local function field_text(v, default)
  if v == nil then return default end
  return tostring(v)
end

local function new_entry(kind, d, phase, bar)
  return {kind = kind, id = field_text(d.id, "?"), title = field_text(d.title, ""), phase = phase, bar = bar,
          mutation = d.mutation, status = "NOT_RUN", gates = {}, checks = {},
          outstanding = d.outstanding, deferred = d.deferred}
end

local function init_plan(m, plan)
  for _, u in ipairs(plan or {}) do
    if u.kind == "step" then
      local e = new_entry("step", u, u.phase)
      m.entries[#m.entries + 1] = e
      m.by_id[u.id] = e
    else
      local bar = {id = u.id, title = u.title, phase = u.phase, items = {}}
      m.bars[#m.bars + 1] = bar
      for _, it in ipairs(u.items or {}) do
        local e = new_entry("item", it, u.phase, u.id)
        m.entries[#m.entries + 1] = e
        m.by_id[it.id] = e
        bar.items[#bar.items + 1] = e
      end
    end
  end
end

local handlers = {}

function handlers.run_start(m, ev)
  m.runbook = ev.runbook
  m.run = {id = ev.run_id, dir = ev.dir, profile = ev.profile, profile_path = ev.profile_path,
           started = ev.t, host = ev.host, options = ev.options, resumed_from = ev.resumed_from,
           strict = ev.strict}
  init_plan(m, ev.plan)
end

function handlers.step_start(m, ev)
  local e = m.by_id[ev.id]
  if e then e.status = "RUNNING"; e.started = ev.t end
end

local function record(list_name)
  return function(m, ev)
    local e = m.by_id[ev.step]
    if e then
      local l = e[list_name]
      l[#l + 1] = {ok = ev.ok, message = ev.message, where = ev.where, t = ev.t}
    end
  end
end
handlers.gate = record("gates")
handlers.check = record("checks")

function handlers.poll(m, ev)
  local e = m.by_id[ev.step]
  if e then e.poll = {what = ev.what, attempt = ev.attempt, elapsed = ev.elapsed, value = ev.value, outcome = ev.outcome} end
end

function handlers.capture(m, ev)
  if ev.key == nil then return end
  m.captures[ev.key] = ev.value
  m.capture_order[#m.capture_order + 1] = ev.key
end

function handlers.cleanup_registered(m, ev)
  if math.type(ev.index) ~= "integer" then return end
  m.cleanups[ev.index] = {index = ev.index, step = ev.step, description = ev.description, status = "PENDING"}
end

-- Process groups (proc_start / proc_end, from bomarun.proc), by pgid.
local function process_group(m, pgid)
  local key = tostring(pgid)
  local g = m.pgroups[key]
  if not g then
    g = {pgid = pgid, ended = false}
    m.pgroups[key] = g
    m.process_groups[#m.process_groups + 1] = g
  end
  return g
end

function handlers.proc_start(m, ev)
  if ev.pgid == nil then return end
  local g = process_group(m, ev.pgid)
  g.pid, g.argv0, g.step, g.ended, g.code, g.signal = ev.pid, ev.argv0, ev.step, false, nil, nil
end

function handlers.proc_end(m, ev)
  if ev.pgid == nil then return end
  local g = process_group(m, ev.pgid)
  g.ended, g.code, g.signal = true, ev.code, ev.signal
  g.step = g.step or ev.step
end

function handlers.evidence_error(m, ev)
  m.evidence_error = tostring(ev.message)
  m.warnings[#m.warnings + 1] = m.evidence_error
end

function handlers.cleanup_end(m, ev)
  local c = m.cleanups[ev.index]
  if c then c.status = ev.status; c.error = ev.error; c.duration = ev.duration end
end

function handlers.step_end(m, ev)
  local e = m.by_id[ev.id]
  if not e then return end
  e.status = ev.status
  e.duration = ev.duration
  e.reason = ev.reason
  e.error = ev.error
  e.deferred = ev.deferred or e.deferred
  e.outstanding = ev.outstanding or e.outstanding
  e.log = ev.log
  e.resumed = ev.resumed
end

function handlers.interrupted(m, ev)
  m.interrupted = ev.signal or "interrupt"
end

function handlers.run_end(m, ev)
  m.complete = true
  m.status = ev.status
  m.exit_code = ev.exit_code
  m.finished = ev.t
  m.duration = ev.duration
end

-- 128 + the signal's number, as a shell reports a process it killed.
local INTERRUPT_EXIT = {SIGINT = 130, SIGTERM = 143, SIGHUP = 129, SIGQUIT = 131}

--- Compute the exit status the entries stand for.
---@param m bomarun.ReportModel
---@return integer exit_status  0, 1, 3 (the evidence could not be written), 130 (SIGINT) or 143 (SIGTERM)
function M.exit_code(m)
  if m.evidence_error then return 3 end
  if m.interrupted then return INTERRUPT_EXIT[m.interrupted] or 130 end
  for _, e in ipairs(m.entries) do
    if FAILING[e.status] then return 1 end
    if e.status == "OUTSTANDING" and m.run.strict then return 1 end
  end
  for _, c in ipairs(m.cleanups) do
    if c.status == "FAILED" then return 1 end
  end
  if m.aborted then return 1 end
  return 0
end

--- Build the report model from a list of events.
---@param events bomarun.JournalEvent[]
---@param warnings? string[]  reading problems to carry (the list is kept and added to)
---@return bomarun.ReportModel
function M.build(events, warnings)
  local m = {entries = {}, by_id = {}, bars = {}, cleanups = {}, captures = {}, capture_order = {},
             module_events = {}, process_groups = {}, pgroups = {}, leftover_process_groups = {},
             run = {}, runbook = {}, warnings = warnings or {}, complete = false}
  for _, ev in ipairs(events) do
    -- Fields the report computes with must have their types; anything
    -- else (a journal edited by hand) is dropped with a warning.
    if ev.t ~= nil and type(ev.t) ~= "number" then
      m.warnings[#m.warnings + 1] = string.format("event %s: its time is not a number", tostring(ev.seq))
      ev.t = nil
    end
    if ev.type == "step_end" and type(ev.status) ~= "string" then
      m.warnings[#m.warnings + 1] = string.format("event %s: step_end without a status", tostring(ev.seq))
      ev.status = "UNKNOWN"
    end
    local h = handlers[ev.type]
    if h then
      -- An event this code cannot read (a journal edited by hand, say) is
      -- a warning, never the end of the report.
      local ok, err = pcall(h, m, ev)
      if not ok then
        m.warnings[#m.warnings + 1] = string.format("event %s (%s) could not be read: %s", tostring(ev.seq),
          tostring(ev.type), tostring(err))
      end
    elseif ev.step and ev.type ~= "step_start" then
      -- A module's own events (Step:event): kept per step, in order.
      m.module_events[#m.module_events + 1] = ev
    end
    if ev.type == "step_end" and ev.aborts then m.aborted = ev.id end
  end
  m.pgroups = nil
  local last = events[#events]
  if not m.complete then
    m.warnings[#m.warnings + 1] = "the journal has no run_end event: the run was killed or crashed; " ..
      "this report is rebuilt from the events it did record"
    for _, e in ipairs(m.entries) do
      if e.status == "RUNNING" then
        e.status = "INTERRUPTED"
        e.reason = "the run ended while this was running"
      end
    end
    m.status = "INCOMPLETE"
    m.finished = last and last.t
    m.duration = m.run.started and last and (last.t - m.run.started) or nil
    m.exit_code = M.exit_code(m)
    if m.exit_code == 0 then m.exit_code = 1 end
    -- Nobody saw these end: they may still be running (a kill -9 cannot
    -- take its process groups with it).
    for _, g in ipairs(m.process_groups) do
      if not g.ended then m.leftover_process_groups[#m.leftover_process_groups + 1] = g end
    end
  end
  m.counts = {}
  for _, e in ipairs(m.entries) do
    m.counts[e.status] = (m.counts[e.status] or 0) + 1
  end
  return m
end

--- Build the model from a run directory's journal.
---@param dir string
---@return bomarun.ReportModel|nil model, string|nil err
function M.load(dir)
  local events, err, warnings = journal.read(dir .. "/events.jsonl")
  if not events then return nil, err end
  if #events == 0 or events[1].type ~= "run_start" then
    return nil, "report: " .. dir .. "/events.jsonl does not start with a run_start event"
  end
  return M.build(events, warnings)
end

-- Rendering -------------------------------------------------------------

local function fmt_duration(d)
  if not d then return "" end
  if d < 60 then return string.format("%.2fs", d) end
  return string.format("%dm%02ds", math.floor(d / 60), math.floor(d % 60))
end
M.fmt_duration = fmt_duration

local function iso(t)
  if not t then return "?" end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

local function first_line(s)
  if type(s) ~= "string" then return s end
  return s:match("^[^\n]*")
end
M.first_line = first_line

local function deferred_text(d)
  if type(d) ~= "table" then return tostring(d) end
  if d.decision then return d.decision .. ": " .. (d.reason or "") end
  return d.reason or ""
end
M.deferred_text = deferred_text

local function verdict(m)
  if m.status == "INCOMPLETE" then return "INCOMPLETE (killed; rebuilt from the journal)" end
  if m.evidence_error then return "FAILED (the evidence could not be written)" end
  if m.interrupted then return "INTERRUPTED" end
  if m.exit_code == 0 then return "PASSED" end
  return "FAILED"
end
M.verdict = verdict

--- The process groups left running, as one line ("" when there are none):
--- "Process groups still running when the journal ended: pgid N (argv0,
--- step ID), ...".
---@param m bomarun.ReportModel
---@return string
function M.leftover_text(m)
  local l = m.leftover_process_groups or {}
  if #l == 0 then return "" end
  local parts = {}
  for _, g in ipairs(l) do
    parts[#parts + 1] = string.format("pgid %s (%s, step %s)", tostring(g.pgid), tostring(g.argv0 or "?"),
      tostring(g.step or "?"))
  end
  return "Process groups still running when the journal ended: " .. table.concat(parts, ", ")
end

--- The acceptance summary an operator pastes into a ticket.
---@param m bomarun.ReportModel
---@return string
function M.summary_text(m)
  local out = {}
  local function add(s) out[#out + 1] = s end
  local rb = m.runbook or {}
  add(string.format("%s -- %s: %s (exit %d)", rb.id or "?", rb.title or "", verdict(m), m.exit_code or 1))
  add(string.format("Run %s on %s, started %s, took %s%s", m.run.id or "?", m.run.host or "?",
      iso(m.run.started), fmt_duration(m.duration), m.run.profile and (", profile " .. m.run.profile) or ""))
  if rb.decisions and #rb.decisions > 0 then add("Decisions: " .. table.concat(rb.decisions, ", ")) end
  if m.run.resumed_from then add("Resumed from " .. m.run.resumed_from) end
  add("")
  local phase
  add("Steps:")
  for _, e in ipairs(m.entries) do
    if e.kind == "step" then
      if e.phase ~= phase and e.phase then add("  [" .. e.phase .. "]") end
      phase = e.phase
      local line = string.format("  %-8s %-12s %s%s", e.id, e.status, e.title, e.mutation and " (mutation)" or "")
      if e.duration and e.status ~= "NOT_RUN" then line = line .. "  " .. fmt_duration(e.duration) end
      add(line)
      if e.reason and e.status ~= "PASS" then add("           " .. first_line(e.reason)) end
      for _, c in ipairs(e.checks) do
        if not c.ok then add("           check failed: " .. tostring(c.message)) end
      end
    end
  end
  for _, bar in ipairs(m.bars) do
    add("")
    add(string.format("ACCEPTANCE %s -- %s:", bar.id, bar.title))
    local n = {}
    for _, e in ipairs(bar.items) do
      n[e.status] = (n[e.status] or 0) + 1
      local note = ""
      if e.status == "DEFERRED" then note = " -- " .. deferred_text(e.deferred)
      elseif e.status == "OUTSTANDING" then note = " -- " .. tostring(e.outstanding)
      elseif e.reason and e.status ~= "PASS" then note = " -- " .. first_line(e.reason) end
      add(string.format("  %-10s %-12s %s%s", e.id, e.status, e.title, note))
    end
    local parts = {}
    for _, s in ipairs({"PASS", "FAIL", "DEFERRED", "OUTSTANDING", "NOT_RUN", "SKIPPED", "INTERRUPTED"}) do
      if n[s] then parts[#parts + 1] = n[s] .. " " .. s end
    end
    local accepted = not n.FAIL and not n.INTERRUPTED and not n.NOT_RUN and not n.SKIPPED
    add(string.format("  => %s (%s)", accepted and (n.OUTSTANDING and "ACCEPTED with outstanding items" or "ACCEPTED")
        or "NOT ACCEPTED", table.concat(parts, ", ")))
  end
  local left = {}
  for _, c in ipairs(m.cleanups) do
    if c.status ~= "DONE" and c.status ~= "DISCHARGED" then left[#left + 1] = c end
  end
  if #left > 0 then
    add("")
    add("Resources still in place (cleanup ledger; cleanups run only when a run fails or is interrupted):")
    for _, c in ipairs(left) do
      local status = c.status == "PENDING" and "IN_PLACE" or c.status
      add(string.format("  %-10s %s (registered by %s)%s", status, c.description, c.step,
          c.error and (": " .. first_line(c.error)) or ""))
    end
  end
  if #m.capture_order > 0 then
    add("")
    add("Captured:")
    local seen = {}
    for _, k in ipairs(m.capture_order) do
      if not seen[k] then
        seen[k] = true
        local v = m.captures[k]
        add(string.format("  %s = %s", k, type(v) == "table" and json.encode(v) or tostring(v)))
      end
    end
  end
  local leftover = M.leftover_text(m)
  if leftover ~= "" then
    add("")
    add(leftover)
  end
  for _, w in ipairs(m.warnings) do add("WARNING: " .. tostring(w)) end
  return json.escape_utf8(table.concat(out, "\n")) .. "\n"
end

local function xml(s)
  s = tostring(s or "")
  s = s:gsub("[%z\1-\8\11\12\14-\31]", "")
  return (s:gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;"}))
end

--- JUnit XML: a testcase per step, gate and acceptance item.  DEFERRED and
--- OUTSTANDING are skipped testcases carrying their reason.
---@param m bomarun.ReportModel
---@return string
function M.junit_text(m)
  local cases, failures, errors, skipped = {}, 0, 0, 0
  local rbid = (m.runbook and m.runbook.id) or "runbook"
  local function case(classname, name, time, body)
    cases[#cases + 1] = string.format('    <testcase classname="%s" name="%s" time="%.3f">%s</testcase>',
      xml(classname), xml(name), time or 0, body or "")
  end
  for _, e in ipairs(m.entries) do
    local body
    local reason = e.reason or ""
    if e.status == "FAIL" then
      failures = failures + 1
      local detail = {}
      for _, c in ipairs(e.checks) do if not c.ok then detail[#detail + 1] = "check failed: " .. tostring(c.message) end end
      if e.error then detail[#detail + 1] = e.error end
      body = string.format('<failure message="%s">%s</failure>', xml(first_line(reason)), xml(table.concat(detail, "\n")))
    elseif e.status == "INTERRUPTED" then
      errors = errors + 1
      body = string.format('<error message="%s"/>', xml(reason ~= "" and reason or "interrupted"))
    elseif e.status == "DEFERRED" then
      skipped = skipped + 1
      body = string.format('<skipped message="%s"/>', xml("DEFERRED: " .. deferred_text(e.deferred)))
    elseif e.status == "OUTSTANDING" then
      skipped = skipped + 1
      body = string.format('<skipped message="%s"/>', xml("OUTSTANDING: " .. tostring(e.outstanding)))
    elseif e.status == "SKIPPED" or e.status == "NOT_RUN" then
      skipped = skipped + 1
      body = string.format('<skipped message="%s"/>', xml(e.status .. (reason ~= "" and (": " .. reason) or "")))
    end
    local cls = rbid .. "." .. (e.bar or e.phase or "steps")
    case(cls, e.id .. " " .. e.title, e.duration, body)
    for k, g in ipairs(e.gates) do
      local gbody
      if not g.ok then
        failures = failures + 1
        gbody = string.format('<failure message="%s"/>', xml("gate failed: " .. tostring(g.message)))
      end
      case(rbid .. "." .. e.id, string.format("gate %d: %s", k, tostring(g.message)), 0, gbody)
    end
  end
  local out = {
    '<?xml version="1.0" encoding="UTF-8"?>',
    string.format('<testsuites name="bomarun" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f">',
      #cases, failures, errors, skipped, m.duration or 0),
    string.format('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f" timestamp="%s">',
      xml(rbid .. ": " .. ((m.runbook and m.runbook.title) or "")), #cases, failures, errors, skipped,
      m.duration or 0, iso(m.run.started)),
  }
  for _, c in ipairs(cases) do out[#out + 1] = c end
  out[#out + 1] = "  </testsuite>"
  out[#out + 1] = "</testsuites>"
  return table.concat(out, "\n") .. "\n"
end

--- The JSON report.
---@param m bomarun.ReportModel
---@return string
function M.json_text(m)
  local entries = {}
  for _, e in ipairs(m.entries) do
    entries[#entries + 1] = {kind = e.kind, id = e.id, title = e.title, phase = e.phase, bar = e.bar,
      mutation = e.mutation, status = e.status, duration = e.duration, reason = e.reason, error = e.error,
      gates = json.array(e.gates), checks = json.array(e.checks), deferred = e.deferred,
      outstanding = e.outstanding, poll = e.poll, log = e.log, resumed = e.resumed}
  end
  local cleanups = {}
  for _, c in ipairs(m.cleanups) do cleanups[#cleanups + 1] = c end
  local leftover = {}
  for _, g in ipairs(m.leftover_process_groups or {}) do
    leftover[#leftover + 1] = {pgid = g.pgid, pid = g.pid, argv0 = g.argv0, step = g.step}
  end
  -- Sanitized: a report is never lost to a value JSON cannot hold.
  local doc = json.sanitize({
    runbook = m.runbook, run = m.run, status = verdict(m), exit_code = m.exit_code,
    complete = m.complete, interrupted = m.interrupted, duration = m.duration,
    counts = m.counts, entries = json.array(entries), cleanups = json.array(cleanups),
    captures = json.object(m.captures), warnings = json.array(m.warnings),
    events = json.array(m.module_events), leftover_process_groups = json.array(leftover),
    evidence_error = m.evidence_error,
  })
  return json.encode(doc, {indent = 2}) .. "\n"
end

-- Write a file whole or not at all: into PATH.tmp, every write and the
-- close checked, then renamed over PATH (a full disk leaves the old report,
-- or none, never a cut one).
local function write(path, text)
  local tmp = path .. ".tmp"
  local function failed(err)
    os.remove(tmp)
    err = tostring(err)
    if err:sub(1, #tmp + 2) == tmp .. ": " then err = err:sub(#tmp + 3) end
    return nil, "report: cannot write " .. path .. ": " .. err
  end
  local f, err = io.open(tmp, "wb")
  if not f then return failed(err) end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok then return failed(werr) end
  if not cok then return failed(cerr) end
  local rok, rerr = os.rename(tmp, path)
  if not rok then return failed(rerr) end
  return true
end

local REPORTS = {{"report.json", "json_text"}, {"junit.xml", "junit_text"}, {"summary.txt", "summary_text"}}

--- Write report.json, junit.xml and summary.txt into dir, each on its own:
--- one that cannot be built or written does not stop the others.  Returns
--- true, or nil and one line per report that failed.
---@param dir string
---@param m bomarun.ReportModel
---@return true|nil ok, string|nil err
function M.write_all(dir, m)
  local errs = {}
  for _, r in ipairs(REPORTS) do
    local path = dir .. "/" .. r[1]
    local ok, text = pcall(M[r[2]], m)
    local wok, werr
    if ok then
      wok, werr = write(path, text)
    else
      werr = "report: cannot build " .. path .. ": " .. tostring(text)
    end
    if not wok then errs[#errs + 1] = werr end
  end
  if #errs > 0 then return nil, table.concat(errs, "\n") end
  return true
end

--- `bomarun report RUN_DIR`: rebuild every report from events.jsonl.
---@param dir string
---@return integer exit_status  the run's own; 2 when the journal cannot be read, 3 when a report cannot be written
function M.cli(dir)
  dir = dir:gsub("/+$", "")
  local m, err = M.load(dir)
  if not m then
    io.stderr:write("bomarun: " .. json.escape_utf8(err) .. "\n")
    return 2
  end
  local ok, werr = M.write_all(dir, m)
  local sok, summary = pcall(M.summary_text, m)
  io.stdout:write(sok and summary or ("(no summary: " .. tostring(summary) .. ")\n"))
  if not ok then
    for line in werr:gmatch("[^\n]+") do io.stderr:write("bomarun: " .. json.escape_utf8(line) .. "\n") end
    return 3
  end
  io.stdout:write("reports rebuilt from the journal: " .. dir .. "/{report.json,junit.xml,summary.txt}\n")
  return m.exit_code or 1
end

return M

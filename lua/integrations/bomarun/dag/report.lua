--- bomarun.dag's report: the record of each part and component, the report
--- g:run returns (built from a finished executor), and its rendering as
--- lines (dag.summary_lines, dag.report_lines).
local critical_path = require "bomarun.dag.critical_path"
local json = require "bomarun.json"
local util = require "bomarun.dag.util"

local EPS, fmt_s, first_line = util.EPS, util.fmt_s, util.first_line

local M = {}

--- The record of one part (nil for a part the component does not have).
---@param j bomarun.DagJob|nil
---@return bomarun.DagPartReport|nil
function M.part(j)
  if not j then return nil end
  local status = j.state
  if status == "waiting" or status == "ready" then status = "skipped" end
  return {status = status, start = j.start, finish = j.finish,
          duration = j.start and j.finish and (j.finish - j.start) or nil,
          waited = j.start and j.ready_at and (j.start - j.ready_at) or nil,
          reason = j.reason, error = j.error}
end

--- The record of one component: its main part's times, its pre part under
--- `pre`, and the worst status of the two (failed, cancelled, skipped, in
--- that order) with the reason or error that goes with it.
---@param cs table  the component's state in the scheduler
---@return bomarun.DagComponentReport
function M.component(cs)
  local main, pre = cs.parts.main, cs.parts.pre
  local rec = M.part(main)
  rec.name = cs.name
  rec.value, rec.traceback = main.value, main.traceback
  rec.done = cs.done
  if pre then rec.pre = M.part(pre) end
  local status = "ok"
  for _, want in ipairs{"failed", "cancelled", "skipped"} do
    local j = M.part(main).status == want and main or (pre and M.part(pre).status == want and pre)
    if j then
      status = want
      if want == "failed" then
        rec.error, rec.traceback = j.error, j.traceback
        rec.reason = j == pre and "its pre part failed" or nil
      elseif cs.doomed and cs.doomed ~= cs.name then
        rec.reason = "depends on " .. cs.doom_why .. " '" .. cs.doomed .. "'"
      else
        rec.reason = j.reason
      end
      break
    end
  end
  rec.status = status
  return rec
end

-- The last finish and the sum of the durations of the parts that ran.
local function totals(jobs)
  local makespan, sum = 0, 0
  for _, job in ipairs(jobs) do
    if job.start and job.finish then
      sum = sum + (job.finish - job.start)
      if job.finish > makespan then makespan = job.finish end
    end
  end
  return makespan, sum
end

-- Component names by the start of their first part (ties: insertion order).
local function by_start(list, components)
  local rows = {}
  for _, c in ipairs(list) do
    local rec = components[c.name]
    local s = rec.start
    if rec.pre and rec.pre.start and (s == nil or rec.pre.start < s) then s = rec.pre.start end
    if s then rows[#rows + 1] = {c.name, s, c.index} end
  end
  table.sort(rows, function(a, b)
    if math.abs(a[2] - b[2]) > EPS then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  local out = {}
  for k, e in ipairs(rows) do out[k] = e[1] end
  return out
end

--- The report of a finished run.  `ex` is the executor: its graph, mode,
--- concurrency, jobs and the component records it journaled (ex.emitted,
--- one per component).
---@param ex bomarun.DagExecutor
---@return bomarun.DagReport
function M.build(ex)
  local g = ex.graph
  local report = {graph = g.name, mode = ex.mode, concurrency = ex.concurrency, started = ex.started_wall,
                  components = {}, failed = {}, cancelled = {}, skipped = {},
                  assumed = json.array(g:assumed_done()), interrupted = ex.interrupted}
  local all_ok = true
  for _, c in ipairs(g.list) do
    local rec = ex.emitted[c.name]
    report.components[c.name] = rec
    if rec.status ~= "ok" then
      all_ok = false
      local list = report[rec.status]
      if list then list[#list + 1] = c.name end
    end
  end
  report.order = by_start(g.list, report.components)
  report.ok = all_ok and not ex.interrupted
  report.makespan, report.sum_durations = totals(ex.jobs)
  report.parallelism = report.makespan > 0 and report.sum_durations / report.makespan or 0
  local cp, cpl = critical_path.longest(ex, function(j)
    return j.start and j.finish and (j.finish - j.start) or nil
  end)
  report.critical_path, report.critical_path_length = json.array(cp), cpl
  for _, k in ipairs{"order", "failed", "cancelled", "skipped"} do report[k] = json.array(report[k]) end
  return report
end

--- How many components have each status.
---@param report bomarun.DagReport
---@return table<string, integer> counts, integer total
function M.counts(report)
  local counts, n = {}, 0
  for _, rec in pairs(report.components) do
    counts[rec.status] = (counts[rec.status] or 0) + 1
    n = n + 1
  end
  return counts, n
end

--- The summary of a report: counts, makespan, parallelism, critical path.
---@param report bomarun.DagReport
---@return string[]
function M.summary_lines(report)
  local counts, n = M.counts(report)
  local parts = {}
  for _, s in ipairs{"ok", "failed", "cancelled", "skipped"} do
    if counts[s] then parts[#parts + 1] = counts[s] .. " " .. s end
  end
  local out = {string.format("dag %s: %s: %d components: %s; makespan %s s, parallelism %.2fx", report.graph,
    report.ok and "OK" or (report.interrupted and "INTERRUPTED" or "FAILED"), n,
    #parts > 0 and table.concat(parts, ", ") or "nothing to run",
    fmt_s(report.makespan), report.parallelism)}
  out[#out + 1] = string.format("dag %s: critical path %s s: %s", report.graph, fmt_s(report.critical_path_length),
    table.concat(report.critical_path, " -> "))
  for _, name in ipairs(report.failed) do
    local rec = report.components[name]
    out[#out + 1] = string.format("dag %s: failed: %s: %s", report.graph, name, first_line(rec.error or rec.reason or "?"))
  end
  return out
end

-- The names in report.order, then those that never started, sorted.
local function schedule_names(report)
  local names, seen = {}, {}
  for _, n in ipairs(report.order) do
    names[#names + 1] = n
    seen[n] = true
  end
  local rest = {}
  for n in pairs(report.components) do
    if not seen[n] then rest[#rest + 1] = n end
  end
  table.sort(rest)
  for _, n in ipairs(rest) do names[#names + 1] = n end
  return names
end

--- The schedule of a report as lines (one per component, by start time,
--- then those that never started), followed by the summary.
---@param report bomarun.DagReport
---@return string[]
function M.report_lines(report)
  local names = schedule_names(report)
  local width = 9
  for _, n in ipairs(names) do width = math.max(width, #n + 4) end
  local out = {string.format("  %-" .. width .. "s %-9s %9s %9s %9s %9s", "component", "status", "start", "finish",
    "duration", "waited")}
  local function row(label, r)
    local line = string.format("  %-" .. width .. "s %-9s %9s %9s %9s %9s", label, r.status, fmt_s(r.start),
      fmt_s(r.finish), fmt_s(r.duration), fmt_s(r.waited))
    if r.status ~= "ok" and (r.reason or r.error) then line = line .. "  " .. first_line(r.error or r.reason) end
    out[#out + 1] = line
  end
  for _, n in ipairs(names) do
    local r = report.components[n]
    row(n, r)
    if r.pre then row("  pre", r.pre) end
  end
  for _, l in ipairs(M.summary_lines(report)) do out[#out + 1] = l end
  return out
end

return M

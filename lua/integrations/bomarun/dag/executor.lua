--- bomarun.dag's executor: one run of a graph on real tasks.  Graph:run
--- creates an Executor and calls ex:run().  The Executor is a Scheduler
--- (bomarun.dag.sched: readiness, ranks, admission, slots and resource
--- caps taken and given back) driven by the clock and by the parts' tasks.
---
--- The calling task is the coordinator: it starts the jobs that can start,
--- then waits on a doorbell that a part's task rings when it ends (it posts
--- its outcome to `done_queue` first).  Each part runs in its own task, a
--- child of the coordinator, so cancelling it (fail-fast, Ctrl-C) ends its
--- waits and kills the process groups of the subprocesses it started.
--- Every slot and resource a job takes is given back on every path that
--- ends it: its own end (ok, failed, cancelled), or the run's end when it
--- did not stop in time or the run itself was cancelled.
local json = require "bomarun.json"
local log = require "bomarun.log"
local report = require "bomarun.dag.report"
local sched = require "bomarun.dag.sched"
local step_ctx = require "bomarun.step"
local task = require "bomarun.task"
local util = require "bomarun.dag.util"

local fmt_s = util.fmt_s

local M = {}

-- The context a part's function gets -------------------------------------------

local Context = {}
Context.__index = Context

--- Write a line with the component's prefix to the console and step log.
---@param fmt string  a string.format format (or the line itself)
---@param ... any
function Context:log(fmt, ...)
  local line = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  self._say(self.prefix .. " " .. line)
end

-- A unique first value: the part's own results came back (not the bound's expiry).
local RESULTS = setmetatable({}, {__name = "bomarun.dag.results"})

-- Call the part's function, bounded by its timeout.  Only the bound's own
-- expiry becomes "<label> timed out after N s", TIMEOUT: whatever the part
-- returns (its own nil, msg, "TIMEOUT" or "DEADLINE" included) comes back
-- as it is, marked by RESULTS so the two are never confused.
local function call_part(job, ctx)
  if not job.timeout then return job.fn(ctx) end
  local r = table.pack(task.deadline(job.timeout, function() return RESULTS, table.pack(job.fn(ctx)) end))
  if r[1] == RESULTS then return table.unpack(r[2], 1, r[2].n) end
  return nil, string.format("%s timed out after %g s", job.label, job.timeout), "TIMEOUT"
end

-- The outcome of a part from xpcall's results: "ok", or "failed" /
-- "cancelled" with the error.
local function outcome_of(job, r)
  if r[1] then
    if (r[2] == nil or r[2] == false) and r.n >= 3 and r[3] ~= nil then return "failed", tostring(r[3]) end
    job.value = r[2]
    return "ok"
  end
  -- Cancelled means this part's task was cancelled (fail-fast, Ctrl-C);
  -- a cancellation error it merely passed on is its own failure.
  return (job.cancel_reason or task.current():cancelled()) and "cancelled" or "failed", r[2]
end

local function terminal(j)
  return j == nil or not (j.state == "waiting" or j.state == "ready" or j.state == "running")
end

-- The executor -------------------------------------------------------------------

---@class bomarun.DagExecutor: bomarun.DagScheduler
---@field graph bomarun.DagGraph
---@field mode "fail-fast"|"continue"
---@field concurrency integer|nil
---@field cancel_wait number
---@field emitted table<string, bomarun.DagComponentReport>  the components journaled so far
---@field interrupted string|nil   why the run itself was cancelled
local Executor = setmetatable({}, {__index = sched.Scheduler})
Executor.__index = Executor
M.Executor = Executor

--- An executor for one run of `g` (valid: check it first) with checked
--- options; the clock starts now.
---@param g bomarun.DagGraph
---@param opts {mode: "fail-fast"|"continue", concurrency?: integer, cancel_wait: number, quiet?: boolean}
---@return bomarun.DagExecutor
function M.new(g, opts)
  local self = sched.new(g, opts.concurrency, Executor)
  ---@cast self bomarun.DagExecutor
  self.graph, self.mode, self.concurrency, self.cancel_wait = g, opts.mode, opts.concurrency, opts.cancel_wait
  self.say = opts.quiet and log.to_step or log.info
  self.step = step_ctx.current()
  self.done_queue, self.emitted = {}, {}
  -- The doorbell: a ring while the coordinator is busy stays set until it looks.
  self.bell = task.event()
  self.t0 = task.now()
  self.started_wall = require("bomarun._host").time()
  return self
end

--- Seconds since the run began.
---@return number
function Executor:now()
  return task.now() - self.t0
end

--- Journal an event against the current step (nothing outside a step).
---@param ev table
function Executor:event(ev)
  if self.step then
    ev.graph = self.graph.name
    self.step:event(ev)
  end
end

-- The dag_start event and the opening lines.
function Executor:_announce()
  local g = self.graph
  local assumed = g:assumed_done()
  self:event({type = "dag_start", components = #g.list, mode = self.mode, concurrency = self.concurrency,
              caps = json.object(g.caps), assumed = json.array(assumed)})
  self.say(string.format("dag %s: %d components, mode %s, concurrency %s", g.name, #g.list, self.mode,
    self.concurrency and tostring(self.concurrency) or "unlimited"))
  if #assumed > 0 then self.say("dag " .. g.name .. ": assuming done (outside the subset): " .. table.concat(assumed, ", ")) end
end

--- Run the graph to its end.  Returns the report; re-raises the
--- cancellation if the calling task was cancelled, after cancelling every
--- running part and journaling what happened.
---@return bomarun.DagReport
function Executor:run()
  self:_announce()
  local ok, err = xpcall(self._drive, util.traceback, self)
  if not ok then
    -- The caller was cancelled (Ctrl-C, a step timeout) or something broke:
    -- cancel what runs; nothing may wait any more.
    self.interrupted = util.first_line(util.split_traceback(err))
    self:cancel_running(self.interrupted, task.cancel_code(err) or "CANCELLED")
  end
  self:_finish(ok)
  local r = self:_report()
  if not ok then error(err, 0) end
  return r
end

-- The coordinator's loop: start what can start (readiness, ranks, slots,
-- caps), wait for the doorbell, take the parts that ended.  Ends when
-- nothing runs, or when fail-fast's cancel_wait runs out.
function Executor:_drive()
  self:initial_ready(self:now())
  while true do
    if not self.stopping then
      local t = self:now()
      for _, job in ipairs(self:pick(t)) do self:start(job) end
    end
    if self.running == 0 then break end
    if #self.done_queue == 0 then
      local rung = self.bell:wait(self.stopping and math.max(0, self.stop_deadline - task.now()) or nil)
      self.bell:clear()
      if not rung and #self.done_queue == 0 then break end   -- cancel_wait ran out
    end
    local q = self.done_queue
    self.done_queue = {}
    for _, d in ipairs(q) do self:take(d) end
    self:after_failures()
  end
end

--- Start a job that pick admitted (its slot and resources taken): its own
--- task, a "started" line and a dag_component_start event.
---@param job bomarun.DagJob
function Executor:start(job)
  job.task = task.spawn_named("dag " .. job.label, self._run_part, self, job)
  local waited = job.start - job.ready_at
  self.say(string.format("[%s] started%s", job.label, waited >= 0.05 and string.format(" (waited %s s)", fmt_s(waited)) or ""))
  self:event({type = "dag_component_start", component = job.name, part = job.kind, start = job.start, waited = waited})
end

-- The body of a job's task.  Never raises: a cancellation that ends the
-- part's waits is caught and becomes its outcome, which goes to the
-- coordinator (who gives the slot and resources back).
function Executor:_run_part(job)
  job.began = true
  local ctx = setmetatable({name = job.name, part = job.kind, prefix = "[" .. job.label .. "]", _say = self.say},
    Context)
  local outcome, err = outcome_of(job, table.pack(xpcall(call_part, util.traceback, job, ctx)))
  self:_post(job, outcome, err)
  self.bell:set()
end

-- Queue a job's end for the coordinator.
function Executor:_post(job, outcome, err)
  self.done_queue[#self.done_queue + 1] = {job = job, outcome = outcome, err = err, at = self:now()}
end

--- A job's end, as its task posted it: record the error or reason, give
--- its slot and resources back, release or doom what waits on its
--- component, log the end line, and journal the components now settled.
---@param d {job: bomarun.DagJob, outcome: string, err: any, at: number}
function Executor:take(d)
  local job = d.job
  if job.state ~= "running" then return end   -- already abandoned by the run's end
  if d.outcome == "failed" then
    job.error, job.traceback = util.split_traceback(d.err)
  elseif d.outcome == "cancelled" then
    job.reason = job.cancel_reason or tostring(d.err)
  end
  local touched = self:complete(job, d.outcome, d.at)
  self:_end_line(job)
  if d.outcome ~= "ok" and not self.first_failure then self.first_failure = job end
  for _, cs in ipairs(touched) do self:settle(cs) end
end

--- What a failure does beyond its own component.  "continue": nothing more
--- (complete has doomed its dependents; everything else goes on).
--- "fail-fast": at the first failure, start nothing more, cancel every
--- running part, and wait at most cancel_wait for them to end.
function Executor:after_failures()
  if self.mode == "fail-fast" and self.first_failure and not self.stopping then
    self.stopping = string.format("fail-fast: '%s' failed", self.first_failure.name)
    self.stop_deadline = task.now() + self.cancel_wait
    self:cancel_running(self.stopping)
  end
end

--- Cancel every running part (once each), with `reason` and `code`
--- (default "CANCELLED").  A part cancelled before its task first ran never
--- runs its body, so it could never report: its end is posted for it.
---@param reason string
---@param code? string
function Executor:cancel_running(reason, code)
  for _, job in ipairs(self.jobs) do
    if job.state == "running" and job.task and not job.cancel_reason then
      job.cancel_reason = reason
      job.task:cancel(reason, code or "CANCELLED")
      if not job.began then self:_post(job, "cancelled", reason) end
    end
  end
end

-- "[x] ok in 3.1 s", "[x] FAILED after ...", "[x] cancelled after ...".
function Executor:_end_line(job)
  local d = job.finish - job.start
  if job.state == "ok" then
    self.say(string.format("[%s] ok in %s s", job.label, fmt_s(d)))
  elseif job.state == "failed" then
    self.say(string.format("[%s] FAILED after %s s: %s", job.label, fmt_s(d), util.first_line(job.error)))
  else
    self.say(string.format("[%s] cancelled after %s s: %s", job.label, fmt_s(d), job.reason or "cancelled"))
  end
end

-- A job still running at the run's end did not stop within cancel_wait
-- (drove: the loop ended normally), or the run itself was cancelled: it
-- counts as cancelled, gives back what it holds, and its task is
-- cancelled (again).
function Executor:_abandon(job, t_end, drove)
  job.state = "cancelled"
  job.finish = t_end
  job.reason = job.cancel_reason and (job.cancel_reason .. (drove and
    string.format("; did not stop within %g s", self.cancel_wait) or "")) or self.interrupted or "cancelled"
  self:give_back(job)
  if job.task then job.task:cancel(job.reason) end
  self:_end_line(job)
end

-- After the loop: abandon what still runs, skip what never started, and
-- doom every component that cannot complete, so its dependents say why.
function Executor:_finish(drove)
  local t_end = self:now()
  for _, job in ipairs(self.jobs) do
    if job.state == "running" then
      self:_abandon(job, t_end, drove)
    elseif job.state == "waiting" or job.state == "ready" then
      job.state = "skipped"
      job.reason = self.interrupted and ("not started: " .. self.interrupted)
        or self.stopping and ("not started: " .. self.stopping) or "never became ready"
    end
  end
  local touched = {}
  for _, job in ipairs(self.jobs) do
    if job.state ~= "ok" and job.state ~= "skipped" and not job.cs.doomed then
      self:doom(job.cs, job.name, job.state, touched)
    end
  end
end

--- Journal and log a component once all its parts have ended (or, with
--- `force`, now, at the run's end); once per component.
---@param cs table  the component's state
---@param force? boolean
function Executor:settle(cs, force)
  if self.emitted[cs.name] then return end
  if not force and not (terminal(cs.parts.main) and terminal(cs.parts.pre)) then return end
  local rec = report.component(cs)
  self.emitted[cs.name] = rec
  if rec.status == "skipped" then self.say(string.format("[%s] skipped: %s", cs.name, rec.reason or "not started")) end
  self:event({type = "dag_component", component = cs.name, status = rec.status, start = rec.start, finish = rec.finish,
              duration = rec.duration, waited = rec.waited, done = rec.done, reason = rec.reason, error = rec.error,
              pre = rec.pre})
end

-- Settle every component, build the report, journal dag_report and log
-- the summary.
function Executor:_report()
  for _, c in ipairs(self.graph.list) do self:settle(self.comps[c.name], true) end
  local r = report.build(self)
  local counts = report.counts(r)
  self:event({type = "dag_report", ok = r.ok, mode = self.mode, concurrency = self.concurrency, makespan = r.makespan,
              parallelism = r.parallelism, sum_durations = r.sum_durations, critical_path = r.critical_path,
              critical_path_length = r.critical_path_length, counts = json.object(counts), failed = r.failed,
              cancelled = r.cancelled, skipped = r.skipped, assumed = r.assumed, interrupted = self.interrupted})
  for _, l in ipairs(report.summary_lines(r)) do self.say(l) end
  return r
end

return M

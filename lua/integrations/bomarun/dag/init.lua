--- Dependency-graph executor: run components as soon as their dependencies
--- are done, under a global concurrency limit and named resource caps, with
--- the critical path served first.
---
---   local dag = require "bomarun.dag"
---   local g = dag.new{caps = {apt = 1, ["k8s-api"] = 6}}
---   g:add{name = "keystone", depends_on = {"pxc"}, resources = {["k8s-api"] = 1},
---         run = fn, pre = fn2, pre_depends_on = {"memcached"}}
---   local report = g:run{concurrency = 8, mode = "fail-fast"}  -- or "continue"
---   -- report.ok, report.components[name] = {status=, start=, finish=, duration=, waited=}
---   -- report.critical_path = {names...}, report.makespan, report.parallelism
---
--- Scheduling, in short:
--- * A component has a main part (`run`) and optionally a `pre` part.  Each
---   part is a *job*: it becomes ready when its own dependencies are done
---   (`depends_on` for the main part, `pre_depends_on` for the pre part) and
---   starts as soon as a concurrency slot and all its resources are free.
---   There are no wave barriers.  A component is done when all its parts are.
--- * Ready jobs are served in order of their longest remaining path (own
---   estimate plus the longest chain of work that waits on it), so the
---   critical path is never starved.  A job that cannot get its resources
---   reserves them: lower-ranked jobs that need any of those resources wait,
---   jobs that need none of them go ahead.
--- * A job takes all its resources at once, only when all are free (no
---   hold-and-wait, so no deadlock), in one fixed global order (sorted by
---   name), and gives them back when its function returns, raises or is
---   cancelled.
--- * `pre` holds `pre_resources` (none by default), never the main part's
---   `resources`: the two parts do different work and run concurrently.
--- * Each part runs in its own named task, a child of the task that called
---   g:run, so cancelling it (fail-fast, Ctrl-C) ends its waits and kills the
---   process groups of the subprocesses it started.
---
--- The parts, each in its own file in this folder:
---   util.lua           argument checks, resource lists, formatting
---   graph.lua          the Graph: dag.new, g:add, g:validate, g:subset
---   sched.lua          the Scheduler: jobs, ranks, readiness, admission, caps
---   critical_path.lua  the longest chain of parts by a weight
---   plan.lua           waves, critical path by estimates, simulation, plan lines
---   executor.lua       the Executor (a Scheduler on real tasks) that g:run creates
---   report.lua         the report, dag.summary_lines, dag.report_lines
local executor = require "bomarun.dag.executor"
local graph = require "bomarun.dag.graph"
local plan = require "bomarun.dag.plan"
local report = require "bomarun.dag.report"
local task = require "bomarun.task"
local util = require "bomarun.dag.util"

local fail, is_count = util.fail, util.is_count

local M = {}

---@class bomarun.DagResource
---@field name string
---@field count integer

---@class bomarun.DagComponentSpec
---@field name string                 unique name
---@field run fun(c: bomarun.DagContext): any  the main part (any runbook code)
---@field depends_on? string[]        components that must be done before `run` starts
---@field resources? table<string, integer>|string[]  resources `run` holds while it runs ({"apt"} means {apt = 1})
---@field pre? fun(c: bomarun.DagContext): any  a second part, started when its own `pre_depends_on` are done
---@field pre_depends_on? string[]    what `pre` waits for (default: the same as depends_on)
---@field pre_resources? table<string, integer>|string[]  resources `pre` holds (default none)
---@field estimate? number            expected seconds of `run` (ranks the critical path; plan mode)
---@field pre_estimate? number        expected seconds of `pre`
---@field timeout? number           seconds each part may run; then it is cancelled and fails (TIMEOUT)
---@field description? string

---@class bomarun.DagContext
---@field name string                 the component's name
---@field part "main"|"pre"
---@field prefix string               "[name]" or "[name:pre]": give it to proc.run{prefix = c.prefix}
---@field log fun(self: bomarun.DagContext, fmt: string, ...)  a line with the prefix, to the console and step log

---@class bomarun.DagPartReport
---@field status "ok"|"failed"|"cancelled"|"skipped"
---@field start? number      seconds after the run began
---@field finish? number
---@field duration? number
---@field waited? number     seconds between ready (dependencies done) and start (slot and resources)
---@field reason? string
---@field error? string

---@class bomarun.DagComponentReport: bomarun.DagPartReport
---@field name string
---@field done? number       when the component was complete (all its parts), seconds after the run began
---@field value any          what `run` returned (not journaled)
---@field traceback? string
---@field pre? bomarun.DagPartReport

---@class bomarun.DagReport
---@field ok boolean
---@field graph string
---@field mode string
---@field concurrency integer|nil
---@field started number                       wall-clock time (epoch seconds) the run began
---@field makespan number                      seconds from the start of the run to the last finish
---@field parallelism number                   sum of part durations / makespan
---@field sum_durations number
---@field critical_path string[]               the longest chain of parts by measured duration ("x:pre" for a pre part)
---@field critical_path_length number
---@field components table<string, bomarun.DagComponentReport>
---@field order string[]                       component names by start time
---@field failed string[]
---@field cancelled string[]
---@field skipped string[]
---@field assumed string[]                     outside the subset, taken as done
---@field interrupted string|nil               why the run itself was cancelled

---@type bomarun.DagGraph
local Graph = graph.Graph

-- dag.new{caps =, name =, concurrency =, mode =} (documented in graph.lua).
M.new = graph.new

-- Planning ------------------------------------------------------------------------

--- The dependency levels: wave 1 holds the parts that depend on nothing,
--- wave k those whose dependencies are all done by wave k - 1.  Pre parts
--- appear as "name:pre".  (A run does not wait for waves: each part starts
--- as soon as its own dependencies are done.)
---@return string[][]
function Graph:waves()
  graph.order(self, 2)
  return plan.waves(self)
end

--- The critical path by estimates, ignoring caps: the names on it and its
--- length in seconds.  Parts without an estimate count as the mean of the
--- given estimates (1 each when there are none).
---@return string[] names, number length
function Graph:critical_path()
  graph.order(self, 2)
  return plan.critical_path(self)
end

--- Simulate a run with the estimates as durations: the same scheduler
--- (readiness, ranks, caps, concurrency) on a virtual clock.  Returns
--- {makespan =, components = {name = {start =, finish =, pre = {...}}}}.
---@param opts? {concurrency?: integer}
---@return {makespan: number, components: table<string, table>}
function Graph:simulate(opts)
  opts = opts or {}
  local concurrency = opts.concurrency or self.defaults.concurrency
  if concurrency ~= nil and not is_count(concurrency) then fail("g:simulate: concurrency must be an integer >= 1", 2) end
  graph.order(self, 2)
  return plan.simulate(self, concurrency)
end

--- Lines describing the graph for plan mode (a runbook step can pass
--- `detail = g`): components with their dependencies and resources, the
--- waves, and, when estimates are given, the critical path and the
--- simulated makespan with the caps.  Raises if the graph is invalid.
---@return string[]
function Graph:plan_lines()
  graph.order(self, 2)
  return plan.plan_lines(self)
end

-- Running -------------------------------------------------------------------------

local RUN_KEYS = util.set_of{"concurrency", "mode", "quiet", "cancel_wait"}

-- g:run's options, checked, with the graph's defaults filled in.  Raises
-- at the caller of g:run.
local function run_options(self, opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("g:run expects a table of options", 3) end
  util.check_keys(opts, RUN_KEYS, "g:run", 3)
  local mode = opts.mode or self.defaults.mode or "fail-fast"
  if not util.MODES[mode] then
    fail(string.format("g:run: unknown mode '%s' (expected \"fail-fast\" or \"continue\")", tostring(mode)), 3)
  end
  local concurrency = opts.concurrency or self.defaults.concurrency
  if concurrency ~= nil and not is_count(concurrency) then fail("g:run: concurrency must be an integer >= 1", 3) end
  local cancel_wait = opts.cancel_wait or 10
  if type(cancel_wait) ~= "number" or cancel_wait < 0 then fail("g:run: cancel_wait must be a number >= 0", 3) end
  return {mode = mode, concurrency = concurrency, cancel_wait = cancel_wait, quiet = opts.quiet}
end

--- Run the graph; must be called from a task.  Returns the report (see
--- bomarun.DagReport); a failed component is data (report.ok is false),
--- not an error.  Raises on an invalid graph or options, and re-raises
--- the cancellation if the calling task is cancelled (Ctrl-C), after
--- cancelling every running part and journaling what happened.
---
--- opts.mode: "fail-fast" (default) cancels every running part at the
--- first failure and starts nothing more; "continue" finishes everything
--- that does not depend on a failure and skips what does.
--- opts.concurrency: the most parts running at once (default no limit).
--- opts.quiet: keep the start/end lines off the console (the step log
--- still gets them).  opts.cancel_wait: seconds to wait for cancelled
--- parts to end (default 10).
---@param opts? {concurrency?: integer, mode?: "fail-fast"|"continue", quiet?: boolean, cancel_wait?: number}
---@return bomarun.DagReport
function Graph:run(opts)
  local o = run_options(self, opts)
  if not task.current() then fail("g:run must be called from a task (a runbook body or a script)", 2) end
  graph.order(self, 2)
  return executor.new(self, o):run()
end

-- Reports -------------------------------------------------------------------------

-- dag.summary_lines(report) and dag.report_lines(report) (documented in report.lua).
M.summary_lines = report.summary_lines
M.report_lines = report.report_lines

return M

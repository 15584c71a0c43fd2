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
---   name), and gives them back when its function returns.
--- * `pre` holds `pre_resources` (none by default), never the main part's
---   `resources`: the two parts do different work and run concurrently.
--- * Each part runs in its own named task, a child of the task that called
---   g:run, so cancelling it (fail-fast, Ctrl-C) ends its waits and kills the
---   process groups of the subprocesses it started.
local json = require "bomarun.json"
local log = require "bomarun.log"
local task = require "bomarun.task"
local step_ctx = require "bomarun.step"

local M = {}

local MODES = {["fail-fast"] = true, continue = true}
local EPS = 1e-9

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

-- Argument checking --------------------------------------------------------

local function fail(msg, level)
  error("dag: " .. msg, (level or 1) + 1)
end

local function check_keys(t, allowed, what, level)
  for k in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      fail(string.format("%s: unknown field '%s' (expected %s)", what, tostring(k), table.concat(names, ", ")),
        level + 1)
    end
  end
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function is_count(v)
  return math.type(v) == "integer" and v >= 1
end

local function name_list(v, what, level)
  if v == nil then return {} end
  if type(v) ~= "table" then fail(what .. " must be a list of component names", level + 1) end
  local out, seen = {}, {}
  for k, n in pairs(v) do
    if math.type(k) ~= "integer" or type(n) ~= "string" or n == "" then
      fail(what .. " must be a list of component names", level + 1)
    end
  end
  for _, n in ipairs(v) do
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  return out
end

-- {apt = 1, ["k8s-api"] = 2} or {"apt", "containerd"} -> sorted {{name=, count=}}
local function resource_list(v, caps, what, level)
  if v == nil then return {} end
  if type(v) ~= "table" then fail(what .. " must be a table {name = count} or a list of names", level + 1) end
  local counts = {}
  for k, c in pairs(v) do
    local name, count = k, c
    if math.type(k) == "integer" then name, count = c, 1 end
    if type(name) ~= "string" or name == "" then
      fail(what .. " must be a table {name = count} or a list of names", level + 1)
    end
    if not is_count(count) then
      fail(string.format("%s: resource '%s' needs a count that is an integer >= 1, not %s", what, name,
        tostring(count)), level + 1)
    end
    if caps[name] == nil then
      fail(string.format("%s: resource '%s' has no cap (declare it: dag.new{caps = {[\"%s\"] = N}})", what, name,
        name), level + 1)
    end
    counts[name] = (counts[name] or 0) + count
    if counts[name] > caps[name] then
      fail(string.format("%s: needs %d of resource '%s' but its cap is %d, so it could never start", what,
        counts[name], name, caps[name]), level + 1)
    end
  end
  local out = {}
  for name, count in pairs(counts) do out[#out + 1] = {name = name, count = count} end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function fmt_s(x)
  if x == nil then return "-" end
  if x >= 100 then return string.format("%.0f", x) end
  if x >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

local function fmt_resources(list)
  local parts = {}
  for _, r in ipairs(list) do
    parts[#parts + 1] = r.count == 1 and r.name or (r.name .. "=" .. r.count)
  end
  return table.concat(parts, ", ")
end

-- The graph -----------------------------------------------------------------

---@class bomarun.DagGraph
---@field name string
---@field caps table<string, integer>
local Graph = {}
Graph.__index = Graph

--- A new, empty graph.  `caps` names the resources components may need and
--- how many holders each allows at once; `concurrency` and `mode` are the
--- defaults of g:run (and what plan mode's estimate uses); `name` labels
--- log lines and journal events (default "graph").
---@param opts? {caps?: table<string, integer>, name?: string, concurrency?: integer, mode?: "fail-fast"|"continue"}
---@return bomarun.DagGraph
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("dag.new expects a table of options", 2) end
  check_keys(opts, {caps = true, name = true, concurrency = true, mode = true}, "dag.new", 2)
  local caps = {}
  if opts.caps ~= nil and type(opts.caps) ~= "table" then fail("dag.new: caps must be a table {name = count}", 2) end
  for k, v in pairs(opts.caps or {}) do
    if type(k) ~= "string" or k == "" then fail("dag.new: caps must be a table {name = count}", 2) end
    if not is_count(v) then
      fail(string.format("dag.new: the cap of resource '%s' must be an integer >= 1, not %s", k, tostring(v)), 2)
    end
    caps[k] = v
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then fail("dag.new: name must be a string", 2) end
  if opts.concurrency ~= nil and not is_count(opts.concurrency) then
    fail("dag.new: concurrency must be an integer >= 1", 2)
  end
  if opts.mode ~= nil and not MODES[opts.mode] then
    fail(string.format("dag.new: unknown mode '%s' (expected \"fail-fast\" or \"continue\")", tostring(opts.mode)), 2)
  end
  return setmetatable({name = opts.name or "graph", caps = caps, list = {}, by_name = {}, assumed = {},
                       defaults = {concurrency = opts.concurrency, mode = opts.mode}}, Graph)
end

local ADD_KEYS = set_of{"name", "run", "depends_on", "resources", "pre", "pre_depends_on", "pre_resources",
                        "estimate", "pre_estimate", "description", "timeout"}

--- Add a component.  Raises on a duplicate name, a bad field, or a resource
--- without a cap or bigger than its cap.  Returns the graph.
---@param spec bomarun.DagComponentSpec
---@return bomarun.DagGraph
function Graph:add(spec)
  if type(spec) ~= "table" then fail("g:add expects a table {name = ..., run = function ... end}", 2) end
  local name = spec.name
  if type(name) ~= "string" or name == "" then fail("g:add: a component needs a name string", 2) end
  local what = "component '" .. name .. "'"
  check_keys(spec, ADD_KEYS, what, 2)
  if self.by_name[name] then fail("duplicate component name '" .. name .. "'", 2) end
  if self.assumed[name] then fail(what .. " is outside this subset (assumed done)", 2) end
  if type(spec.run) ~= "function" then fail(what .. " needs run = function(c) ... end", 2) end
  if spec.pre ~= nil and type(spec.pre) ~= "function" then fail(what .. ": pre must be a function", 2) end
  if spec.pre == nil and (spec.pre_depends_on ~= nil or spec.pre_resources ~= nil or spec.pre_estimate ~= nil) then
    fail(what .. ": pre_depends_on, pre_resources and pre_estimate need a pre function", 2)
  end
  for _, k in ipairs{"estimate", "pre_estimate"} do
    if spec[k] ~= nil and (type(spec[k]) ~= "number" or spec[k] < 0 or spec[k] ~= spec[k]) then
      fail(what .. ": " .. k .. " must be a number of seconds >= 0", 2)
    end
  end
  if spec.timeout ~= nil and (type(spec.timeout) ~= "number" or spec.timeout <= 0) then
    fail(what .. ": timeout must be a number of seconds > 0", 2)
  end
  if spec.description ~= nil and type(spec.description) ~= "string" then
    fail(what .. ": description must be a string", 2)
  end
  local depends_on = name_list(spec.depends_on, what .. ": depends_on", 2)
  local c = {
    name = name, index = #self.list + 1, run = spec.run, pre = spec.pre,
    depends_on = depends_on,
    pre_depends_on = spec.pre and (spec.pre_depends_on ~= nil
      and name_list(spec.pre_depends_on, what .. ": pre_depends_on", 2) or depends_on) or nil,
    resources = resource_list(spec.resources, self.caps, what, 2),
    pre_resources = spec.pre and resource_list(spec.pre_resources, self.caps, what .. " (pre)", 2) or nil,
    estimate = spec.estimate, pre_estimate = spec.pre_estimate, description = spec.description,
    timeout = spec.timeout,
  }
  self.list[#self.list + 1] = c
  self.by_name[name] = c
  self._checked = nil
  return self
end

--- The component names in the order they were added.
---@return string[]
function Graph:names()
  local out = {}
  for k, c in ipairs(self.list) do out[k] = c.name end
  return out
end

-- Every dependency of a component: depends_on, then pre_depends_on.
local function all_deps(c)
  local out, seen = {}, {}
  for _, list in ipairs{c.depends_on, c.pre_depends_on or {}} do
    for _, d in ipairs(list) do
      if not seen[d] then
        seen[d] = true
        out[#out + 1] = d
      end
    end
  end
  return out
end

-- Check unknown dependencies and cycles; return the components in a
-- topological order (dependencies first, otherwise in insertion order).
local function checked(self, level)
  if self._checked then return self._checked end
  level = (level or 1) + 1
  for _, c in ipairs(self.list) do
    for _, pair in ipairs{{c.depends_on, "depends on"}, {c.pre_depends_on or {}, "has a pre that depends on"}} do
      for _, d in ipairs(pair[1]) do
        if not self.by_name[d] and not self.assumed[d] then
          fail(string.format("component '%s' %s '%s', which is not in the graph", c.name, pair[2], d), level)
        end
      end
    end
  end
  -- Depth-first search; a back edge closes a cycle that we name in full.
  local colour, order, stack = {}, {}, {}
  local function visit(c)
    colour[c.name] = "grey"
    stack[#stack + 1] = c.name
    for _, d in ipairs(all_deps(c)) do
      local dc = self.by_name[d]
      if dc then
        if colour[d] == "grey" then
          local from = 1
          for k = 1, #stack do
            if stack[k] == d then from = k end
          end
          local cyc = table.move(stack, from, #stack, 1, {})
          cyc[#cyc + 1] = d
          return cyc
        elseif colour[d] == nil then
          local cyc = visit(dc)
          if cyc then return cyc end
        end
      end
    end
    stack[#stack] = nil
    colour[c.name] = "black"
    order[#order + 1] = c
  end
  for _, c in ipairs(self.list) do
    if colour[c.name] == nil then
      local cyc = visit(c)
      if cyc then fail("dependency cycle: " .. table.concat(cyc, " -> ") .. " (each depends on the next)", level) end
    end
  end
  self._checked = order
  return order
end

--- Check the graph: every dependency exists (or is assumed done by a
--- subset) and there is no cycle.  Raises with a message naming the
--- component or the whole cycle; returns the graph.  g:run, g:plan_lines
--- and g:subset check first.
---@return bomarun.DagGraph
function Graph:validate()
  checked(self, 2)
  return self
end

--- A graph of some components.  By default: the named ones plus everything
--- they depend on, transitively (depends_on and pre_depends_on), so it runs
--- on its own.  With only = true: just the named ones; whatever they depend
--- on outside the subset is assumed done (listed in report.assumed and
--- logged), so no gate waits for a component that will never run.
---@param spec {[integer]: string, only?: boolean}
---@return bomarun.DagGraph
function Graph:subset(spec)
  if type(spec) ~= "table" then fail("g:subset expects {\"name\", ..., only = false}", 2) end
  for k in pairs(spec) do
    if k ~= "only" and math.type(k) ~= "integer" then
      fail("g:subset: unknown field '" .. tostring(k) .. "' (expected names and only = boolean)", 2)
    end
  end
  checked(self, 2)
  local names = name_list({table.unpack(spec)}, "g:subset", 2)
  if #names == 0 then fail("g:subset: name at least one component", 2) end
  local want = {}
  for _, n in ipairs(names) do
    if not self.by_name[n] then
      if self.assumed[n] then fail("g:subset: component '" .. n .. "' is outside this graph's subset", 2) end
      fail("g:subset: no component named '" .. n .. "'", 2)
    end
    want[n] = true
  end
  if not spec.only then
    local function close(n)
      for _, d in ipairs(all_deps(self.by_name[n])) do
        if self.by_name[d] and not want[d] then
          want[d] = true
          close(d)
        end
      end
    end
    for _, n in ipairs(names) do close(n) end
  end
  local sub = setmetatable({name = self.name, caps = self.caps, list = {}, by_name = {}, assumed = {},
                            defaults = self.defaults}, Graph)
  for n in pairs(self.assumed) do sub.assumed[n] = true end
  for _, c in ipairs(self.list) do
    if want[c.name] then
      sub.list[#sub.list + 1] = c
      sub.by_name[c.name] = c
      for _, d in ipairs(all_deps(c)) do
        if not want[d] then sub.assumed[d] = true end
      end
    end
  end
  return sub
end

--- The names outside this subset that its components depend on (assumed
--- done), sorted.
---@return string[]
function Graph:assumed_done()
  local out = {}
  for n in pairs(self.assumed) do out[#out + 1] = n end
  table.sort(out)
  return out
end

-- Jobs: the runnable parts of the components --------------------------------

-- The default estimate of a part without one: the mean of the given
-- estimates, or 1 (unit weights: the longest chain by count) when none is.
local function default_estimate(list)
  local sum, n = 0, 0
  for _, c in ipairs(list) do
    if c.estimate then sum, n = sum + c.estimate, n + 1 end
    if c.pre and c.pre_estimate then sum, n = sum + c.pre_estimate, n + 1 end
  end
  return n > 0 and sum / n or 1
end

-- Build the jobs and the state the scheduler works on.  The same state
-- drives a real run and a simulation (g:simulate).
local function new_state(self, concurrency)
  local order = checked(self, 3)
  local dflt = default_estimate(self.list)
  local S = {jobs = {}, comps = {}, ready = {}, running = 0, limit = concurrency or math.huge,
             free = {}, dependents = {}, topo = order}
  for name, cap in pairs(self.caps) do S.free[name] = cap end
  for _, c in ipairs(self.list) do
    S.comps[c.name] = {c = c, name = c.name, parts = {}, remaining = 0}
    S.dependents[c.name] = {}
  end
  local function add_job(c, kind)
    local deps = {}
    for _, d in ipairs(kind == "main" and c.depends_on or c.pre_depends_on) do
      if not self.assumed[d] then deps[#deps + 1] = d end
    end
    local est = kind == "main" and c.estimate or c.pre_estimate
    local job = {cs = S.comps[c.name], kind = kind, name = c.name, label = kind == "pre" and (c.name .. ":pre") or c.name,
                 fn = kind == "main" and c.run or c.pre, deps = deps, missing = #deps,
                 res = kind == "main" and c.resources or c.pre_resources, est = est or dflt, timeout = c.timeout,
                 index = 2 * c.index - (kind == "pre" and 0 or 1), state = "waiting"}
    S.jobs[#S.jobs + 1] = job
    local cs = S.comps[c.name]
    cs.parts[kind] = job
    cs.remaining = cs.remaining + 1
    for _, d in ipairs(deps) do
      local list = S.dependents[d]
      list[#list + 1] = job
    end
  end
  for _, c in ipairs(self.list) do
    add_job(c, "main")
    if c.pre then add_job(c, "pre") end
  end
  -- Rank: own estimate plus the longest chain of jobs waiting on this
  -- component, computed dependents first (reverse topological order).
  for k = #order, 1, -1 do
    local c = order[k]
    local t = 0
    for _, j in ipairs(S.dependents[c.name]) do
      if j.rank > t then t = j.rank end
    end
    local cs = S.comps[c.name]
    for _, kind in ipairs{"main", "pre"} do
      local j = cs.parts[kind]
      if j then j.rank = j.est + t end
    end
  end
  return S
end

local function make_ready(S, job, now)
  job.state = "ready"
  job.ready_at = now
  S.ready[#S.ready + 1] = job
end

local function by_rank(a, b)
  if math.abs(a.rank - b.rank) > EPS then return a.rank > b.rank end
  return a.index < b.index
end

-- Start what can start now: ready jobs by rank, each when a slot and all
-- its resources are free and none of them is reserved by a higher-ranked
-- job still waiting.  Returns the jobs started (resources acquired).
local function pick(S, now)
  if #S.ready == 0 or S.running >= S.limit then return {} end
  table.sort(S.ready, by_rank)
  local started, left, reserved = {}, {}, {}
  for _, job in ipairs(S.ready) do
    local fits = S.running < S.limit
    if fits then
      for _, r in ipairs(job.res) do
        if reserved[r.name] or S.free[r.name] < r.count then fits = false end
      end
    end
    if fits then
      for _, r in ipairs(job.res) do S.free[r.name] = S.free[r.name] - r.count end   -- sorted: one global order
      S.running = S.running + 1
      job.state = "running"
      job.start = now
      started[#started + 1] = job
    else
      for _, r in ipairs(job.res) do reserved[r.name] = true end
      left[#left + 1] = job
    end
  end
  S.ready = left
  return started
end

local function remove_ready(S, job)
  for k, j in ipairs(S.ready) do
    if j == job then
      table.remove(S.ready, k)
      return
    end
  end
end

-- A component can no longer complete (a part failed, or something it
-- depends on did): skip its parts that have not started and, transitively,
-- everything that depends on it.  Running parts are left alone.
local function doom(S, cs, root, why, touched)
  if cs.doomed then return end
  cs.doomed, cs.doom_why = root, why
  touched[#touched + 1] = cs
  for _, kind in ipairs{"main", "pre"} do
    local j = cs.parts[kind]
    if j and (j.state == "waiting" or j.state == "ready") then
      if j.state == "ready" then remove_ready(S, j) end
      j.state = "skipped"
      j.reason = root == cs.name and ("its " .. (kind == "main" and "pre" or "main") .. " part " .. why)
        or ("depends on " .. why .. " '" .. root .. "'")
    end
  end
  for _, j in ipairs(S.dependents[cs.name]) do
    doom(S, j.cs, root, why, touched)
  end
end

-- A job ended: give its resources back, and either release what waited on
-- its component or doom what depended on it.  Returns the components whose
-- state changed.
local function complete(S, job, outcome, now)
  for _, r in ipairs(job.res) do S.free[r.name] = S.free[r.name] + r.count end
  S.running = S.running - 1
  job.state = outcome
  job.finish = now
  local cs, touched = job.cs, {job.cs}
  if outcome == "ok" then
    cs.remaining = cs.remaining - 1
    if cs.remaining == 0 and not cs.doomed then
      cs.done = now
      for _, j in ipairs(S.dependents[cs.name]) do
        j.missing = j.missing - 1
        if j.missing == 0 and j.state == "waiting" then make_ready(S, j, now) end
      end
    end
  else
    doom(S, cs, cs.name, outcome, touched)
  end
  return touched
end

local function initial_ready(S, now)
  for _, job in ipairs(S.jobs) do
    if job.missing == 0 then make_ready(S, job, now) end
  end
end

-- Longest path through the jobs by a weight (nil: the job is left out).
local function longest_path(S, weight)
  local best_end, pred, lp = {}, {}, {}
  local top, top_len = nil, -1
  for _, c in ipairs(S.topo) do
    local cs = S.comps[c.name]
    local cend, cjob = 0, nil
    for _, kind in ipairs{"pre", "main"} do
      local j = cs.parts[kind]
      local w = j and weight(j)
      if w then
        local base, from = 0, nil
        for _, d in ipairs(j.deps) do
          local e = best_end[d]
          if e and e.len > base + EPS then base, from = e.len, e.job end
        end
        lp[j] = base + w
        pred[j] = from
        if lp[j] > cend or cjob == nil then cend, cjob = lp[j], j end
        if lp[j] > top_len then top, top_len = j, lp[j] end
      end
    end
    if cjob then best_end[c.name] = {len = cend, job = cjob} end
  end
  local names = {}
  local j = top
  while j do
    table.insert(names, 1, j.label)
    j = pred[j]
  end
  return names, math.max(top_len, 0)
end

-- Plan: waves, estimates, simulation -----------------------------------------

--- The dependency levels: wave 1 holds the parts that depend on nothing,
--- wave k those whose dependencies are all done by wave k - 1.  Pre parts
--- appear as "name:pre".  (A run does not wait for waves: each part starts
--- as soon as its own dependencies are done.)
---@return string[][]
function Graph:waves()
  local S = new_state(self)
  local level, waves = {}, {}
  for _, c in ipairs(S.topo) do
    local cs = S.comps[c.name]
    local done_level = 0
    for _, kind in ipairs{"main", "pre"} do
      local j = cs.parts[kind]
      if j then
        local l = 1
        for _, d in ipairs(j.deps) do l = math.max(l, level[d] + 1) end
        waves[l] = waves[l] or {}
        table.insert(waves[l], j)
        done_level = math.max(done_level, l)
      end
    end
    level[c.name] = done_level
  end
  local out = {}
  for k = 1, #waves do
    table.sort(waves[k], function(a, b) return a.index < b.index end)
    out[k] = {}
    for i, j in ipairs(waves[k]) do out[k][i] = j.label end
  end
  return out
end

--- The critical path by estimates, ignoring caps: the names on it and its
--- length in seconds.  Parts without an estimate count as the mean of the
--- given estimates (1 each when there are none).
---@return string[] names, number length
function Graph:critical_path()
  local S = new_state(self)
  return longest_path(S, function(j) return j.est end)
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
  local S = new_state(self, concurrency)
  local now, running = 0, {}
  initial_ready(S, now)
  while true do
    for _, j in ipairs(pick(S, now)) do
      j.sim_end = now + j.est
      running[#running + 1] = j
    end
    if #running == 0 then break end
    local t = math.huge
    for _, j in ipairs(running) do t = math.min(t, j.sim_end) end
    now = t
    table.sort(running, function(a, b) return a.index < b.index end)
    local still = {}
    for _, j in ipairs(running) do
      if j.sim_end <= now + EPS then complete(S, j, "ok", now) else still[#still + 1] = j end
    end
    running = still
  end
  local comps, makespan = {}, 0
  for _, job in ipairs(S.jobs) do
    local rec = {start = job.start, finish = job.finish}
    if job.kind == "main" then
      comps[job.name] = comps[job.name] or {}
      comps[job.name].start, comps[job.name].finish = rec.start, rec.finish
    else
      comps[job.name] = comps[job.name] or {}
      comps[job.name].pre = rec
    end
    if job.finish and job.finish > makespan then makespan = job.finish end
  end
  return {makespan = makespan, components = comps}
end

local function has_estimates(self)
  for _, c in ipairs(self.list) do
    if c.estimate or c.pre_estimate then return true end
  end
  return false
end

--- Lines describing the graph for plan mode (a runbook step can pass
--- `detail = g`): components with their dependencies and resources, the
--- waves, and, when estimates are given, the critical path and the
--- simulated makespan with the caps.  Raises if the graph is invalid.
---@return string[]
function Graph:plan_lines()
  local S = new_state(self, self.defaults.concurrency)
  local out = {}
  local function add(s) out[#out + 1] = s end
  local edges = 0
  for _, c in ipairs(self.list) do edges = edges + #all_deps(c) end
  local caps = {}
  for n, v in pairs(self.caps) do caps[#caps + 1] = n .. "=" .. v end
  table.sort(caps)
  add(string.format("dag %s: %d components, %d edges%s", self.name, #self.list, edges,
    #caps > 0 and ("; caps " .. table.concat(caps, ", ")) or ""))
  local assumed = self:assumed_done()
  if #assumed > 0 then add("assumed done (outside the subset): " .. table.concat(assumed, ", ")) end
  local width = 4
  for _, c in ipairs(self.list) do width = math.max(width, #c.name + 4) end
  local est = has_estimates(self)
  for _, c in ipairs(S.topo) do
    local line = string.format("%-" .. width .. "s <- %s", c.name,
      #c.depends_on > 0 and table.concat(c.depends_on, ", ") or "(nothing)")
    if #c.resources > 0 then line = line .. "  [" .. fmt_resources(c.resources) .. "]" end
    if est and c.estimate then line = line .. "  ~" .. fmt_s(c.estimate) .. " s" end
    add(line)
    if c.pre then
      local pl = string.format("%-" .. width .. "s <- %s", "  pre", #c.pre_depends_on > 0
        and table.concat(c.pre_depends_on, ", ") or "(nothing)")
      if #c.pre_resources > 0 then pl = pl .. "  [" .. fmt_resources(c.pre_resources) .. "]" end
      if est and c.pre_estimate then pl = pl .. "  ~" .. fmt_s(c.pre_estimate) .. " s" end
      add(pl)
    end
  end
  add("waves (dependency levels; a run starts each part as soon as its own dependencies are done):")
  for k, w in ipairs(self:waves()) do
    add(string.format("  wave %d (%d): %s", k, #w, table.concat(w, ", ")))
  end
  if est then
    local names, len = self:critical_path()
    add(string.format("critical path (estimates, no caps): %s s: %s", fmt_s(len), table.concat(names, " -> ")))
    local sim = self:simulate()
    local conc = self.defaults.concurrency
    add(string.format("simulated makespan (caps%s): %s s", conc and (", concurrency " .. conc) or "",
      fmt_s(sim.makespan)))
  else
    local names = self:critical_path()
    add(string.format("longest chain: %d parts: %s", #names, table.concat(names, " -> ")))
  end
  return out
end

-- Running -------------------------------------------------------------------

local function first_line(s)
  s = tostring(s)
  return s:match("^[^\n]*")
end

local function split_traceback(err)
  if type(err) ~= "string" then return tostring(err), nil end
  local msg, tb = err:match("^(.-)\n(stack traceback:.*)$")
  return msg or err, tb
end

local function traceback(e)
  if type(e) == "string" then return debug.traceback(e, 2) end
  return e
end

local Context = {}
Context.__index = Context

--- Write a line with the component's prefix to the console and step log.
---@param fmt string  a string.format format (or the line itself)
---@param ... any
function Context:log(fmt, ...)
  local line = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  self._say(self.prefix .. " " .. line)
end

local RUN_KEYS = set_of{"concurrency", "mode", "quiet", "cancel_wait"}

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
  opts = opts or {}
  if type(opts) ~= "table" then fail("g:run expects a table of options", 2) end
  check_keys(opts, RUN_KEYS, "g:run", 2)
  local mode = opts.mode or self.defaults.mode or "fail-fast"
  if not MODES[mode] then
    fail(string.format("g:run: unknown mode '%s' (expected \"fail-fast\" or \"continue\")", tostring(mode)), 2)
  end
  local concurrency = opts.concurrency or self.defaults.concurrency
  if concurrency ~= nil and not is_count(concurrency) then fail("g:run: concurrency must be an integer >= 1", 2) end
  local cancel_wait = opts.cancel_wait or 10
  if type(cancel_wait) ~= "number" or cancel_wait < 0 then fail("g:run: cancel_wait must be a number >= 0", 2) end
  if not task.current() then fail("g:run must be called from a task (a runbook body or a script)", 2) end
  checked(self, 2)

  local step = step_ctx.current()
  local say = opts.quiet and log.to_step or log.info
  local S = new_state(self, concurrency)
  S.done_queue = {}
  local t0 = task.now()
  local started_wall = require("bomarun._host").time()
  local function now() return task.now() - t0 end
  local function event(ev)
    if step then
      ev.graph = self.name
      step:event(ev)
    end
  end
  local assumed = self:assumed_done()
  event({type = "dag_start", components = #self.list, mode = mode, concurrency = concurrency,
         caps = json.object(self.caps), assumed = json.array(assumed)})
  say(string.format("dag %s: %d components, mode %s, concurrency %s", self.name, #self.list, mode,
    concurrency and tostring(concurrency) or "unlimited"))
  if #assumed > 0 then say("dag " .. self.name .. ": assuming done (outside the subset): " .. table.concat(assumed, ", ")) end

  -- The doorbell: the coordinator waits on an event that a finished part
  -- sets; a ring while the coordinator is busy stays set until it looks.
  local bell = task.event()
  local function ring() bell:set() end
  local function wait_bell(seconds)
    local rung = bell:wait(seconds)
    bell:clear()
    return not rung   -- true: the time ran out
  end

  local function run_part(job)
    job.began = true
    local ctx = setmetatable({name = job.name, part = job.kind, prefix = "[" .. job.label .. "]", _say = say}, Context)
    local fn = job.fn
    if job.timeout then
      fn = function(c)
        local r = table.pack(task.timeout(job.timeout, job.fn, c))
        if r[1] == nil and r[3] == "TIMEOUT" then
          return nil, string.format("%s timed out after %g s", job.label, job.timeout), "TIMEOUT"
        end
        return table.unpack(r, 1, r.n)
      end
    end
    local r = table.pack(xpcall(fn, traceback, ctx))
    local outcome, err
    if r[1] then
      if (r[2] == nil or r[2] == false) and r.n >= 3 and r[3] ~= nil then
        outcome, err = "failed", tostring(r[3])
      else
        outcome = "ok"
        job.value = r[2]
      end
    else
      err = r[2]
      -- Cancelled means this part's task was cancelled (fail-fast, Ctrl-C);
      -- a cancellation error it merely passed on is its own failure.
      outcome = (job.cancel_reason or task.current():cancelled()) and "cancelled" or "failed"
    end
    S.done_queue[#S.done_queue + 1] = {job = job, outcome = outcome, err = err, at = now()}
    ring()
  end

  local emitted = {}
  local function part_record(j)
    if not j then return nil end
    local status = j.state
    if status == "waiting" or status == "ready" then status = "skipped" end
    return {status = status, start = j.start, finish = j.finish,
            duration = j.start and j.finish and (j.finish - j.start) or nil,
            waited = j.start and j.ready_at and (j.start - j.ready_at) or nil,
            reason = j.reason, error = j.error}
  end
  local function component_record(cs)
    local main, pre = cs.parts.main, cs.parts.pre
    local rec = part_record(main)
    rec.name = cs.name
    rec.value, rec.traceback = main.value, main.traceback
    rec.done = cs.done
    if pre then rec.pre = part_record(pre) end
    local status = "ok"
    for _, want in ipairs{"failed", "cancelled", "skipped"} do
      local j = part_record(main).status == want and main or (pre and part_record(pre).status == want and pre)
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
  local function terminal(j)
    return j == nil or not (j.state == "waiting" or j.state == "ready" or j.state == "running")
  end
  -- Journal and log a component once all its parts have ended.
  local function settle(cs, force)
    if emitted[cs.name] then return end
    if not force and not (terminal(cs.parts.main) and terminal(cs.parts.pre)) then return end
    local rec = component_record(cs)
    emitted[cs.name] = rec
    if rec.status == "skipped" then say(string.format("[%s] skipped: %s", cs.name, rec.reason or "not started")) end
    event({type = "dag_component", component = cs.name, status = rec.status, start = rec.start, finish = rec.finish,
           duration = rec.duration, waited = rec.waited, done = rec.done, reason = rec.reason, error = rec.error,
           pre = rec.pre})
  end

  local function start(job)
    job.task = task.spawn_named("dag " .. job.label, run_part, job)
    local waited = job.start - job.ready_at
    say(string.format("[%s] started%s", job.label, waited >= 0.05 and string.format(" (waited %s s)", fmt_s(waited)) or ""))
    event({type = "dag_component_start", component = job.name, part = job.kind, start = job.start, waited = waited})
  end

  local function part_end_line(job)
    local d = job.finish - job.start
    if job.state == "ok" then
      say(string.format("[%s] ok in %s s", job.label, fmt_s(d)))
    elseif job.state == "failed" then
      say(string.format("[%s] FAILED after %s s: %s", job.label, fmt_s(d), first_line(job.error)))
    else
      say(string.format("[%s] cancelled after %s s: %s", job.label, fmt_s(d), job.reason or "cancelled"))
    end
  end

  local function cancel_running(reason, code)
    for _, job in ipairs(S.jobs) do
      if job.state == "running" and job.task and not job.cancel_reason then
        job.cancel_reason = reason
        job.task:cancel(reason, code or "CANCELLED")
        -- A task cancelled before its first resume never runs its body, so
        -- it would never report: report for it.
        if not job.began then
          S.done_queue[#S.done_queue + 1] = {job = job, outcome = "cancelled", err = reason, at = now()}
        end
      end
    end
  end

  local function take(d)
    local job = d.job
    if job.state ~= "running" then return end
    if d.outcome == "failed" then
      local msg, tb = split_traceback(d.err)
      job.error, job.traceback = msg, tb
    elseif d.outcome == "cancelled" then
      job.reason = job.cancel_reason or tostring(d.err)
    end
    local touched = complete(S, job, d.outcome, d.at)
    part_end_line(job)
    if d.outcome ~= "ok" and not S.first_failure then S.first_failure = job end
    for _, cs in ipairs(touched) do settle(cs) end
  end

  local function drive()
    initial_ready(S, now())
    while true do
      if not S.stopping then
        local t = now()
        for _, job in ipairs(pick(S, t)) do start(job) end
      end
      if S.running == 0 then break end
      if #S.done_queue == 0 then
        local timed_out = wait_bell(S.stopping and math.max(0, S.stop_deadline - task.now()) or nil)
        if timed_out and #S.done_queue == 0 then break end
      end
      local q = S.done_queue
      S.done_queue = {}
      for _, d in ipairs(q) do take(d) end
      if mode == "fail-fast" and S.first_failure and not S.stopping then
        S.stopping = string.format("fail-fast: '%s' failed", S.first_failure.name)
        S.stop_deadline = task.now() + cancel_wait
        cancel_running(S.stopping)
      end
    end
  end

  local ok, err = xpcall(drive, traceback)
  if not ok then
    -- The caller was cancelled (Ctrl-C, a step timeout) or something broke:
    -- cancel what runs; nothing may wait any more.
    S.interrupted = first_line(split_traceback(err))
    cancel_running(S.interrupted, task.cancel_code(err) or "CANCELLED")
  end
  -- Everything still running did not stop in time (or the run was cut
  -- short); everything waiting never started.
  local t_end = now()
  for _, job in ipairs(S.jobs) do
    if job.state == "running" then
      job.state = "cancelled"
      job.finish = t_end
      job.reason = job.cancel_reason and (job.cancel_reason .. (ok and
        string.format("; did not stop within %g s", cancel_wait) or "")) or S.interrupted or "cancelled"
      if job.task then job.task:cancel(job.reason) end
      part_end_line(job)
    elseif job.state == "waiting" or job.state == "ready" then
      job.state = "skipped"
      job.reason = S.interrupted and ("not started: " .. S.interrupted) or S.stopping and ("not started: " .. S.stopping)
        or "never became ready"
    end
  end
  local touched = {}
  for _, job in ipairs(S.jobs) do
    if job.state ~= "ok" then
      -- a component that cannot complete
      if not job.cs.doomed and job.state ~= "skipped" then doom(S, job.cs, job.name, job.state, touched) end
    end
  end

  -- The report.
  local report = {graph = self.name, mode = mode, concurrency = concurrency, started = started_wall,
                  components = {}, order = {}, failed = {}, cancelled = {}, skipped = {},
                  assumed = json.array(assumed), interrupted = S.interrupted}
  local makespan, sum = 0, 0
  for _, job in ipairs(S.jobs) do
    if job.start and job.finish then
      sum = sum + (job.finish - job.start)
      if job.finish > makespan then makespan = job.finish end
    end
  end
  local all_ok = true
  for _, c in ipairs(self.list) do
    local cs = S.comps[c.name]
    settle(cs, true)
    local rec = emitted[c.name]
    report.components[c.name] = rec
    if rec.status ~= "ok" then
      all_ok = false
      local list = report[rec.status]
      if list then list[#list + 1] = c.name end
    end
  end
  local by_start = {}
  for _, c in ipairs(self.list) do
    local rec = report.components[c.name]
    local s = rec.start
    if rec.pre and rec.pre.start and (s == nil or rec.pre.start < s) then s = rec.pre.start end
    if s then by_start[#by_start + 1] = {c.name, s, c.index} end
  end
  table.sort(by_start, function(a, b)
    if math.abs(a[2] - b[2]) > EPS then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  for k, e in ipairs(by_start) do report.order[k] = e[1] end
  report.ok = all_ok and not S.interrupted
  report.makespan = makespan
  report.sum_durations = sum
  report.parallelism = makespan > 0 and sum / makespan or 0
  local cp, cpl = longest_path(S, function(j)
    return j.start and j.finish and (j.finish - j.start) or nil
  end)
  report.critical_path, report.critical_path_length = json.array(cp), cpl
  for _, k in ipairs{"order", "failed", "cancelled", "skipped"} do report[k] = json.array(report[k]) end

  local counts = {}
  for _, rec in pairs(report.components) do counts[rec.status] = (counts[rec.status] or 0) + 1 end
  event({type = "dag_report", ok = report.ok, mode = mode, concurrency = concurrency, makespan = makespan,
         parallelism = report.parallelism, sum_durations = sum, critical_path = report.critical_path,
         critical_path_length = cpl, counts = json.object(counts), failed = report.failed,
         cancelled = report.cancelled, skipped = report.skipped, assumed = report.assumed,
         interrupted = S.interrupted})
  for _, l in ipairs(M.summary_lines(report)) do say(l) end
  if not ok then error(err, 0) end
  return report
end

--- The summary of a report: counts, makespan, parallelism, critical path.
---@param report bomarun.DagReport
---@return string[]
function M.summary_lines(report)
  local counts, n = {}, 0
  for _, rec in pairs(report.components) do
    counts[rec.status] = (counts[rec.status] or 0) + 1
    n = n + 1
  end
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

--- The schedule of a report as lines (one per component, by start time,
--- then those that never started), followed by the summary.
---@param report bomarun.DagReport
---@return string[]
function M.report_lines(report)
  local names = {}
  local seen = {}
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

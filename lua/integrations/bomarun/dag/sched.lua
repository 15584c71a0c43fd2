--- bomarun.dag's scheduler: the jobs of a graph (each component's main part
--- and its optional pre part), their ranks, readiness, admission under the
--- concurrency limit and the resource caps, and what a job's end releases
--- or dooms.  It knows no clock and no tasks: g:simulate drives it on a
--- virtual clock, and the executor (bomarun.dag.executor, a subclass) on
--- real tasks.  Internal to bomarun.dag.
local graph = require "bomarun.dag.graph"
local util = require "bomarun.dag.util"

local EPS = util.EPS

local M = {}

---@class bomarun.DagJob
---@field cs table             the component's state: {c, name, parts = {main=, pre=}, remaining, done, doomed}
---@field kind "main"|"pre"
---@field name string          the component's name
---@field label string         "name" or "name:pre"
---@field fn function
---@field deps string[]        components this part waits for (assumed ones left out)
---@field missing integer      how many of them are not done yet
---@field res bomarun.DagResource[]
---@field est number           its estimate (or the default one)
---@field rank number          est plus the longest chain of work waiting on its component
---@field index integer        insertion order: main 2k-1, pre 2k
---@field state "waiting"|"ready"|"running"|"ok"|"failed"|"cancelled"|"skipped"
---@field held boolean|nil     it holds a slot and its resources

---@class bomarun.DagScheduler
---@field jobs bomarun.DagJob[]
---@field comps table<string, table>
---@field ready bomarun.DagJob[]
---@field running integer      slots taken
---@field limit number         the concurrency limit (math.huge: none)
---@field free table<string, integer>  units of each resource not held
---@field dependents table<string, bomarun.DagJob[]>  the jobs waiting on a component
---@field topo table[]         the components, dependencies first
local Scheduler = {}
Scheduler.__index = Scheduler
M.Scheduler = Scheduler

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

-- One job: component c's part `kind`.
function Scheduler:_add_job(g, c, kind, dflt)
  local deps = {}
  for _, d in ipairs(kind == "main" and c.depends_on or c.pre_depends_on) do
    if not g.assumed[d] then deps[#deps + 1] = d end
  end
  local cs = self.comps[c.name]
  local est = kind == "main" and c.estimate or c.pre_estimate
  local job = {cs = cs, kind = kind, name = c.name, label = kind == "pre" and (c.name .. ":pre") or c.name,
               fn = kind == "main" and c.run or c.pre, deps = deps, missing = #deps,
               res = kind == "main" and c.resources or c.pre_resources, est = est or dflt, timeout = c.timeout,
               index = 2 * c.index - (kind == "pre" and 0 or 1), state = "waiting"}
  self.jobs[#self.jobs + 1] = job
  cs.parts[kind] = job
  cs.remaining = cs.remaining + 1
  for _, d in ipairs(deps) do
    local list = self.dependents[d]
    list[#list + 1] = job
  end
end

-- Rank: own estimate plus the longest chain of jobs waiting on this
-- component, computed dependents first (reverse topological order).
function Scheduler:_rank()
  for k = #self.topo, 1, -1 do
    local c = self.topo[k]
    local t = 0
    for _, j in ipairs(self.dependents[c.name]) do
      if j.rank > t then t = j.rank end
    end
    local cs = self.comps[c.name]
    for _, kind in ipairs{"main", "pre"} do
      local j = cs.parts[kind]
      if j then j.rank = j.est + t end
    end
  end
end

--- The jobs of graph `g` (which must be valid: check it first) and the
--- state a run or a simulation works on.  `class` is the metatable of the
--- result (a subclass of Scheduler; default Scheduler).
---@param g bomarun.DagGraph
---@param concurrency? integer
---@param class? table
---@return bomarun.DagScheduler
function M.new(g, concurrency, class)
  local self = setmetatable({jobs = {}, comps = {}, ready = {}, running = 0, limit = concurrency or math.huge,
                             free = {}, dependents = {}, topo = graph.order(g)}, class or Scheduler)
  for name, cap in pairs(g.caps) do self.free[name] = cap end
  for _, c in ipairs(g.list) do
    self.comps[c.name] = {c = c, name = c.name, parts = {}, remaining = 0}
    self.dependents[c.name] = {}
  end
  local dflt = default_estimate(g.list)
  for _, c in ipairs(g.list) do
    self:_add_job(g, c, "main", dflt)
    if c.pre then self:_add_job(g, c, "pre", dflt) end
  end
  self:_rank()
  return self
end

--- A job's dependencies are done: it waits for a slot and its resources.
---@param job bomarun.DagJob
---@param now number
function Scheduler:mark_ready(job, now)
  job.state = "ready"
  job.ready_at = now
  self.ready[#self.ready + 1] = job
end

--- Mark ready every job that waits for nothing.
---@param now number
function Scheduler:initial_ready(now)
  for _, job in ipairs(self.jobs) do
    if job.missing == 0 then self:mark_ready(job, now) end
  end
end

--- Take a slot and all of the job's resources, in their sorted order (one
--- global order).  The caller has checked that they are free.
---@param job bomarun.DagJob
function Scheduler:acquire(job)
  for _, r in ipairs(job.res) do self.free[r.name] = self.free[r.name] - r.count end
  self.running = self.running + 1
  job.held = true
end

--- Give back the slot and resources the job holds.  Does nothing if it
--- holds none, so every path that ends a job (its own end, cancellation,
--- an interrupted run) may call it.
---@param job bomarun.DagJob
function Scheduler:give_back(job)
  if not job.held then return end
  job.held = nil
  for _, r in ipairs(job.res) do self.free[r.name] = self.free[r.name] + r.count end
  self.running = self.running - 1
end

local function by_rank(a, b)
  if math.abs(a.rank - b.rank) > EPS then return a.rank > b.rank end
  return a.index < b.index
end

-- Whether `job` can start now: a slot, and all of its resources free and
-- none reserved by a higher-ranked job still waiting.
function Scheduler:_fits(job, reserved)
  if self.running >= self.limit then return false end
  for _, r in ipairs(job.res) do
    if reserved[r.name] or self.free[r.name] < r.count then return false end
  end
  return true
end

--- Start what can start now: ready jobs by rank, each when it fits; a job
--- that does not fit reserves its resources, so lower-ranked jobs that need
--- any of them wait behind it (the others backfill).  Returns the jobs
--- started, their slots and resources taken.
---@param now number
---@return bomarun.DagJob[]
function Scheduler:pick(now)
  if #self.ready == 0 or self.running >= self.limit then return {} end
  table.sort(self.ready, by_rank)
  local started, left, reserved = {}, {}, {}
  for _, job in ipairs(self.ready) do
    if self:_fits(job, reserved) then
      self:acquire(job)
      job.state = "running"
      job.start = now
      started[#started + 1] = job
    else
      for _, r in ipairs(job.res) do reserved[r.name] = true end
      left[#left + 1] = job
    end
  end
  self.ready = left
  return started
end

function Scheduler:_remove_ready(job)
  for k, j in ipairs(self.ready) do
    if j == job then
      table.remove(self.ready, k)
      return
    end
  end
end

--- A component can no longer complete (a part failed, or something it
--- depends on did): skip its parts that have not started and, transitively,
--- everything that depends on it.  Running parts are left alone.  Appends
--- the components doomed now to `touched`.
---@param cs table     the component's state
---@param root string  the component whose failure this is
---@param why string   "failed", "cancelled", ...
---@param touched table[]
function Scheduler:doom(cs, root, why, touched)
  if cs.doomed then return end
  cs.doomed, cs.doom_why = root, why
  touched[#touched + 1] = cs
  for _, kind in ipairs{"main", "pre"} do
    local j = cs.parts[kind]
    if j and (j.state == "waiting" or j.state == "ready") then
      if j.state == "ready" then self:_remove_ready(j) end
      j.state = "skipped"
      j.reason = root == cs.name and ("its " .. (kind == "main" and "pre" or "main") .. " part " .. why)
        or ("depends on " .. why .. " '" .. root .. "'")
    end
  end
  for _, j in ipairs(self.dependents[cs.name]) do
    self:doom(j.cs, root, why, touched)
  end
end

--- A job ended with `outcome` ("ok", "failed", "cancelled"): give its slot
--- and resources back, and either release what waited on its component or
--- doom what depended on it.  Returns the components whose state changed.
---@param job bomarun.DagJob
---@param outcome string
---@param now number
---@return table[]
function Scheduler:complete(job, outcome, now)
  self:give_back(job)
  job.state = outcome
  job.finish = now
  local cs, touched = job.cs, {job.cs}
  if outcome == "ok" then
    cs.remaining = cs.remaining - 1
    if cs.remaining == 0 and not cs.doomed then
      cs.done = now
      for _, j in ipairs(self.dependents[cs.name]) do
        j.missing = j.missing - 1
        if j.missing == 0 and j.state == "waiting" then self:mark_ready(j, now) end
      end
    end
  else
    self:doom(cs, cs.name, outcome, touched)
  end
  return touched
end

return M

--- bomarun.dag's plan: the waves (dependency levels), the critical path by
--- estimates, a simulated run on a virtual clock, and the lines plan mode
--- shows.  The graph must be valid (the public methods in bomarun.dag check
--- it first).  Internal to bomarun.dag.
local critical_path = require "bomarun.dag.critical_path"
local graph = require "bomarun.dag.graph"
local sched = require "bomarun.dag.sched"
local util = require "bomarun.dag.util"

local EPS, fmt_s, fmt_resources = util.EPS, util.fmt_s, util.fmt_resources

local M = {}

local function by_index(a, b) return a.index < b.index end

--- The dependency levels of g's parts, as labels ("name:pre" for a pre part).
---@param g bomarun.DagGraph
---@return string[][]
function M.waves(g)
  local s = sched.new(g)
  local level, waves = {}, {}
  for _, c in ipairs(s.topo) do
    local cs = s.comps[c.name]
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
    table.sort(waves[k], by_index)
    out[k] = {}
    for i, j in ipairs(waves[k]) do out[k][i] = j.label end
  end
  return out
end

--- The critical path of g by estimates, ignoring caps.
---@param g bomarun.DagGraph
---@return string[] names, number length
function M.critical_path(g)
  return critical_path.longest(sched.new(g), function(j) return j.est end)
end

--- The scheduler on a virtual clock, with the estimates as durations.
---@param g bomarun.DagGraph
---@param concurrency? integer
---@return {makespan: number, components: table<string, table>}
function M.simulate(g, concurrency)
  local s = sched.new(g, concurrency)
  local now, running = 0, {}
  s:initial_ready(now)
  while true do
    for _, j in ipairs(s:pick(now)) do
      j.sim_end = now + j.est
      running[#running + 1] = j
    end
    if #running == 0 then break end
    local t = math.huge
    for _, j in ipairs(running) do t = math.min(t, j.sim_end) end
    now = t
    table.sort(running, by_index)
    local still = {}
    for _, j in ipairs(running) do
      if j.sim_end <= now + EPS then s:complete(j, "ok", now) else still[#still + 1] = j end
    end
    running = still
  end
  local comps, makespan = {}, 0
  for _, job in ipairs(s.jobs) do
    comps[job.name] = comps[job.name] or {}
    if job.kind == "main" then
      comps[job.name].start, comps[job.name].finish = job.start, job.finish
    else
      comps[job.name].pre = {start = job.start, finish = job.finish}
    end
    if job.finish and job.finish > makespan then makespan = job.finish end
  end
  return {makespan = makespan, components = comps}
end

local function has_estimates(g)
  for _, c in ipairs(g.list) do
    if c.estimate or c.pre_estimate then return true end
  end
  return false
end

-- "name <- deps  [resources]  ~estimate s", for a component or its pre part.
local function part_line(width, label, deps, res, estimate)
  local line = string.format("%-" .. width .. "s <- %s", label, #deps > 0 and table.concat(deps, ", ") or "(nothing)")
  if #res > 0 then line = line .. "  [" .. fmt_resources(res) .. "]" end
  if estimate then line = line .. "  ~" .. fmt_s(estimate) .. " s" end
  return line
end

-- The heading: counts, edges, caps, and what a subset assumes done.
local function heading(g, add)
  local edges = 0
  for _, c in ipairs(g.list) do edges = edges + #graph.all_deps(c) end
  local caps = {}
  for n, v in pairs(g.caps) do caps[#caps + 1] = n .. "=" .. v end
  table.sort(caps)
  add(string.format("dag %s: %d components, %d edges%s", g.name, #g.list, edges,
    #caps > 0 and ("; caps " .. table.concat(caps, ", ")) or ""))
  local assumed = g:assumed_done()
  if #assumed > 0 then add("assumed done (outside the subset): " .. table.concat(assumed, ", ")) end
end

--- The lines plan mode shows for g.
---@param g bomarun.DagGraph
---@return string[]
function M.plan_lines(g)
  local out = {}
  local function add(s) out[#out + 1] = s end
  heading(g, add)
  local width = 4
  for _, c in ipairs(g.list) do width = math.max(width, #c.name + 4) end
  local est = has_estimates(g)
  for _, c in ipairs(graph.order(g)) do
    add(part_line(width, c.name, c.depends_on, c.resources, est and c.estimate))
    if c.pre then add(part_line(width, "  pre", c.pre_depends_on, c.pre_resources, est and c.pre_estimate)) end
  end
  add("waves (dependency levels; a run starts each part as soon as its own dependencies are done):")
  for k, w in ipairs(M.waves(g)) do
    add(string.format("  wave %d (%d): %s", k, #w, table.concat(w, ", ")))
  end
  if est then
    local names, len = M.critical_path(g)
    add(string.format("critical path (estimates, no caps): %s s: %s", fmt_s(len), table.concat(names, " -> ")))
    local sim = M.simulate(g, g.defaults.concurrency)
    local conc = g.defaults.concurrency
    add(string.format("simulated makespan (caps%s): %s s", conc and (", concurrency " .. conc) or "",
      fmt_s(sim.makespan)))
  else
    local names = M.critical_path(g)
    add(string.format("longest chain: %d parts: %s", #names, table.concat(names, " -> ")))
  end
  return out
end

return M

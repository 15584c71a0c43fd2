--- bomarun.dag's critical path: the longest chain of parts through the
--- jobs of a scheduler, by a weight per job.  g:critical_path weighs the
--- estimates; a run's report weighs the measured durations.  Internal to
--- bomarun.dag.
local util = require "bomarun.dag.util"

local EPS = util.EPS

local M = {}

-- The end of the longest chain through job j: the latest-ending of the
-- components it depends on (by best_end), plus its own weight w.
local function extend(j, w, best_end)
  local base, from = 0, nil
  for _, d in ipairs(j.deps) do
    local e = best_end[d]
    if e and e.len > base + EPS then base, from = e.len, e.job end
  end
  return base + w, from
end

--- The longest path through the jobs of `sched` by `weight(job)` (nil
--- leaves the job out): the labels on it ("x:pre" for a pre part), first
--- to last, and its length.  A component's chain ends at the later of its
--- parts.
---@param sched bomarun.DagScheduler
---@param weight fun(job: bomarun.DagJob): number|nil
---@return string[] labels, number length
function M.longest(sched, weight)
  local best_end, pred = {}, {}
  local top, top_len = nil, -1
  for _, c in ipairs(sched.topo) do
    local cs = sched.comps[c.name]
    local cend, cjob = 0, nil
    for _, kind in ipairs{"pre", "main"} do
      local j = cs.parts[kind]
      local w = j and weight(j)
      if w then
        local len
        len, pred[j] = extend(j, w, best_end)
        if len > cend or cjob == nil then cend, cjob = len, j end
        if len > top_len then top, top_len = j, len end
      end
    end
    if cjob then best_end[c.name] = {len = cend, job = cjob} end
  end
  local labels = {}
  local j = top
  while j do
    table.insert(labels, 1, j.label)
    j = pred[j]
  end
  return labels, math.max(top_len, 0)
end

return M

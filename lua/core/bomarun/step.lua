--- The step context, as modules other than the runner see it.
---
--- When a runbook step runs, the runner puts its step context in the task-
--- local storage of the step's task (key "step"), where every task the step
--- spawns finds it too.  Integrations (ssh, openstack, ansible, dag, ...) read
--- it through this module and never require the runner: outside a runbook
--- (a plain script) there is no step, and every function here is then a
--- no-op that returns nil.
---
--- What a step context offers an integration:
---   ctx:event(ev)       journal an event of the module's own, tagged with the step
---   ctx:gate(ok, msg, level), ctx:check(ok, msg, level)
---   ctx.id, ctx.title
local task = require "bomarun.task"

local M = {}

--- The key under which the runner stores the step context in task-local storage.
M.KEY = "step"

---@class bomarun.StepLike
---@field id string
---@field event fun(self: bomarun.StepLike, ev: table)
---@field gate fun(self: bomarun.StepLike, ok: any, msg: string, level?: integer): any
---@field check fun(self: bomarun.StepLike, ok: any, msg: string, level?: integer): any

--- The step context of the running task, or nil outside a runbook step.
---@return bomarun.StepLike|nil
function M.current()
  return task.context(M.KEY)
end

--- Journal `ev` (a table with a `type`) against the current step; does
--- nothing outside a step.  Returns true when it was journaled.
---@param ev table
---@return boolean
function M.event(ev)
  local ctx = M.current()
  if not ctx then return false end
  ctx:event(ev)
  return true
end

--- Make `ctx` the step context of `t` (a task) and the tasks it spawns.
--- For the runner (and tests); integrations only read.
---@param t bomarun.Task
---@param ctx bomarun.StepLike
function M.bind(t, ctx)
  t:locals()[M.KEY] = ctx
end

return M

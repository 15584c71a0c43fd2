--- Tasks: coroutines on one event loop.
---
--- Every awaitable (task.sleep, proc.run, t:wait, ...) must be called from a
--- task: a runbook body, a script run by `bomarun FILE`, or a function given
--- to task.spawn.  A task that finishes cancels the children it leaves
--- running, so nothing outlives the code that started it.
local sched = require "bomarun._sched"

local M = {}

---@class bomarun.Task
---@field wait fun(self: bomarun.Task, timeout?: number): boolean|nil, ...
---@field cancel fun(self: bomarun.Task, reason?: string, code?: string)
---@field status fun(self: bomarun.Task): string
---@field id fun(self: bomarun.Task): integer
---@field name fun(self: bomarun.Task): string
---@field parent fun(self: bomarun.Task): bomarun.Task|nil
---@field locals fun(self: bomarun.Task): table
---@field set_deadline fun(self: bomarun.Task, seconds: number)

--- Start fn(...) as a new task, a child of the current one.
---@param fn function
---@param ... any  arguments for fn
---@return bomarun.Task
function M.spawn(fn, ...)
  return sched.spawn(fn, ...)
end

--- Start fn(...) as a named task (the name shows in errors and reports).
---@param name string
---@param fn function
---@param ... any  arguments for fn
---@return bomarun.Task
function M.spawn_named(name, fn, ...)
  return sched.spawn_named(name, fn, ...)
end

--- Wait for `seconds` without blocking other tasks.
---@param seconds number
function M.sleep(seconds)
  sched.sleep(seconds)
end

--- Let every other ready task run, then continue.
function M.yield()
  sched.yield()
end

--- The running task, or nil outside any task.
---@return bomarun.Task|nil
function M.current()
  return sched.current()
end

---@class bomarun.Event
---@field wait fun(self: bomarun.Event, timeout?: number): boolean|nil, ...
---@field set fun(self: bomarun.Event, ...)
---@field clear fun(self: bomarun.Event)
---@field is_set fun(self: bomarun.Event): boolean

--- An event: tasks wait on it until some task sets it (with values that
--- every wait returns after `true`); it stays set until cleared.
---@return bomarun.Event
function M.event()
  return sched.event()
end

---@class bomarun.Semaphore
local Semaphore = {}
Semaphore.__index = Semaphore

--- Take one unit, waiting (in arrival order) while none is free.  A wait
--- that times out or is cancelled leaves the queue, and a unit handed to it
--- in the meantime goes back: a cancelled acquire holds nothing.
---@param timeout? number
---@return boolean|nil ok, string|nil err, string|nil code
function Semaphore:acquire(timeout)
  if self.free > 0 and #self.queue == 0 then
    self.free = self.free - 1
    return true
  end
  local ev = sched.event()
  self.queue[#self.queue + 1] = ev
  local pok, ok, err, code = pcall(ev.wait, ev, timeout)
  if pok and ok then return true end
  for k, e in ipairs(self.queue) do
    if e == ev then table.remove(self.queue, k) break end
  end
  if ev:is_set() then self:release() end   -- handed over, then cancelled
  if not pok then error(ok, 0) end
  return nil, err, code
end

--- Give one unit back (to the longest waiter, if any).
function Semaphore:release()
  local ev = table.remove(self.queue, 1)
  if ev then ev:set() else self.free = self.free + 1 end
end

local Hold = {__name = "bomarun.semaphore_hold"}
Hold.__index = Hold
--- Give the unit back (once; later calls do nothing).
function Hold:release()
  if self.sem then
    local sem = self.sem
    self.sem = nil
    sem:release()
  end
end
Hold.__close = Hold.release

--- Take one unit and return a hold that gives it back when released or
--- closed: `local _ <close> = sem:hold()` frees the unit however the block
--- ends (return, error, cancellation).  Raises if the unit cannot be taken
--- (a timeout, or the task was cancelled while waiting).
---@param timeout? number
---@return table hold  with :release(); a to-be-closed value
function Semaphore:hold(timeout)
  local ok, err = self:acquire(timeout)
  if not ok then error("semaphore: " .. tostring(err), 2) end
  return setmetatable({sem = self}, Hold)
end

--- Run fn(...) holding one unit; released however fn ends.
---@param fn function
---@param ... any  arguments for fn
---@return any ...  fn's results
function Semaphore:with(fn, ...)
  local _ <close> = self:hold()
  return fn(...)
end

--- Units free now, and tasks waiting for one.
---@return integer free, integer waiting
function Semaphore:counts()
  return self.free, #self.queue
end

--- A counting semaphore with n units.
---@param n integer
---@return bomarun.Semaphore
function M.semaphore(n)
  return setmetatable({free = n, queue = {}}, Semaphore)
end

--- Monotonic clock in seconds.
---@return number
function M.now()
  return sched.now()
end

--- The code of a cancellation error ("CANCELLED", "TIMEOUT",
--- "INTERRUPTED"), or nil if err is not one.
---@param err any
---@return string|nil
function M.cancel_code(err)
  return sched.cancel_code(err)
end

--- Look `key` up in the task-local storage of the current task and its
--- ancestors (the runbook runner keeps the current step there).
---@param key string
---@return any
function M.context(key)
  local t = sched.current()
  while t do
    local v = t:locals()[key]
    if v ~= nil then return v end
    t = t:parent()
  end
  return nil
end

local function describe(err)
  if type(err) == "table" and getmetatable(err) and getmetatable(err).__tostring then
    return tostring(err)
  end
  return tostring(err)
end

--- Run fn(...) bounded by `seconds`.  Returns fn's results, or
--- nil, message, "DEADLINE" when this bound ran out (fn's task is cancelled:
--- its subprocesses are killed, its waits end).  A callee's own
--- nil, message, "TIMEOUT" (a request that timed out, say) comes back as it
--- is, so the two are never confused.  Errors in fn propagate.
---@param seconds number
---@param fn function
---@param ... any  arguments for fn
---@return any ...  fn's results, or nil, message, "DEADLINE"
function M.deadline(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds < 0 then
    error("task.deadline: seconds must be a number >= 0", 2)
  end
  local child = sched.spawn_named("deadline", fn, ...)
  child:set_deadline(seconds)
  local r = table.pack(child:wait(seconds))
  if r[1] == nil and r[3] == "TIMEOUT" then   -- the wait's own bound
    child:cancel(string.format("timed out after %g s", seconds), "TIMEOUT")
    return nil, string.format("timed out after %g s", seconds), "DEADLINE"
  end
  if r[1] == false then
    if sched.cancel_code(r[2]) == "TIMEOUT" then   -- the child's deadline
      return nil, string.format("timed out after %g s: %s", seconds, describe(r[2])), "DEADLINE"
    end
    error(r[2], 0)
  end
  return table.unpack(r, 2, r.n)
end

--- Run fn(...) bounded by `seconds`.  Returns fn's results, or
--- nil, message, "TIMEOUT" when the time ran out (fn's task is cancelled:
--- its subprocesses are killed, its waits end).  Errors in fn propagate.
--- A callee of fn may return "TIMEOUT" too; task.deadline tells the two apart.
---@param seconds number
---@param fn function
---@param ... any  arguments for fn
---@return any ...  fn's results, or nil, message, "TIMEOUT"
function M.timeout(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds < 0 then
    error("task.timeout: seconds must be a number >= 0", 2)
  end
  local r = table.pack(M.deadline(seconds, fn, ...))
  if r[1] == nil and r[3] == "DEADLINE" and r.n == 3 then return nil, r[2], "TIMEOUT" end
  return table.unpack(r, 1, r.n)
end

--- Run functions concurrently and return their first results, in order.
--- opts.limit bounds how many run at once.  If one fails, the others are
--- cancelled and the error is raised, naming which function failed; with
--- opts.settle = true every function runs to the end and each result is
--- {ok = boolean, value = ..., error = ...} instead.
---@param fns function[]
---@param opts? {limit?: integer, settle?: boolean}
---@return any[]
function M.parallel(fns, opts)
  opts = opts or {}
  local n = #fns
  local limit = opts.limit or math.max(n, 1)   -- no functions: no workers, {} back
  if type(limit) ~= "number" or limit < 1 then
    error("task.parallel: limit must be a number >= 1", 2)
  end
  if not sched.current() then error("task.parallel must be called from a task", 2) end
  local results, workers = {}, {}
  local next_i, failure = 1, nil

  local function traceback(e)
    if type(e) == "string" then return debug.traceback(e, 2) end
    return e
  end
  -- A pool of `limit` workers, each taking the next function in turn.
  local function worker()
    while not failure and next_i <= n do
      local i = next_i
      next_i = next_i + 1
      local ok, v = xpcall(fns[i], traceback)
      if opts.settle then
        results[i] = ok and {ok = true, value = v} or {ok = false, error = v}
      elseif ok then
        results[i] = v
      elseif not failure then
        failure = {index = i, err = v}
        local me = sched.current()
        for _, w in ipairs(workers) do
          if w ~= me then w:cancel("another function in task.parallel failed") end
        end
      end
    end
  end
  for w = 1, math.min(limit, n) do
    workers[w] = sched.spawn_named("parallel", worker)
  end
  for w = 1, #workers do
    local ok, err = workers[w]:wait()
    if not ok and not failure and not sched.cancel_code(err) then
      failure = {index = 0, err = err}
    end
  end
  if failure then
    if type(failure.err) == "string" then
      error(string.format("task.parallel: function #%d failed: %s", failure.index, failure.err), 0)
    end
    error(failure.err, 0)
  end
  return results
end

return M

--- The step context: what a runbook body sees as `s` (or `i` for an acceptance
--- item): gates, checks, captures, cleanups, polls, logs, artifacts.
local host = require "bomarun._host"
local sched = require "bomarun._sched"
local json = require "bomarun.json"
local log = require "bomarun.log"
local poll = require "bomarun.poll"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local M = {}

-- Failures raised inside a body --------------------------------------------

local FAILURE_MT = {__name = "bomarun.failure"}
FAILURE_MT.__tostring = function(f) return f.message end
local SKIP_MT = {__name = "bomarun.skip"}

local function raise_failure(kind, message, level)
  local info = debug.getinfo((level or 2) + 1, "Sl")
  local where = info and info.currentline and info.currentline > 0 and (info.short_src .. ":" .. info.currentline) or nil
  error(setmetatable({kind = kind, message = message, where = where}, FAILURE_MT), 0)
end

local function caller_where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline
  end
end

-- The step context: what a body sees as `s` (or `i` for an item) -----------

---@class bomarun.StepContext
---@field id string
---@field title string
---@field env table            profile constants
---@field state table          values captured so far in this run (and resumed runs)
---@field run {id: string, dir: string, profile: string|nil, keep: boolean}  keep: --keep was given
local Step = {}
Step.__index = Step

---@class bomarun.CleanupHandle
local CleanupHandle = {}
CleanupHandle.__index = CleanupHandle

local function msg_text(msg)
  if msg == nil then return "(no message)" end
  return tostring(msg)
end

--- Fail the runbook unless cond holds.  `level` says whose line to record:
--- 1 (the default) the caller of gate; 2 its caller (for helpers that gate
--- on a runbook's behalf, like ansible.gate).
---@param cond any
---@param msg string
---@param level? integer
---@return any cond  cond itself (it only returns when cond holds)
function Step:gate(cond, msg, level)
  local ok = cond and true or false
  level = (level or 1) + 1
  local where = caller_where(level)
  self._run.journal:emit({type = "gate", step = self.id, ok = ok, message = msg_text(msg), where = where})
  self:_line(string.format("gate %s: %s", ok and "ok" or "FAILED", msg_text(msg)))
  if not ok then raise_failure("gate", "gate failed: " .. msg_text(msg), level) end
  return cond
end

--- Record a failure unless cond holds, and carry on (`level` as for gate).
---@param cond any
---@param msg string
---@param level? integer
---@return boolean
function Step:check(cond, msg, level)
  local ok = cond and true or false
  local where = caller_where((level or 1) + 1)
  self._run.journal:emit({type = "check", step = self.id, ok = ok, message = msg_text(msg), where = where})
  self:_line(string.format("check %s: %s", ok and "ok" or "FAILED", msg_text(msg)))
  if not ok then self._failed_checks = self._failed_checks + 1 end
  return ok
end

--- Fail this step (and the run) with a message.
---@param msg? string
function Step:fail(msg)
  raise_failure("fail", msg_text(msg), 2)
end

--- End this step as SKIPPED.
---@param reason? string
function Step:skip(reason)
  error(setmetatable({reason = reason}, SKIP_MT), 0)
end

--- An acceptance item: end as DEFERRED by a decision.
---@param decision string  e.g. "D-019"
---@param reason string
function Step:defer(decision, reason)
  error(setmetatable({status = "DEFERRED", deferred = {decision = decision, reason = reason}}, SKIP_MT), 0)
end

--- An acceptance item: end as OUTSTANDING.
---@param reason string  who does what to close it
function Step:outstanding(reason)
  error(setmetatable({status = "OUTSTANDING", outstanding = reason}, SKIP_MT), 0)
end

--- Write a line to this step's log (and to the console, indented).
---@param fmt any     a string.format format, or (alone) any value, shown with tostring
---@param ... any     the format's arguments
function Step:log(fmt, ...)
  local line = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  self:_line(line, true)
end

function Step:_line(line, console)
  -- As the journal shows it: redacted, invalid UTF-8 bytes as \xHH.
  line = json.escape_utf8(secret.redact(tostring(line)))
  self._sink(line)
  if console or self._run.verbose then log.console("      | " .. line) end
end

--- Keep a value for later steps (journaled, restored by --resume).  A
--- value the journal cannot hold (a function, userdata, a thread, a cycle)
--- fails the step, naming the key; strings with invalid UTF-8 are
--- journaled with those bytes as `\xHH`, NaN and infinities as "nan",
--- "inf", "-inf" (s.state keeps the value itself).
---@generic T
---@param key string
---@param value T  JSON-encodable, to be journaled
---@return T value
function Step:capture(key, value)
  if type(key) ~= "string" or key == "" then
    raise_failure("capture", "capture: the key must be a non-empty string, not " ..
      (key == "" and "an empty one" or ("a " .. type(key))), 2)
  end
  local kept, problems = json.sanitize(value, key)
  if #problems > 0 then
    local p = problems[1]
    raise_failure("capture", string.format("capture %s: %s%s cannot be journaled", json.escape_utf8(key), p.what,
      p.path ~= key and (" at " .. json.escape_utf8(p.path)) or ""), 2)
  end
  self.state[key] = value
  self._run.journal:emit({type = "capture", step = self.id, key = key, value = value})
  self:_line("captured " .. key .. " = " .. poll.show(kept))
  return value
end

--- Register how to undo what this step created.  Cleanups run last-in-
--- first-out if the run fails or is interrupted, unless --keep.  Returns a
--- handle: h:run() undoes it now (journaled; its error, if any, is
--- returned as nil, msg), h:done() discharges it when the runbook removed the
--- resource itself.  Either way it is not run again at the end.
---@param description string
---@param fn fun()
---@return bomarun.CleanupHandle
function Step:cleanup(description, fn)
  if type(fn) ~= "function" then error("cleanup: the second argument must be a function", 2) end
  local run = self._run
  local c = {index = #run.cleanups + 1, step = self.id, description = description, fn = fn}
  run.cleanups[#run.cleanups + 1] = c
  run.journal:emit({type = "cleanup_registered", index = c.index, step = self.id, description = description})
  self:_line("cleanup registered: " .. description)
  return setmetatable({_c = c, _step = self}, CleanupHandle)
end

--- Undo now: run the cleanup in this task, journal its outcome.
---@return boolean|nil ok, string|nil err
function CleanupHandle:run()
  local c = self._c
  if c.settled then return nil, "cleanup " .. c.index .. " (" .. c.description .. ") already " .. c.settled end
  c.settled = "run"
  local run = self._step._run
  run.journal:emit({type = "cleanup_start", index = c.index, description = c.description})
  local t0 = task.now()
  local ok, v, err = pcall(c.fn)
  local status, emsg = M.cleanup_outcome(ok, v, err)
  run.journal:emit({type = "cleanup_end", index = c.index, status = status,
                    duration = task.now() - t0, error = emsg, early = true})
  self._step:_line(string.format("cleanup %s now: %s", emsg and "FAILED" or "done", c.description))
  if not ok and task.cancel_code(v) then error(v, 0) end   -- cancellation is not swallowed
  if emsg then return nil, emsg end
  return true
end

--- Discharge: the runbook removed the resource itself; nothing to undo.
function CleanupHandle:done()
  local c = self._c
  if c.settled then return end
  c.settled = "discharged"
  self._step._run.journal:emit({type = "cleanup_end", index = c.index, status = "DISCHARGED", duration = 0})
  self._step:_line("cleanup discharged: " .. c.description)
end

--- Poll until fn's value is in `ok`; fail the step at once on a value in
--- `fail`, or at the timeout.  Returns the last value.
---@param spec bomarun.PollSpec
---@return any value
function Step:poll(spec)
  -- poll.run journals the attempts against this step (bomarun.step) and
  -- shows progress; here a failure fails the step.
  local v, err = poll.run(spec)
  if v == nil then raise_failure("poll", err, 2) end
  return v
end

--- Journal an event of a module's own (type and fields), tagged with this
--- step; report.lua keeps unknown types under `events` in report.json.
---@param ev table  {type = "dag_component", ...}
---@return bomarun.JournalEvent ev  as journaled
function Step:event(ev)
  ev.step = self.id
  return self._run.journal:emit(ev)
end

--- Write an artifact file into the run directory; returns its path.
--- Secrets in content are redacted; raises if the file cannot be written.
---@param name string     the file name (after the step id; odd characters become _)
---@param content string
---@return string path
function Step:artifact(name, content)
  local dir = self._run.dir .. "/artifacts"
  host.mkdir(dir)
  local path = dir .. "/" .. (self.id .. "-" .. name):gsub("[^%w._-]", "_")
  local f, err = io.open(path, "wb")
  local ok = f ~= nil
  if f then
    local wok, werr = f:write(secret.redact(content))
    local cok, cerr = f:close()
    ok, err = wok and cok, werr or cerr
  end
  if not ok then error("artifact: cannot write " .. path .. ": " .. tostring(err), 2) end
  self:_line("artifact: " .. path)
  return path
end

--- A body's error as a message, and its traceback when it has one.
---@param err any
---@return string message, string|nil traceback
function M.error_message(err)
  if getmetatable(err) == FAILURE_MT then
    return err.message .. (err.where and (" (" .. err.where .. ")") or ""), nil
  end
  local code = sched.cancel_code(err)
  if code then return tostring(err), nil end
  if type(err) == "table" then
    local m = err.message or tostring(err)
    return tostring(m), err.traceback
  end
  local s = tostring(err)
  local msg, tb = s:match("^(.-)\n(stack traceback:.*)$")
  return msg or s, tb
end

--- What a cleanup function's end means, as the ledger records it: "DONE",
--- or "FAILED" with the message of what it raised or returned (nil, err).
---@param ok boolean   whether it returned (pcall's or task:wait's first value)
---@param v any        its first result, or what it raised
---@param err any      its second result
---@return string status, string|nil message
function M.cleanup_outcome(ok, v, err)
  if not ok then return "FAILED", (M.error_message(v)) end
  if v == nil and err then return "FAILED", tostring(err) end
  return "DONE", nil
end

--- A new step context for `node` in `run`, writing its log lines to `sink`.
---@param run table
---@param node table
---@param kind "step"|"item"
---@param sink fun(line: string)
---@return bomarun.StepContext
function M.new(run, node, kind, sink)
  return setmetatable({id = node.id, title = node.title, env = run.env, state = run.state,
                       run = {id = run.id, dir = run.dir, profile = run.profile_name, keep = run.keep or false},
                       kind = kind, _run = run, _sink = sink, _failed_checks = 0}, Step)
end

M.Step = Step
M.FAILURE_MT = FAILURE_MT
M.SKIP_MT = SKIP_MT
M.raise_failure = raise_failure

return M

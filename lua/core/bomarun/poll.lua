--- Poll until a value reaches a success state.
---
---   local v, err, code = poll.run{function() return status() end,
---     ok = {"ACTIVE"}, fail = {"ERROR"}, timeout = 600, interval = 10,
---     what = "server status"}
---
--- The function is called afresh on every attempt; each attempt is bounded
--- by the time left.  It may return nil, err for a transient failure (the
--- poll goes on and reports it).  Returns the value when it is in `ok`;
--- nil, message, "FAILED_STATE" at once when it is in `fail`;
--- nil, message, "TIMEOUT" when time runs out.
---
--- Progress goes one way for every wait in every module: each attempt is a
--- line in the current step's log; inside a runbook step, a `poll` event is
--- journaled whenever the value (or error) changes, and once at the end with
--- the outcome; the console shows progress in place (a line per change off a
--- terminal) unless `quiet = true`.  `on_attempt` is called as well.
local task = require "bomarun.task"
local log = require "bomarun.log"
local json = require "bomarun.json"
local secret = require "bomarun.secret"
local step_ctx = require "bomarun.step"

local M = {}

---@class bomarun.PollSpec
---@field [1] fun(): any           called on every attempt
---@field ok? any[]|fun(v: any): boolean   success states (default: any truthy value)
---@field fail? any[]|fun(v: any): boolean failure states: stop at once
---@field timeout number           seconds overall
---@field interval? number         seconds between attempts (default 5)
---@field what? string             what is being waited for, for messages
---@field on_attempt? fun(info: {attempt: integer, elapsed: number, value: any, err: string|nil})
---@field quiet? boolean           no console progress (the step log and journal still get it)

local function matcher(spec, default)
  if spec == nil then return default end
  if type(spec) == "function" then return spec end
  if type(spec) ~= "table" then spec = {spec} end
  local set = {}
  for _, v in ipairs(spec) do set[v] = true end
  return function(v) return v ~= nil and set[v] == true end
end

local function show(v)
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    if ok then
      -- Redact before cutting: a cut could split a secret and hide it from
      -- the redaction of the line it ends up in.
      s = secret.redact(s)
      return #s > 120 and s:sub(1, 117) .. "..." or s
    end
  end
  return tostring(v)
end
M.show = show

-- The one progress path: step log, journal (on change, and at the end),
-- console.  Returns on_attempt and on_done callbacks for M.run.
local function reporter(spec, what)
  local console = not spec.quiet and M.console_progress(what) or nil
  local last_shown
  local function on_attempt(info)
    local shown = info.value ~= nil and show(info.value) or ("error: " .. tostring(info.err))
    log.to_step(string.format("poll %s: attempt %d, %.1fs, last=%s", what, info.attempt, info.elapsed, shown))
    if shown ~= last_shown then
      step_ctx.event({type = "poll", what = what, attempt = info.attempt, elapsed = info.elapsed,
                      value = info.value, err = info.err})
      last_shown = shown
    end
    if console then console(info) end
    if spec.on_attempt then spec.on_attempt(info) end
  end
  local function on_done(info)
    if console then log.progress_done() end
    step_ctx.event({type = "poll", what = what, attempt = info.attempt, elapsed = info.elapsed,
                    value = info.value, err = info.err, outcome = info.outcome})
    if spec.on_done then spec.on_done(info) end
  end
  return on_attempt, on_done
end

--- Poll as described above.
---@param spec bomarun.PollSpec
---@return any value, string|nil err, string|nil code
function M.run(spec)
  local fn = spec[1] or spec.fn
  if type(fn) ~= "function" then error("poll: the first entry must be the function to call", 2) end
  if type(spec.timeout) ~= "number" then error("poll: timeout (seconds) is required", 2) end
  local is_ok = matcher(spec.ok, function(v) return v ~= nil and v ~= false end)
  local is_fail = matcher(spec.fail, function() return false end)
  local interval = spec.interval or 5
  local what = spec.what or "condition"
  local on_attempt, on_done = reporter(spec, what)
  local start = task.now()
  local deadline = start + spec.timeout
  local attempt = 0
  while true do
    attempt = attempt + 1
    local left = math.max(deadline - task.now(), 0.001)
    -- task.deadline: the poll's own bound is "DEADLINE"; a callee's
    -- nil, msg, "TIMEOUT" is its own failure and its message is kept.
    local r = table.pack(task.deadline(left, fn))
    local v, err
    if r[1] == nil and r[3] == "DEADLINE" and r.n == 3 then
      v, err = nil, "attempt " .. attempt .. " did not finish before the poll's deadline"
    else
      v, err = r[1], r[2]
      if v == nil and r[3] ~= nil then err = string.format("%s (%s)", tostring(err), tostring(r[3])) end
    end
    local last, last_err = v, (v == nil) and err or nil
    local elapsed = task.now() - start
    local info = {attempt = attempt, elapsed = elapsed, value = v, err = last_err}
    on_attempt(info)
    if v ~= nil and is_ok(v) then
      info.outcome = "ok"
      on_done(info)
      return v
    end
    if v ~= nil and is_fail(v) then
      info.outcome = "fail"
      on_done(info)
      return nil, string.format("%s reached failure state %s after %d attempt%s, %.1f s",
        what, show(v), attempt, attempt == 1 and "" or "s", elapsed), "FAILED_STATE", v
    end
    if task.now() >= deadline then
      info.outcome = "timeout"
      on_done(info)
      local last_desc = last ~= nil and show(last) or ("no value" .. (last_err and (": " .. last_err) or ""))
      return nil, string.format("%s: timed out after %.1f s (%d attempt%s); last: %s", what, elapsed,
        attempt, attempt == 1 and "" or "s", last_desc), "TIMEOUT", last
    end
    task.sleep(math.min(interval, math.max(deadline - task.now(), 0)))
  end
end

--- Progress reporting for the console: in place on a terminal.
--- Off a terminal, a line is printed only when the value changes or every
--- 30 s, so logs stay readable.
---@param what string  what is being waited for, shown on each line
---@return fun(info: {attempt: integer, elapsed: number, value: any, err: string|nil})
function M.console_progress(what)
  local last_v, last_t
  return function(info)
    local v = info.value ~= nil and show(info.value) or ("(" .. tostring(info.err or "no value") .. ")")
    if not log.tty then
      if v == last_v and last_t and info.elapsed - last_t < 30 then return end
      last_v, last_t = v, info.elapsed
    end
    log.progress(string.format("      ~ %s: attempt %d, %.0fs, last=%s", what, info.attempt, info.elapsed, v))
  end
end

return M

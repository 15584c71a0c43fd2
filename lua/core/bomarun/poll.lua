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
--- nil, message, "TIMEOUT" when time runs out.  Progress (attempt, elapsed,
--- last value) is reported as it goes.
local task = require "bomarun.task"
local log = require "bomarun.log"
local json = require "bomarun.json"

local M = {}

---@class bomarun.PollSpec
---@field [1] fun(): any           called on every attempt
---@field ok? any[]|fun(v: any): boolean   success states (default: any truthy value)
---@field fail? any[]|fun(v: any): boolean failure states: stop at once
---@field timeout number           seconds overall
---@field interval? number         seconds between attempts (default 5)
---@field what? string             what is being waited for, for messages
---@field on_attempt? fun(info: {attempt: integer, elapsed: number, value: any, err: string|nil})

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
    if ok then return #s > 120 and s:sub(1, 117) .. "..." or s end
  end
  return tostring(v)
end
M.show = show

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
  local start = task.now()
  local deadline = start + spec.timeout
  local attempt, last, last_err = 0, nil, nil
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
    last, last_err = v, (v == nil) and err or nil
    local elapsed = task.now() - start
    local info = {attempt = attempt, elapsed = elapsed, value = v, err = last_err}
    if spec.on_attempt then spec.on_attempt(info) end
    if v ~= nil and is_ok(v) then
      info.outcome = "ok"
      if spec.on_done then spec.on_done(info) end
      return v
    end
    if v ~= nil and is_fail(v) then
      info.outcome = "fail"
      if spec.on_done then spec.on_done(info) end
      return nil, string.format("%s reached failure state %s after %d attempt%s, %.1f s",
        what, show(v), attempt, attempt == 1 and "" or "s", elapsed), "FAILED_STATE", v
    end
    if task.now() >= deadline then
      info.outcome = "timeout"
      if spec.on_done then spec.on_done(info) end
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

--- Subprocesses: argv (no shell unless asked), streamed lines, process
--- groups killed on timeout or cancel.
---
--- r = proc.run{argv = {"cmd", "arg"}, timeout = 5, env = {K = "v"},
---              cwd = "/tmp", stdin = "text", prefix = "[name]"}
--- r.code, r.signal, r.stdout, r.stderr, r.duration
---
--- In a runbook step, every process group started is journaled: a
--- `proc_start` event {pgid, pid, argv0} once it runs and a `proc_end`
--- event {pgid, code, signal} once it is reaped, so `bomarun report` can
--- name the groups a killed run left behind.
local core = require "bomarun._proc"
local log = require "bomarun.log"
local secret = require "bomarun.secret"
local step = require "bomarun.step"
local task = require "bomarun.task"

local M = {}

---@class bomarun.ProcOptions
---@field argv? string[]        the program and its arguments (no shell)
---@field shell? string         a command line run by /bin/sh -c
---@field env? table<string, string|false>  added to (false: removed from) the environment
---@field clear_env? boolean    start from an empty environment
---@field cwd? string
---@field stdin? string         written to the child's stdin, then closed
---@field timeout? number       seconds; then SIGTERM to the group, SIGKILL after `grace`
---@field grace? number         seconds between SIGTERM and SIGKILL (default 2)
---@field drain? number         seconds to wait for the pipes after the child exits (default 2)
---@field prefix? string        echo each output line to the console with this prefix
---@field echo? boolean         echo output lines to the console
---@field quiet? boolean        keep lines out of the step log too
---@field on_line? fun(line: string, stream: "stdout"|"stderr")
---@field max_output? integer   bytes kept per stream (default 64 MiB)
---@field on_start? fun(pid: integer)  called once it runs (the pid is its process group's id)
---@field on_exit? fun(pid: integer, code: integer|nil, signal: string|nil)  called once it is reaped;
---                            like on_line it runs from the loop and cannot wait
---@field keep? boolean         (spawn) a service that outlives the task that started it;
---                            it is still killed when bomarun exits

---@class bomarun.ProcHandle  a running (or finished) process; closing it kills the group
---@field wait fun(self: bomarun.ProcHandle): bomarun.ProcResult|nil, string|nil, string|nil, bomarun.ProcResult|nil
---@field kill fun(self: bomarun.ProcHandle, sig?: string|integer): boolean|nil, string|nil, string|nil  signals the whole group (default TERM)
---@field terminate fun(self: bomarun.ProcHandle)  SIGTERM the group, SIGKILL after the grace period
---@field pid fun(self: bomarun.ProcHandle): integer
---@field done fun(self: bomarun.ProcHandle): boolean

---@class bomarun.ProcResult
---@field code integer|nil      exit status, nil when killed by a signal
---@field signal integer|nil    the terminating signal
---@field stdout string
---@field stderr string
---@field duration number       seconds
---@field pid integer
---@field timed_out boolean
---@field lingering boolean     the group held the pipes after exit and was killed

-- The host's description of a command (in its messages), uncut: sh -c
-- 'SHELL' or the argv joined by spaces.  It keeps DESC_MAX bytes of it.
local DESC_MAX = 199
local function full_desc(opts)
  if opts.shell ~= nil then return "sh -c '" .. tostring(opts.shell) .. "'" end
  if type(opts.argv) ~= "table" then return nil end
  local parts = {}
  for i = 1, #opts.argv do parts[i] = tostring(opts.argv[i]) end
  return table.concat(parts, " ")
end

-- That description redacted, then cut as the host cuts it.
local function describe(opts)
  local d = secret.redact(full_desc(opts) or "(no command)")
  return #d > DESC_MAX and d:sub(1, DESC_MAX - 3) .. "..." or d
end

-- Groups started in runbook steps and not reaped yet (pgid -> true), and
-- an event set each time one is reaped (M.settle waits on it).
local live, live_n, reaped = {}, 0, task.event()

-- The journal's view of a process group (a no-op outside a runbook step).
-- proc_start is emitted by the spawning task; proc_end comes from the loop
-- (there is no current task there), so it goes to the step captured now.
local function journal_hooks(opts, copy)
  local ctx = step.current()
  if not ctx then return end
  local argv0 = opts.shell and "sh -c" or (type(opts.argv) == "table" and tostring(opts.argv[1])) or "?"
  local user_start, user_exit = opts.on_start, opts.on_exit
  copy.on_start = function(pid)
    -- A group kept past its task (keep = true) is not waited for.
    if not opts.keep then live[pid], live_n = true, live_n + 1 end
    step.event({type = "proc_start", pgid = pid, pid = pid, argv0 = argv0})
    if user_start then user_start(pid) end
  end
  copy.on_exit = function(pid, code, signal)
    if live[pid] then live[pid], live_n = nil, live_n - 1 end
    reaped:set()
    ctx:event({type = "proc_end", pgid = pid, code = code, signal = signal})
    if user_exit then user_exit(pid, code, signal) end
  end
end

local function prepare(opts)
  if type(opts) ~= "table" then error("proc: expected a table of options", 3) end
  local user_on_line, prefix, echo = opts.on_line, opts.prefix, opts.echo
  local sink = not opts.quiet and log.sink() or nil
  local in_step = step.current() ~= nil
  if not (user_on_line or prefix or echo or sink or in_step) then return opts end
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  journal_hooks(opts, copy)
  if not (user_on_line or prefix or echo or sink) then return copy end
  local head = prefix and (prefix .. " ") or ""
  copy.on_line = function(line, stream)
    if sink then sink(secret.redact(head .. line)) end
    if prefix or echo then
      log.console(stream == "stderr" and head .. log.paint("grey", line) or head .. line)
    end
    if user_on_line then
      -- The host would print the failure with the command as it is: report
      -- it here, redacted, and go on reading.
      local ok, err = pcall(user_on_line, line, stream)
      if not ok then
        io.stderr:write(secret.redact(string.format("bomarun: on_line callback for %s failed: %s\n",
          describe(opts), tostring(err))))
      end
    end
  end
  return copy
end

local function redact_failure(opts, r, msg, code, res)
  if r == nil and type(msg) == "string" then
    -- The host cuts its description of the command at DESC_MAX bytes, maybe
    -- inside a secret, where redaction no longer recognises it: put the
    -- whole description back, redacted, then cut.
    local full = type(opts) == "table" and full_desc(opts)
    if full and #full > DESC_MAX then
      local a, b = msg:find(full:sub(1, DESC_MAX), 1, true)
      if a then msg = msg:sub(1, a - 1) .. describe(opts) .. msg:sub(b + 1) end
    end
    return nil, secret.redact(msg), code, res
  end
  return r, msg, code, res
end

--- Run a command to completion.  Returns the result table; an exit status
--- is data.  Returns nil, message, CODE (and the partial result on a
--- timeout: nil, msg, "TIMEOUT", r) when it cannot start or times out.
---@param opts bomarun.ProcOptions
---@return bomarun.ProcResult|nil, string|nil, string|nil, bomarun.ProcResult|nil
function M.run(opts)
  return redact_failure(opts, core.run(prepare(opts)))
end

--- Start a command and return a handle: h:wait(), h:kill(sig),
--- h:terminate(), h:pid(), h:done().
---@param opts bomarun.ProcOptions
---@return bomarun.ProcHandle|nil handle, string|nil err, string|nil code
function M.spawn(opts)
  return redact_failure(opts, core.spawn(prepare(opts)))
end

--- Wait until every process group a runbook step started has been reaped
--- (and its proc_end journaled), for at most `timeout` seconds.  A
--- cancelled step's groups are still dying (SIGTERM, SIGKILL after the
--- grace period) when the step's task has ended; the runner waits for them
--- before its last event so the journal does not show them as left behind.
---@param timeout number  seconds
---@return boolean settled  true when none is left
function M.settle(timeout)
  local deadline = task.now() + timeout
  while live_n > 0 do
    local left = deadline - task.now()
    if left <= 0 then return false end
    reaped:clear()
    reaped:wait(left)
  end
  return true
end

--- Quote a string for /bin/sh.
---@param s string
---@return string
function M.quote(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

return M

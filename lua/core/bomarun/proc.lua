--- Subprocesses: argv (no shell unless asked), streamed lines, process
--- groups killed on timeout or cancel.
---
--- r = proc.run{argv = {"cmd", "arg"}, timeout = 5, env = {K = "v"},
---              cwd = "/tmp", stdin = "text", prefix = "[name]"}
--- r.code, r.signal, r.stdout, r.stderr, r.duration
local core = require "bomarun._proc"
local log = require "bomarun.log"
local secret = require "bomarun.secret"

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

local function prepare(opts)
  if type(opts) ~= "table" then error("proc: expected a table of options", 3) end
  local user_on_line, prefix, echo = opts.on_line, opts.prefix, opts.echo
  local sink = not opts.quiet and log.sink() or nil
  if not (user_on_line or prefix or echo or sink) then return opts end
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  local head = prefix and (prefix .. " ") or ""
  copy.on_line = function(line, stream)
    if sink then sink(secret.redact(head .. line)) end
    if prefix or echo then
      log.console(stream == "stderr" and head .. log.paint("grey", line) or head .. line)
    end
    if user_on_line then user_on_line(line, stream) end
  end
  return copy
end

local function redact_failure(r, msg, code, res)
  if r == nil and msg then return nil, secret.redact(msg), code, res end
  return r, msg, code, res
end

--- Run a command to completion.  Returns the result table; an exit status
--- is data.  Returns nil, message, CODE (and the partial result on a
--- timeout: nil, msg, "TIMEOUT", r) when it cannot start or times out.
---@param opts bomarun.ProcOptions
---@return bomarun.ProcResult|nil, string|nil, string|nil, bomarun.ProcResult|nil
function M.run(opts)
  return redact_failure(core.run(prepare(opts)))
end

--- Start a command and return a handle: h:wait(), h:kill(sig),
--- h:terminate(), h:pid(), h:done().
---@param opts bomarun.ProcOptions
---@return bomarun.ProcHandle|nil handle, string|nil err, string|nil code
function M.spawn(opts)
  return redact_failure(core.spawn(prepare(opts)))
end

--- Quote a string for /bin/sh.
---@param s string
---@return string
function M.quote(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

return M

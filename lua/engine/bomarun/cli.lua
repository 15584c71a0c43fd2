--- The command line.  main(argv) runs as the main task and returns the
--- process exit status.
require "bomarun.boot"
local host = require "bomarun._host"

local M = {}

M.EXIT_OK, M.EXIT_FAIL, M.EXIT_USAGE, M.EXIT_INTERRUPTED, M.EXIT_TERMINATED = 0, 1, 2, 130, 143
M.EXIT_EVIDENCE = 3   -- the journal or a report could not be written

local HELP = [[
usage: bomarun RUNBOOK.lua [options]      run a runbook
       bomarun plan RUNBOOK.lua [options]  show what it would do; run nothing
       bomarun report RUN_DIR              rebuild a run's reports from its journal
       bomarun SCRIPT.lua [args...]        run any Lua script inside the host
       bomarun -e CODE [args...]           run a chunk of Lua inside the host
       bomarun --version | --help

Runbook options:
  --plan              show phases, steps, gates, acceptance items and
                      mutations without running any step body
  --profile NAME      site constants: profiles/NAME.lua or a path
                      (default: the runbook's `profile`, else none)
  --set KEY=VALUE     override a profile constant (repeatable)
  --only STEP         run only this step or acceptance item (repeatable)
  --from STEP         start at this step; earlier ones are skipped
  --resume RUN_DIR    re-run a failed run, skipping steps that passed and
                      restoring what they captured
  --keep              do not run cleanups on failure or interrupt
  --run-dir DIR       where run directories go (default ./runs, or
                      $BOMARUN_RUN_DIR)
  --strict            OUTSTANDING acceptance items fail the run
  --no-color          no colour even on a terminal (so does NO_COLOR=1)

Exit status: 0 every gate passed (DEFERRED allowed); 1 a gate, check,
step or acceptance item failed; 2 usage or runbook error (bad option,
syntax error, missing profile constant, a file that returns neither a
runbook nor an exit status 0..255); 3 the evidence could not be written
(journal or report: a full disk, say); 130 interrupted by SIGINT (143 by
SIGTERM): tasks cancelled, cleanups run, reports written.  A script's
exit status is what it returns (an integer 0..255; nothing: 0).

Each run writes RUN_DIR/events.jsonl (the journal), steps/*.log,
report.json, junit.xml and summary.txt.  Docs: docs/runbooks.md.
]]

local function usage_error(msg)
  io.stderr:write("bomarun: " .. msg .. "\n(see bomarun --help)\n")
  return M.EXIT_USAGE
end

---@class bomarun.RunbookOptions  the parsed runbook options
---@field set {[1]: string, [2]: string}[]  --set KEY=VALUE pairs, in order
---@field only string[]      --only STEP ids
---@field plan? boolean
---@field profile? string
---@field from? string
---@field resume? string     a run directory
---@field keep? boolean
---@field run_dir? string
---@field strict? boolean
---@field no_color? boolean

--- Parse runbook options from args[first..].  An `--opt=value` argument is
--- split in place (args gains an entry).  Raises on anything but a usage
--- error, which comes back as nil, message.
---@param args string[]
---@param first? integer  default 1
---@return bomarun.RunbookOptions|nil opts, string|nil err
function M.parse_runbook_options(args, first)
  local o = {set = {}, only = {}}
  local i = first or 1
  local function value(name)
    i = i + 1
    local v = args[i]
    if v == nil then error({usage = name .. " needs a value"}) end
    return v
  end
  local ok, err = pcall(function()
    while i <= #args do
      local a = args[i]
      local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
      if name then
        a = name
        table.insert(args, i + 1, inline)
      end
      if a == "--plan" then o.plan = true
      elseif a == "--profile" then o.profile = value(a)
      elseif a == "--set" then
        local kv = value(a)
        local k, v = kv:match("^([%w_.%-]+)=(.*)$")
        if not k then error({usage = "--set expects KEY=VALUE, got '" .. kv .. "'"}) end
        o.set[#o.set + 1] = {k, v}
      elseif a == "--only" then o.only[#o.only + 1] = value(a)
      elseif a == "--from" then o.from = value(a)
      elseif a == "--resume" then o.resume = value(a)
      elseif a == "--keep" then o.keep = true
      elseif a == "--run-dir" then o.run_dir = value(a)
      elseif a == "--strict" then o.strict = true
      elseif a == "--no-color" or a == "--no-colour" then o.no_color = true
      else error({usage = "unknown option '" .. a .. "'"}) end
      i = i + 1
    end
  end)
  if not ok then
    if type(err) == "table" and err.usage then return nil, err.usage end
    error(err, 0)
  end
  return o
end

local function is_runbook(v)
  return type(v) == "table" and getmetatable(v) and getmetatable(v).__name == "bomarun.runbook"
end

-- Text only ("t"): precompiled bytecode is not a runbook (it cannot be
-- read, shown in plan mode or trusted: a crafted chunk can crash Lua).
local function load_file(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then
    local f = io.open(path, "r")
    if not f then
      return nil, "cannot open " .. path .. ": no such file or not readable"
    end
    f:close()
    if err:find("binary chunk", 1, true) then
      return nil, path .. ": precompiled bytecode is not accepted: runbooks and scripts are loaded as Lua text"
    end
    return nil, err
  end
  return chunk
end

local function run_runbook_value(rb, args, first, forced_plan)
  local opts, err = M.parse_runbook_options(args, first)
  if not opts then return usage_error(err) end
  if forced_plan then opts.plan = true end
  local runner = require "bomarun.runner"
  return runner.main(rb, opts)
end

-- The line of `runbook{` (or runbook.new / runbook(...)) in a runbook
-- file, for definition errors raised where the file's own frame is gone
-- (`return runbook{...}` is a tail call).  Best-effort: the last such line.
local function runbook_line(path)
  local f = path and io.open(path, "r")
  if not f then return nil end
  local n, found = 0, nil
  for line in f:lines() do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    if code:find("%f[%w_]runbook%s*{") or code:find("%f[%w_]runbook%s*%(") or code:find("%f[%w_]runbook%.new%s*[{(]") then
      found = n
    end
  end
  f:close()
  return found
end

-- A chunk's error as an exit status.  `path` is the file it came from;
-- an error in a runbook file (one that loaded bomarun.runbook, or under
-- plan) is a runbook error, exit 2, like a syntax error.
local function script_error(err, path, runbook_file)
  local code = require("bomarun.task").cancel_code(err)
  local escape = require("bomarun.json").escape_utf8
  if code == "INTERRUPTED" then
    io.stderr:write("bomarun: " .. tostring(err) .. "\n")
    return tostring(err):find("SIGTERM", 1, true) and M.EXIT_TERMINATED or M.EXIT_INTERRUPTED
  end
  if type(err) == "table" and err.runbook_error then
    local msg = tostring(err.message)
    if err.located == false and path then
      local line = runbook_line(path)
      msg = path .. (line and (":" .. line) or "") .. ": " .. msg
    end
    io.stderr:write("bomarun: " .. escape(msg) .. "\n")
    return M.EXIT_USAGE
  end
  local msg = type(err) == "table" and (err.message or tostring(err)) or tostring(err)
  if type(err) == "table" and err.traceback then msg = msg .. "\n" .. err.traceback end
  msg = escape(require("bomarun.secret").redact(msg))
  if runbook_file then
    io.stderr:write("bomarun: cannot load the runbook " .. escape(path) .. ": " .. msg .. "\n")
    return M.EXIT_USAGE
  end
  io.stderr:write("bomarun: " .. msg .. "\n")
  return M.EXIT_FAIL
end

-- What a script (or -e chunk) returned, as an exit status: nothing (or
-- nil) is 0, an integer 0..255 is itself; anything else is an error (exit
-- 2): a table that is not a runbook{} (a step, a phase, a plain table), a
-- number out of range, a string, a boolean.
local function returned_status(v, n, what)
  if n == 0 or v == nil then return M.EXIT_OK end
  local i = math.type(v) and math.tointeger(v)
  if i and i >= 0 and i <= 255 then return i end
  local desc
  if type(v) == "table" then
    local kind = rawget(v, "kind")
    if kind == "step" or kind == "phase" or kind == "acceptance" or kind == "item" then
      desc = "a runbook." .. kind .. "{...}, not a runbook: return runbook{id = ..., title = ..., steps...}"
    else
      desc = "a table that is not a runbook (build it with runbook{...}: " ..
        "local runbook = require \"bomarun.runbook\"; return runbook{...})"
    end
  elseif math.type(v) then
    desc = "the number " .. tostring(v) .. ", not an exit status (an integer 0..255)"
  else
    desc = "a " .. type(v) .. ", not a runbook or an exit status (an integer 0..255)"
  end
  io.stderr:write("bomarun: " .. require("bomarun.json").escape_utf8(what) .. " returned " .. desc .. "\n")
  return M.EXIT_USAGE
end

-- Run FILE: a runbook (the chunk returns one) or any script.
local function run_file(path, args, first, forced_plan)
  local chunk, err = load_file(path)
  if not chunk then
    io.stderr:write("bomarun: " .. err .. "\n")
    return M.EXIT_USAGE
  end
  local script_args = {[0] = path}
  for k = first, #args do script_args[#script_args + 1] = args[k] end
  _G.arg = script_args
  local r = table.pack(xpcall(chunk, function(e)
    if type(e) == "string" then return debug.traceback(e, 2) end
    return e
  end, table.unpack(script_args, 1, #script_args)))
  if not r[1] then
    return script_error(r[2], path, forced_plan or package.loaded["bomarun.runbook"] ~= nil)
  end
  if is_runbook(r[2]) then
    r[2].source = r[2].source or path
    return run_runbook_value(r[2], args, first, forced_plan)
  end
  if forced_plan then
    return usage_error(path .. " did not return a runbook (plan needs one)")
  end
  return returned_status(r[2], r.n - 1, path)
end

--- Run the command line `args` (argv without the program name); returns
--- the process exit status (EXIT_OK, EXIT_FAIL, EXIT_USAGE, ...).
---@param args string[]
---@return integer exit_status
function M.main(args)
  local a = args[1]
  if a == nil or a == "--help" or a == "-h" or a == "help" then
    io.stdout:write(HELP)
    return a == nil and M.EXIT_USAGE or M.EXIT_OK
  end
  if a == "--version" or a == "-V" then
    io.stdout:write("bomarun " .. host.version .. " (" .. _VERSION .. ")\n")
    return M.EXIT_OK
  end
  if a == "-e" then
    local code = args[2]
    if not code then return usage_error("-e needs a chunk of Lua") end
    local chunk, err = load(code, "=(command line)", "t")
    if not chunk then
      io.stderr:write("bomarun: " .. err .. "\n")
      return M.EXIT_USAGE
    end
    local rest = {[0] = "-e"}
    for k = 3, #args do rest[#rest + 1] = args[k] end
    _G.arg = rest
    local r = table.pack(xpcall(chunk, function(x)
      if type(x) == "string" then return debug.traceback(x, 2) end
      return x
    end, table.unpack(rest, 1, #rest)))
    if not r[1] then return script_error(r[2]) end
    return returned_status(r[2], r.n - 1, "the -e chunk")
  end
  if a == "report" then
    if not args[2] then return usage_error("report needs a run directory") end
    return require("bomarun.report").cli(args[2])
  end
  if a == "plan" then
    if not args[2] then return usage_error("plan needs a runbook file") end
    return run_file(args[2], args, 3, true)
  end
  if a == "--plan" then
    if not args[2] then return usage_error("--plan needs a runbook file") end
    return run_file(args[2], args, 3, true)
  end
  if a:sub(1, 1) == "-" then return usage_error("unknown option '" .. a .. "'") end
  return run_file(a, args, 2, false)
end

return M

--- Ansible under supervision: playbook and ad-hoc runs with structured
--- results, live prefixed output and clean cancellation.
---
---   local ansible = require "bomarun.ansible"
---   local res = ansible.playbook{playbook = "site.yml" --[[ or play = {...} ]],
---                                inventory = "inv.ini" --[[ or a table ]],
---                                extra_vars = {...}, tags = {...}, limit = "host",
---                                check = false, timeout = 600, prefix = "[name]"}
---   -- res.ok, res.recap[host] = {ok=, changed=, failed=, unreachable=, skipped=},
---   -- res.events = { {host=, task=, status=, duration=, msg=}, ... }
---
--- ansible-playbook runs through bomarun.proc, in its own process group
--- (killed whole on timeout or cancel).  The results come from Ansible
--- itself: a callback plugin shipped next to this file
--- (plugins/callback/bomarun.py) appends one JSON object per task
--- result to an events file in a private temporary directory, which this
--- module tails while the process runs.  The raw stdout is never parsed.
local command = require "bomarun.ansible.command"
local files = require "bomarun.ansible.files"
local inventory = require "bomarun.ansible.inventory"
local json = require "bomarun.json"
local log = require "bomarun.log"
local proc = require "bomarun.proc"
local results = require "bomarun.ansible.results"
local secret = require "bomarun.secret"
local step_ctx = require "bomarun.step"
local task = require "bomarun.task"
local yaml = require "bomarun.ansible.yaml"

local M = {}

--- The directory of the callback plugin (plugins/callback next to this file).
---@type string
M.plugin_dir = command.PLUGIN_DIR

local POLL_INTERVAL = 0.1

--- Render a Lua value as YAML the way a person would write it: block maps
--- and lists, `name` first and `tasks`/`handlers` last, strings quoted only
--- where YAML 1.1 would misread them, multi-line strings as literal blocks.
--- Tables marked with json.array()/json.object() keep their kind when empty.
--- Raises on values YAML cannot carry (functions, cycles, invalid UTF-8).
---@param v any
---@return string
function M.to_yaml(v)
  return yaml.encode(v)
end

--- Turn an inventory table into Ansible's YAML inventory structure
--- ({all = {hosts =, vars =, children =}}).  Accepts Ansible's own shape
--- (a table with `all`) unchanged, or the friendly one:
---   {hosts = {web1 = {ansible_host = "10.0.0.5"}, "db1"},   -- map or list
---    groups = {web = {hosts = {"web1"}, vars = {...}, children = {"db"}}},
---    vars = {...},                                           -- all:vars
---    connection = {type =, user =, port =, key =, known_hosts =, python =,
---                  host_key_checking =, ssh_args =, password =, become_password =}}
---@param inv table
---@return table
function M.inventory_structure(inv)
  return inventory.structure(inv)
end

--- Render an inventory table (see inventory_structure) as YAML text.
---@param inv table
---@return string
function M.render_inventory(inv)
  return inventory.render(inv)
end

--- Say in one line what a result means for a gate: the failed tasks with
--- their hosts and messages, the unreachable hosts, a non-idempotent second
--- pass, or why ansible itself failed.
---@param res bomarun.AnsibleResult
---@return string
function M.describe(res)
  return results.describe(res)
end

--- Gate a runbook step on a result: no failed task, no unreachable host
--- (and, after ansible.idempotent, no change on the second pass).  Takes the
--- values a run returns, so `ansible.gate(s, ansible.playbook{...})` works;
--- a timeout fails the gate with its message.  Returns res.
--- The step may be left out (`ansible.gate(res, err)`): the current step is
--- used then.
---@param s bomarun.StepLike|bomarun.AnsibleResult|nil  the step (optional)
---@param res bomarun.AnsibleResult|nil
---@param err? string
---@return bomarun.AnsibleResult|nil
function M.gate(s, res, err)
  if not (type(s) == "table" and type(s.gate) == "function") then
    s, res, err = step_ctx.current(), s, res
    if not s then error("ansible.gate: not in a runbook step (pass the step: ansible.gate(s, res))", 2) end
  end
  -- Level 2: the gate records the runbook's line, not this one.
  if res == nil then return s:gate(false, err or "ansible: no result", 2) end
  local r = s:gate(res.ok and res, M.describe(res), 2)
  return r
end

-- The run ---------------------------------------------------------------------

---@class bomarun.AnsibleEvent
---@field host string
---@field task string
---@field status "ok"|"changed"|"failed"|"unreachable"|"skipped"
---@field duration number|nil   seconds
---@field msg string|nil
---@field play string|nil
---@field action string|nil     the module
---@field changed boolean
---@field ignored boolean|nil   a failure under ignore_errors
---@field rc integer|nil
---@field stdout string|nil     (commands and failures; cut at 4 KB)
---@field stderr string|nil
---@field handler boolean|nil
---@field delegated_to string|nil

---@class bomarun.AnsibleRecap
---@field ok integer            (Ansible's count: includes changed)
---@field changed integer
---@field failed integer
---@field unreachable integer
---@field skipped integer
---@field rescued integer
---@field ignored integer

---@class bomarun.AnsibleResult
---@field ok boolean            exit 0, no failed task and no unreachable host
---@field recap table<string, bomarun.AnsibleRecap>
---@field events bomarun.AnsibleEvent[]
---@field totals bomarun.AnsibleRecap  summed over hosts
---@field failures bomarun.AnsibleEvent[]   failed (not ignored) and unreachable results
---@field changed_tasks bomarun.AnsibleEvent[]
---@field code integer|nil      exit status
---@field signal integer|nil
---@field duration number       seconds
---@field stdout string         Ansible's own output (its stdout callback)
---@field stderr string
---@field msg string            ansible.describe(res)
---@field name string
---@field plays string[]
---@field no_hosts boolean      a play matched no host
---@field timed_out boolean
---@field command string        the command line (secrets are in files, never here)
---@field dir string|nil        evidence directory (output.log, events.jsonl, inventory.yml, play.yml)
---@field idempotent boolean|nil  (ansible.idempotent) no change on the second pass
---@field first bomarun.AnsibleResult|nil  (ansible.idempotent) the first pass

---@class bomarun.AnsibleOptions
---@field playbook? string|string[]  playbook path(s), relative to cwd
---@field play? table           an inline play (or list of plays), rendered to YAML
---@field play_dir? string      where an inline play is written (roles/, files/ next to it resolve); default: a private temp dir
---@field inventory? string|string[]|table  path(s), "h1,h2," host list, or a table (see inventory_structure)
---@field extra_vars? table|string|(table|string)[]  a map; "@file" or "k=v" strings; or a list of these
---@field extra_vars_files? string[]  passed as -e @file
---@field secret_vars? table    extra vars whose values are secrets: a 0600 file, removed after the run
---@field vault_password? string|bomarun.SecretRef  written to a 0600 file, removed after the run
---@field vault_password_file? string  an existing vault password file (used as is)
---@field become_password? string|bomarun.SecretRef  as ansible_become_password, through the secret vars file
---@field tags? string|string[]
---@field skip_tags? string|string[]
---@field limit? string|string[]
---@field check? boolean        --check
---@field diff? boolean         --diff
---@field forks? integer
---@field become? boolean
---@field become_user? string
---@field become_method? string
---@field verbose? integer      number of -v
---@field extra_args? string[]  appended to the command line
---@field env? table<string, string|false>  added to ansible's environment
---@field cwd? string
---@field timeout? number       seconds; then the process group is killed (SIGTERM, SIGKILL after grace)
---@field grace? number         default 2
---@field drain? number         seconds to wait for the pipes after exit (default 2)
---@field prefix? string        console/step-log prefix, default "[NAME]"
---@field name? string          the run's name (default from prefix, playbook or play)
---@field echo? boolean         print one line per task result on the console (default true)
---@field on_event? fun(ev: bomarun.AnsibleEvent)  called for each task result as it arrives
---@field dir? string|false     evidence directory (default: under the run directory in a step; false: none)
---@field tmp_dir? string       parent of the private temp directory (default $TMPDIR or /tmp)
---@field remote_tmp? string    ANSIBLE_REMOTE_TEMP (default: inside the private temp directory)
---@field host_key_checking? boolean  ANSIBLE_HOST_KEY_CHECKING (default: Ansible's, on)
---@field program? string       default "ansible-playbook" ("ansible" for adhoc)

local function default_name(opts, kind)
  if opts.name then return opts.name end
  if opts.prefix then
    local inner = opts.prefix:match("^%[(.-)%]$")
    return inner or opts.prefix
  end
  if kind == "adhoc" then return opts.module or "ansible" end
  if opts.playbook then
    local p = type(opts.playbook) == "table" and opts.playbook[1] or opts.playbook
    return (tostring(p):match("([^/]+)$") or "playbook"):gsub("%.ya?ml$", "")
  end
  if type(opts.play) == "table" then
    local first = opts.play[1] or opts.play
    if type(first) == "table" and type(first.name) == "string" then return first.name end
  end
  return "ansible"
end

local function quote_argv(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = proc.quote(a) end
  return table.concat(out, " ")
end

local KNOWN = {}
for k in ([[playbook play play_dir inventory extra_vars extra_vars_files secret_vars vault_password
  vault_password_file become_password tags skip_tags limit check diff forks become become_user
  become_method verbose extra_args env cwd timeout grace drain prefix name echo on_event dir tmp_dir
  remote_tmp host_key_checking program hosts module args]]):gmatch("%S+") do
  KNOWN[k] = true
end
local ADHOC_ONLY = {hosts = true, module = true, args = true}
local PLAYBOOK_ONLY = {playbook = true, play = true, play_dir = true, tags = true, skip_tags = true}

-- Level 3: M.playbook and M.adhoc tail-call run, which calls this, so the
-- error names their caller's line.
local function check_options(kind, opts)
  if type(opts) ~= "table" then error("ansible." .. kind .. ": expected a table of options", 3) end
  -- A misspelt option must not be dropped without anyone noticing.
  for k in pairs(opts) do
    if not KNOWN[k] or (kind == "playbook" and ADHOC_ONLY[k]) or (kind == "adhoc" and PLAYBOOK_ONLY[k]) then
      error(string.format("ansible.%s: unknown option '%s'", kind, tostring(k)), 3)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("ansible: timeout must be a positive number of seconds", 3)
  end
end

-- Evidence, the collector and the start lines, once the command is known.
local function start(r, cmdline)
  local opts = r.opts
  r.evdir = files.evidence_dir(opts, r.step, r.name)
  if r.evdir then
    for fname, text in pairs(r.w.evidence_files) do
      files.write_file(r.evdir .. "/" .. fname, secret.redact(text))
    end
  end
  r.collector = results.collector{path = r.w.events, prefix = r.prefix, name = r.name, step = r.step,
                                  sink = r.sink, echo = opts.echo ~= false, on_event = opts.on_event,
                                  evidence = r.evdir}
  if r.sink then
    r.sink(r.prefix .. " " .. cmdline)
    if r.evdir then r.sink(r.prefix .. " evidence: " .. r.evdir) end
  end
  if r.step then
    r.step:event({type = "ansible_start", run = r.name, command = cmdline, dir = r.evdir,
                  check = opts.check or nil})
  end
  local out = r.evdir and io.open(r.evdir .. "/output.log", "ab")
  if out then out:setvbuf("line") end
  r.w.out = out
end

-- Spawn the command and wait for it while a task tails the events file.
-- Returns what proc's wait returns, or nil, msg, CODE when it cannot start.
local function spawn_and_wait(r, argv, env)
  local opts, out, sink, prefix = r.opts, r.w.out, r.sink, r.prefix
  local on_line = function(line, stream)
    if out then out:write(stream == "stderr" and "! " or "", secret.redact(line), "\n") end
    if stream == "stderr" and sink and line:match("%S") then sink(prefix .. " ! " .. line) end
  end
  local h, serr, scode = proc.spawn{argv = argv, env = env, cwd = opts.cwd, timeout = opts.timeout,
                                    grace = opts.grace, drain = opts.drain, quiet = true, on_line = on_line}
  if not h then
    if out then out:close() end
    return nil, "ansible: " .. r.name .. ": " .. tostring(serr), scode
  end
  r.w.pid = h:pid()
  local collector = r.collector
  local tailer = task.spawn_named("ansible events " .. r.name, function()
    while true do
      collector:pump()
      task.sleep(POLL_INTERVAL)
    end
  end)
  local pr, pmsg, pcode, ppartial = h:wait()
  tailer:cancel()
  collector:pump()
  collector:close()
  if out then out:close() end
  return pr, pmsg, pcode, ppartial
end

-- Build the command and run it: proc's results, or nil, msg, CODE.
local function execute(r)
  local argv, env_or_err, code = command.build(r.kind, r.opts, r.w)
  if not argv then return nil, env_or_err, code end
  r.program = argv[1]
  r.command = quote_argv(argv)
  start(r, r.command)
  return spawn_and_wait(r, argv, env_or_err)
end

-- Cancelled (or a programmer error): nothing may wait any more.  Keep what
-- evidence there is, remove the secrets at once and let a detached cleaner
-- end the rest; then raise err again.
local function abort(r, err)
  if r.w.out then pcall(r.w.out.close, r.w.out) end
  local collector = r.collector
  if collector then
    pcall(collector.pump, collector)
    pcall(collector.close, collector)
    if task.cancel_code(err) then
      pcall(collector.say, collector, "cancelled (" .. tostring(err) .. "): the process group is killed")
    end
  end
  files.remove_private(r.w, false)
  error(err, 0)
end

-- The result table of a finished (or timed-out) run.
local function build_result(r, pr, timed_out)
  local collector, opts = r.collector, r.opts
  local events = collector.events
  local recap = collector.recap or results.recap_from_events(events)
  local res = {name = r.name, events = events, recap = recap, plays = collector.plays,
               no_hosts = collector.no_hosts, code = pr.code, signal = pr.signal, duration = pr.duration,
               stdout = pr.stdout, stderr = pr.stderr, command = r.command, dir = r.evdir,
               timed_out = timed_out, timeout = opts.timeout, program = r.program,
               lingering = pr.lingering or nil}
  res.totals = results.count_totals(recap)
  res.failures, res.changed_tasks = results.failures_and_changes(events, recap)
  res.ok = not timed_out and pr.code == 0 and res.totals.failed == 0 and res.totals.unreachable == 0
  res.msg = M.describe(res)
  return res
end

-- The recap and verdict lines, and the recap event in the journal.
local function report(r, res)
  local collector, opts = r.collector, r.opts
  local hosts = {}
  for h in pairs(res.recap) do hosts[#hosts + 1] = h end
  table.sort(hosts)
  for _, h in ipairs(hosts) do collector:say(results.recap_line(h, res.recap[h])) end
  local verdict
  if res.timed_out then
    verdict = string.format("TIMEOUT after %g s: the process group was killed", opts.timeout)
  elseif res.ok then
    verdict = string.format("ok in %.1fs (changed=%d)", res.duration, res.totals.changed)
  else
    verdict = string.format("FAILED in %.1fs: %s", res.duration, res.msg)
  end
  if res.lingering then
    collector:say(string.format("a leftover process held ansible's output after it exited: its group was killed after %g s",
      opts.drain or 2))
  end
  collector:say(verdict, log.colour() and log.paint(res.ok and "green" or "red", verdict) or verdict)
  if r.step then
    r.step:event({type = "ansible_recap", run = r.name, ok = res.ok, code = res.code, signal = res.signal,
                  duration = res.duration, recap = res.recap, totals = res.totals,
                  timed_out = res.timed_out or nil, msg = res.msg, dir = res.dir})
  end
end

-- r, the run's state: kind, opts, name, prefix, step, sink, its files (w);
-- execute adds program, command, evdir and the collector.
local function run(kind, opts)
  check_options(kind, opts)
  local name = default_name(opts, kind)
  local r = {kind = kind, opts = opts, name = name, prefix = opts.prefix or ("[" .. name .. "]"),
             step = step_ctx.current(), sink = log.sink()}
  local tmp, terr = files.private_dir(opts)
  if not tmp then return nil, terr, "FILE" end
  r.w = {tmp = tmp, files = {tmp .. "/events.jsonl"}, secret_files = {}, evidence_files = {},
         events = tmp .. "/events.jsonl"}

  local ok, pr, msg, rcode, partial = pcall(execute, r)
  if not ok then abort(r, pr) end
  files.remove_private(r.w, true)
  if r.collector and r.collector.callback_error then
    error("ansible: on_event raised: " .. tostring(r.collector.callback_error), 2)
  end

  pr = pr or partial
  if not pr then return nil, msg, rcode end      -- could not start, or a secret could not be read
  local timed_out = rcode == "TIMEOUT"
  local res = build_result(r, pr, timed_out)
  report(r, res)
  if timed_out then
    return nil, string.format("ansible: %s: %s timed out after %g s; its process group was killed",
      name, r.program, opts.timeout), "TIMEOUT", res
  end
  return res
end

--- Run ansible-playbook on a playbook file or an inline play.
--- A failing play is data: res.ok is false, res.msg says why.  Returns
--- nil, msg, CODE when it cannot run (ENOENT, SECRET, FILE) and
--- nil, msg, "TIMEOUT", partial_res on a timeout.  Raises on bad options;
--- cancellation kills the process group and raises.
---@param opts bomarun.AnsibleOptions
---@return bomarun.AnsibleResult|nil res
---@return string|nil err
---@return string|nil code
---@return bomarun.AnsibleResult|nil partial
function M.playbook(opts)
  return run("playbook", opts)
end

---@class bomarun.AnsibleAdhocOptions: bomarun.AnsibleOptions
---@field hosts string|string[]  host pattern
---@field module string          e.g. "ansible.builtin.command"
---@field args? string|table     "k=v ..." / free form, or a table (sent as JSON)

--- Run one module ad hoc (`ansible HOSTS -m MODULE -a ARGS`) with the same
--- structured results as a playbook.
---@param opts bomarun.AnsibleAdhocOptions
---@return bomarun.AnsibleResult|nil res
---@return string|nil err
---@return string|nil code
---@return bomarun.AnsibleResult|nil partial
function M.adhoc(opts)
  return run("adhoc", opts)
end

--- Apply twice and gate on the second pass, as Molecule's idempotence
--- check does: returns the second run's result with res.first (the first
--- run), res.idempotent (no task changed on the second run) and res.ok
--- true only when both runs passed and nothing changed the second time;
--- res.changed_tasks names what changed.  If the first run fails, it is
--- returned (ok = false) and there is no second run.
---@param opts bomarun.AnsibleOptions
---@return bomarun.AnsibleResult|nil res
---@return string|nil err
---@return string|nil code
---@return bomarun.AnsibleResult|nil partial
function M.idempotent(opts)
  local first, err, code, partial = M.playbook(opts)
  if not first then return nil, err, code, partial end
  if not first.ok then
    first.msg = "first apply failed: " .. first.msg
    return first
  end
  local second_opts = {}
  for k, v in pairs(opts) do second_opts[k] = v end
  local name = default_name(opts, "playbook")
  second_opts.name = name
  second_opts.prefix = opts.prefix or ("[" .. name .. "]")
  if type(opts.dir) == "string" then second_opts.dir = opts.dir .. "/second" end
  local sink = log.sink()
  local line = second_opts.prefix .. " idempotence: applying again, expecting changed=0"
  if sink then sink(line) end
  if opts.echo ~= false then log.console(line) end
  local second, err2, code2, partial2 = M.playbook(second_opts)
  if not second then return nil, err2, code2, partial2 end
  second.first = first
  second.idempotent = #second.changed_tasks == 0 and second.totals.changed == 0
  second.ok = second.ok and second.idempotent
  second.msg = M.describe(second)
  local step = step_ctx.current()
  if step then
    local changed = {}
    for _, ev in ipairs(second.changed_tasks) do changed[#changed + 1] = {task = ev.task, host = ev.host} end
    step:event({type = "ansible_idempotence", run = name, idempotent = second.idempotent,
                changed = json.array(changed), msg = second.msg})
  end
  local verdict = second.idempotent and "idempotent: nothing changed on the second run"
    or ("NOT idempotent: " .. #second.changed_tasks .. " task result(s) changed on the second run")
  if sink then sink(second_opts.prefix .. " " .. verdict) end
  if opts.echo ~= false then
    log.console(second_opts.prefix .. " " .. (log.colour() and log.paint(second.idempotent and "green" or "red", verdict)
      or verdict))
  end
  return second
end

return M

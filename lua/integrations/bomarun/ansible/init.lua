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
local host = require "bomarun._host"
local json = require "bomarun.json"
local log = require "bomarun.log"
local proc = require "bomarun.proc"
local secret = require "bomarun.secret"
local task = require "bomarun.task"
local step_ctx = require "bomarun.step"

local M = {}

-- Where the callback plugin lives: next to this file, so an installed tree
-- (cmake --install copies lua/ wholesale) finds it the same way.
local function plugin_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/[^/]*$") or "."
  dir = dir .. "/plugins/callback"
  return host.realpath(dir) or dir
end
local PLUGIN_DIR = plugin_dir()

M.plugin_dir = PLUGIN_DIR

local POLL_INTERVAL = 0.1
local CONSOLE_MSG = 200        -- characters of a message on the console
local LOG_MSG = 4000           -- ... and in the step log

-- YAML ----------------------------------------------------------------------

-- Keys a person writes first or last; everything else is alphabetical in
-- between (module names before task keywords).
local KEY_RANK = {name = 0, hosts = 1, import_playbook = 1, include_tasks = 1, import_tasks = 1,
                  include_role = 1, import_role = 1, block = 90, rescue = 91, always = 92,
                  vars = 70, vars_files = 71, pre_tasks = 78, roles = 79, tasks = 80, post_tasks = 81,
                  handlers = 85}
local KEYWORDS = {}
for k in ([[action any_errors_fatal args async become become_method become_user become_flags
  changed_when check_mode collections connection debugger delay delegate_facts delegate_to diff
  environment failed_when gather_facts gather_subset gather_timeout ignore_errors ignore_unreachable
  listen local_action loop loop_control max_fail_percentage module_defaults no_log notify order poll
  port register remote_user retries run_once serial strategy tags throttle timeout until when
  with_items with_dict with_fileglob with_list force_handlers]]):gmatch("%S+") do
  KEYWORDS[k] = true
end
-- Keys whose empty value is a list, not a map.
local LIST_KEYS = {tasks = true, handlers = true, pre_tasks = true, post_tasks = true, roles = true,
                   tags = true, loop = true, with_items = true, block = true, rescue = true,
                   always = true, vars_files = true, notify = true, collections = true}

local function rank(k)
  if type(k) ~= "string" then return 10 end
  return KEY_RANK[k] or (KEYWORDS[k] and 50) or 10
end

local YAML_WORDS = {}
for w in ("y yes n no true false on off null ~"):gmatch("%S+") do YAML_WORDS[w] = true end

local function yaml_quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" elseif c == "\t" then return "\\t" elseif c == "\r" then return "\\r"
    elseif c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\x%02X", c:byte())
  end) .. '"'
end

local function yaml_string(s, path)
  if not utf8.len(s) then error("ansible: cannot render invalid UTF-8 as YAML at " .. path, 0) end
  -- A plain scalar only when YAML 1.1 (PyYAML) reads it back as this very
  -- string: no leading digit or sign, no ':' or '#', no yes/no/on/off.
  if s:match("^[%a_/][%w_ ./=-]*$") and not s:match(" $") and not YAML_WORDS[s:lower()] then
    return s
  end
  return yaml_quote(s)
end

-- A literal block for multi-line text a person would write as one.
local function yaml_block(s, indent)
  if not s:find("\n", 1, true) or s:find("[\r%z\1-\8\11-\31\127]") or s:match("^[ \n]")
     or s:find("\n\n$") or not utf8.len(s) then
    return nil
  end
  local chomp = s:sub(-1) == "\n" and "" or "-"
  local body = s:sub(-1) == "\n" and s:sub(1, -2) or s
  local pad = string.rep(" ", indent)
  local out = {"|" .. chomp}
  for line in (body .. "\n"):gmatch("(.-)\n") do
    out[#out + 1] = line == "" and "" or pad .. line
  end
  return table.concat(out, "\n")
end

local function yaml_number(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return ".nan" end
  if v == math.huge then return ".inf" elseif v == -math.huge then return "-.inf" end
  local s = string.format("%.17g", v)
  if tonumber(string.format("%.15g", v)) == v then s = string.format("%.15g", v) end
  if not s:find("[.eEn]") then s = s .. ".0" end
  return s
end

local function classify(t, path)
  if next(t) == nil then return "empty" end
  if getmetatable(t) == json.array_mt then return "list", #t end
  if getmetatable(t) == json.object_mt then return "map" end
  local n, count = #t, 0
  for _ in pairs(t) do count = count + 1 end
  if count == 0 then return "empty" end
  if n == count then return "list", n end
  for k in pairs(t) do
    if math.type(k) == "integer" and k >= 1 and k <= n then
      error("ansible: cannot render a table with both list items and keys as YAML at " .. path, 0)
    end
  end
  return "map"
end

local function sorted_keys(t, path)
  local keys = {}
  for k in pairs(t) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      error("ansible: cannot render a " .. kt .. " key as YAML at " .. path, 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    local ra, rb = rank(a), rank(b)
    if ra ~= rb then return ra < rb end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local emit

local function scalar(v, path)
  local tv = type(v)
  if v == json.null then return "null" end
  if tv == "string" then return yaml_string(v, path) end
  if tv == "number" then return yaml_number(v) end
  if tv == "boolean" then return v and "true" or "false" end
  if secret.is_ref(v) then
    error("ansible: a secret reference was not resolved at " .. path, 0)
  end
  error("ansible: cannot render a " .. tv .. " as YAML at " .. path, 0)
end

local function key_text(k, path)
  if type(k) == "string" then return yaml_string(k, path) end
  return scalar(k, path)
end

-- Append the lines of value v (a table) at `indent` to out.
emit = function(out, v, indent, path, seen)
  if seen[v] then error("ansible: cannot render a cycle as YAML at " .. path, 0) end
  seen[v] = true
  local pad = string.rep(" ", indent)
  local kind, n = classify(v, path)
  if kind == "list" then
    for i = 1, n do
      local x, p = v[i], path .. "[" .. i .. "]"
      if type(x) == "table" and not secret.is_ref(x) and x ~= json.null then
        local k2 = classify(x, p)
        if k2 == "empty" then
          out[#out + 1] = pad .. "- " .. (getmetatable(x) == json.array_mt and "[]" or "{}")
        elseif k2 == "map" then
          local sub = {}
          emit(sub, x, indent + 2, p, seen)
          sub[1] = pad .. "- " .. sub[1]:sub(indent + 3)
          for _, l in ipairs(sub) do out[#out + 1] = l end
        else
          out[#out + 1] = pad .. "-"
          emit(out, x, indent + 2, p, seen)
        end
      elseif type(x) == "string" and yaml_block(x, indent + 2) then
        out[#out + 1] = pad .. "- " .. yaml_block(x, indent + 2)
      else
        out[#out + 1] = pad .. "- " .. scalar(x, p)
      end
    end
  else
    for _, k in ipairs(sorted_keys(v, path)) do
      local x, p = v[k], path .. "." .. tostring(k)
      local kt = key_text(k, p)
      if type(x) == "table" and not secret.is_ref(x) and x ~= json.null then
        local k2 = classify(x, p)
        if k2 == "empty" then
          local list = getmetatable(x) == json.array_mt or (LIST_KEYS[k] and getmetatable(x) ~= json.object_mt)
          out[#out + 1] = pad .. kt .. ": " .. (list and "[]" or "{}")
        else
          out[#out + 1] = pad .. kt .. ":"
          emit(out, x, indent + 2, p, seen)
        end
      elseif type(x) == "string" and yaml_block(x, indent + 2) then
        out[#out + 1] = pad .. kt .. ": " .. yaml_block(x, indent + 2)
      else
        out[#out + 1] = pad .. kt .. ": " .. scalar(x, p)
      end
    end
  end
  seen[v] = nil
end

--- Render a Lua value as YAML the way a person would write it: block maps
--- and lists, `name` first and `tasks`/`handlers` last, strings quoted only
--- where YAML 1.1 would misread them, multi-line strings as literal blocks.
--- Tables marked with json.array()/json.object() keep their kind when empty.
--- Raises on values YAML cannot carry (functions, cycles, invalid UTF-8).
---@param v any
---@return string
function M.to_yaml(v)
  if type(v) ~= "table" or v == json.null or secret.is_ref(v) then
    return scalar(v, "$") .. "\n"
  end
  local kind = classify(v, "$")
  if kind == "empty" then return (getmetatable(v) == json.array_mt and "[]" or "{}") .. "\n" end
  local out = {}
  emit(out, v, 0, "$", {})
  return table.concat(out, "\n") .. "\n"
end

-- Secrets in tables ---------------------------------------------------------

-- A copy of v with every secret reference replaced by its value (which is
-- registered for redaction).  Returns nil, err when one cannot be read.
local function resolve_refs(v, found)
  if secret.is_ref(v) then
    local value, err = secret.resolve(v)
    if not value then return nil, err end
    found.any = true
    return value
  end
  if type(v) ~= "table" or v == json.null then return v end
  local out = setmetatable({}, getmetatable(v))
  for k, x in pairs(v) do
    local r, err = resolve_refs(x, found)
    if r == nil and err then return nil, err end
    out[k] = r
  end
  return out
end

local function register_leaves(v)
  if type(v) == "string" then
    secret.register(v)
  elseif type(v) == "table" then
    for _, x in pairs(v) do register_leaves(x) end
  end
end

-- Inventory -----------------------------------------------------------------

local function host_list(hosts, path)
  -- {"a", "b"} | {a = {vars}, b = true} | {{name = "a", ...}} | a mix of these
  local out, order = {}, {}
  if hosts == nil then return out, order end
  if type(hosts) == "string" then hosts = {hosts} end
  if type(hosts) ~= "table" then error("ansible: " .. path .. " must be a list or a map of hosts", 0) end
  local n = #hosts
  for i = 1, n do
    local h = hosts[i]
    if type(h) == "string" then
      if not out[h] then order[#order + 1] = h end
      out[h] = out[h] or {}
    elseif type(h) == "table" and type(h.name) == "string" then
      local vars = {}
      for k, x in pairs(h) do if k ~= "name" then vars[k] = x end end
      if not out[h.name] then order[#order + 1] = h.name end
      out[h.name] = vars
    else
      error("ansible: " .. path .. "[" .. i .. "] must be a host name or {name = ..., vars...}", 0)
    end
  end
  local named = {}
  for name, vars in pairs(hosts) do
    if not (math.type(name) == "integer" and name >= 1 and name <= n) then
      if type(name) ~= "string" then error("ansible: " .. path .. " keys must be host names", 0) end
      if type(vars) ~= "table" and vars ~= true then
        error("ansible: " .. path .. "." .. name .. " must be a table of host vars (or true)", 0)
      end
      named[#named + 1] = name
      out[name] = type(vars) == "table" and vars or {}
    end
  end
  table.sort(named)
  for _, name in ipairs(named) do order[#order + 1] = name end
  return out, order
end

-- Connection settings as Ansible variables.
local function connection_vars(c)
  if c == nil then return {} end
  if type(c) ~= "table" then error("ansible: inventory.connection must be a table", 0) end
  local v = {}
  v.ansible_connection = c.type or c.connection
  v.ansible_user = c.user
  v.ansible_port = c.port
  v.ansible_ssh_private_key_file = c.key
  v.ansible_python_interpreter = c.python
  v.ansible_password = c.password
  v.ansible_become_password = c.become_password
  local args = {}
  if c.known_hosts then
    args[#args + 1] = "-o UserKnownHostsFile=" .. c.known_hosts
    args[#args + 1] = "-o StrictHostKeyChecking=" .. (c.host_key_checking == false and "no" or "yes")
  elseif c.host_key_checking == false then
    args[#args + 1] = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
  end
  if c.ssh_args then args[#args + 1] = c.ssh_args end
  if #args > 0 then v.ansible_ssh_common_args = table.concat(args, " ") end
  return v
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
  if type(inv) ~= "table" then error("ansible: inventory must be a path or a table", 0) end
  if inv.all then return inv end
  local hosts = host_list(inv.hosts, "inventory.hosts")
  local all_vars = connection_vars(inv.connection)
  for k, x in pairs(inv.vars or {}) do all_vars[k] = x end
  local children = {}
  for gname, g in pairs(inv.groups or {}) do
    if type(gname) ~= "string" then error("ansible: inventory.groups keys must be group names", 0) end
    if type(g) ~= "table" then error("ansible: inventory.groups." .. gname .. " must be a table", 0) end
    local ghosts_in, gorder
    if g.hosts or g.vars or g.children then
      ghosts_in, gorder = host_list(g.hosts, "inventory.groups." .. gname .. ".hosts")
    else
      ghosts_in, gorder = host_list(g, "inventory.groups." .. gname)
    end
    local ghosts = {}
    for _, h in ipairs(gorder) do
      ghosts[h] = json.object()
      -- Vars given in the group's host map belong to the host.
      if next(ghosts_in[h]) then
        hosts[h] = hosts[h] or {}
        for k, x in pairs(ghosts_in[h]) do hosts[h][k] = x end
      end
    end
    local group = {}
    if next(ghosts) then group.hosts = ghosts end
    if g.vars and next(g.vars) then group.vars = g.vars end
    if g.children then
      group.children = {}
      for _, c in ipairs(g.children) do group.children[c] = json.object() end
    end
    children[gname] = group
  end
  local all = {}
  local hmap = {}
  for name, vars in pairs(hosts) do
    local copy = json.object()
    for k, x in pairs(vars) do copy[k] = x end
    hmap[name] = copy
  end
  if next(hmap) then all.hosts = hmap end
  if next(all_vars) then all.vars = all_vars end
  if next(children) then all.children = children end
  return {all = all}
end

--- Render an inventory table (see inventory_structure) as YAML text.
---@param inv table
---@return string
function M.render_inventory(inv)
  return M.to_yaml(M.inventory_structure(inv))
end

-- Files ---------------------------------------------------------------------

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, "ansible: cannot write " .. path .. ": " .. tostring(err) end
  f:write(text)
  f:close()
  return path
end

-- A file only its owner can read, created empty and chmodded before any
-- secret is written to it (it also lives in a 0700 directory).
local function write_private(path, text)
  local ok, err = write_file(path, "")
  if not ok then return nil, err end
  local r = proc.run{argv = {"chmod", "600", path}, quiet = true}
  if not r or r.code ~= 0 then return nil, "ansible: cannot chmod 600 " .. path end
  return write_file(path, text)
end

local evidence_seq = 0

local function slug(s)
  return (tostring(s):gsub("[^%w._-]+", "_"):sub(1, 60))
end

-- The evidence directory of this run: under the run directory inside a
-- runbook step, the one given as opts.dir, or none.
local function evidence_dir(opts, step, name)
  if opts.dir == false then return nil end
  local base
  if opts.dir then
    base = opts.dir
  elseif step then
    evidence_seq = evidence_seq + 1
    base = string.format("%s/ansible/%02d-%s-%s", step.run.dir, evidence_seq, slug(step.id), slug(name))
  else
    return nil
  end
  local ok = host.mkdir(base)
  return ok and base or nil
end

local function private_dir(opts)
  local base = opts.tmp_dir or os.getenv("TMPDIR") or "/tmp"
  base = host.realpath(base) or base      -- ansible may run in another cwd
  local dir = base .. "/bomarun-ansible-" .. host.random_hex(6)
  local ok, err = host.mkdir(dir, 448)   -- 0700
  if not ok then return nil, "ansible: cannot create a private directory: " .. tostring(err) end
  return dir
end

-- Ends what a run leaves behind in its private directory: ssh
-- ControlPersist masters (they daemonize out of the process group) are told
-- to exit, then the directory goes.  Called with wait = false from a
-- cancelled task, which cannot wait: the cleaner then runs detached.
local CLEAN_SCRIPT = [[
i=0
while [ -n "$2" ] && [ $i -lt 100 ] && kill -0 -- "-$2" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
for s in "$1"/cp/*; do
  [ -S "$s" ] && ssh -F /dev/null -o ControlPath="$s" -O exit bomarun-ansible >/dev/null 2>&1
done
rm -rf -- "$1"
]]

local function remove_private(w, can_wait)
  for _, f in ipairs(w.secret_files) do os.remove(f) end   -- first, always
  if not w.tmp then return end
  -- The usual case: the files are known, the directories empty.
  for _, f in ipairs(w.files) do os.remove(f) end
  for _, d in ipairs({"/local", "/remote", "/cp"}) do os.remove(w.tmp .. d) end
  if os.remove(w.tmp) then return end
  local argv = {"/bin/sh", "-c", CLEAN_SCRIPT, "bomarun-ansible-clean", w.tmp,
                can_wait and "" or tostring(w.pid or "")}
  if can_wait then
    proc.run{argv = argv, quiet = true, timeout = 30}
  else
    proc.spawn{argv = argv, quiet = true, keep = true, timeout = 30}
  end
end

-- Results -------------------------------------------------------------------

local STATUS_WORD = {ok = "ok", changed = "changed", skipped = "skipped", failed = "FAILED",
                     unreachable = "UNREACHABLE"}
local STATUS_COLOUR = {ok = "green", changed = "yellow", skipped = "grey", failed = "red", unreachable = "red"}

local function one_line(s, max)
  if s == nil then return nil end
  s = tostring(s):gsub("%s*\n%s*", " | "):gsub("^%s+", ""):gsub("%s+$", "")
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

local function first_line(s, max)
  if s == nil then return nil end
  s = tostring(s):match("^%s*([^\n]*)") or ""
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

local function fmt_duration(d)
  if not d then return "" end
  return string.format(" (%.2fs)", d)
end

local function result_line(ev, colour, max)
  local word = STATUS_WORD[ev.status] or ev.status
  if ev.status == "failed" and ev.ignored then word = "failed (ignored)" end
  local w = string.format("%-11s", word)
  if colour then w = log.paint(STATUS_COLOUR[ev.status] or "bold", w) end
  local line = string.format("%s %s | %s%s", w, ev.host, ev.task or "?", fmt_duration(ev.duration))
  if ev.delegated_to then line = line .. " -> " .. ev.delegated_to end
  local show_msg = ev.status == "failed" or ev.status == "unreachable" or (ev.action and ev.action:match("debug$"))
  if show_msg and ev.msg then
    line = line .. ": " .. (colour and first_line(ev.msg, max) or one_line(ev.msg, max))
  end
  return line
end

local RECAP_KEYS = {"ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"}

local function recap_line(h, r)
  local parts = {}
  for _, k in ipairs(RECAP_KEYS) do parts[#parts + 1] = k .. "=" .. tostring(r[k] or 0) end
  return string.format("recap %s: %s", h, table.concat(parts, " "))
end

-- The recap counted from the events, for a run killed before its recap.
local function recap_from_events(events)
  local recap = {}
  for _, ev in ipairs(events) do
    local r = recap[ev.host]
    if not r then
      r = {ok = 0, changed = 0, failed = 0, unreachable = 0, skipped = 0, rescued = 0, ignored = 0}
      recap[ev.host] = r
    end
    if ev.status == "ok" then r.ok = r.ok + 1
    elseif ev.status == "changed" then r.ok = r.ok + 1 r.changed = r.changed + 1
    elseif ev.status == "skipped" then r.skipped = r.skipped + 1
    elseif ev.status == "unreachable" then r.unreachable = r.unreachable + 1
    elseif ev.status == "failed" then
      if ev.ignored then r.ignored = r.ignored + 1 else r.failed = r.failed + 1 end
    end
  end
  return recap
end

-- Strip JSON metatables and nulls so results are plain Lua tables.
local function plain(v)
  if v == json.null then return nil end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = plain(x) end
  return out
end

local EVENT_FIELDS = {"host", "task", "status", "duration", "msg", "play", "action", "changed", "ignored",
                      "rc", "stdout", "stderr", "handler", "delegated_to", "items", "failed_items", "time"}

-- Reads the plugin's events file as it grows and turns each line into
-- results, console and step-log lines and journal events.
local function new_collector(c)
  local self = {events = {}, plays = {}, recap = nil, offset = 0, buf = "", no_hosts = false}
  local evidence = c.evidence and io.open(c.evidence .. "/events.jsonl", "ab")
  if evidence then evidence:setvbuf("line") end

  local function say(line, coloured)
    if c.sink then c.sink(c.prefix .. " " .. line) end
    if c.echo then log.console(c.prefix .. " " .. (coloured or line)) end
  end
  self.say = say

  local function handle(raw)
    local ev = json.decode(raw)
    if type(ev) ~= "table" then return end
    if evidence then evidence:write(secret.redact(raw), "\n") end
    local kind = ev.event
    if kind == "result" then
      local e = {}
      for _, k in ipairs(EVENT_FIELDS) do e[k] = plain(ev[k]) end
      self.events[#self.events + 1] = e
      say(result_line(e, false, LOG_MSG), log.colour() and result_line(e, true, CONSOLE_MSG) or
        result_line(e, false, CONSOLE_MSG))
      if c.step then
        c.step:event({type = "ansible_task", run = c.name, host = e.host, task = e.task, status = e.status,
                      duration = e.duration, msg = e.msg, play = e.play, ignored = e.ignored, rc = e.rc})
      end
      if c.on_event and not self.callback_error then
        -- A raising callback is a programmer error: reported after the run
        -- (the tailer task must keep going), and not called again.
        local ok, err = pcall(c.on_event, e)
        if not ok then self.callback_error = err end
      end
    elseif kind == "stats" then
      self.recap = plain(ev.recap) or {}
    elseif kind == "play" then
      self.plays[#self.plays + 1] = plain(ev.play)
      if c.sink then c.sink(c.prefix .. " play: " .. tostring(plain(ev.play))) end
    elseif kind == "no_hosts" then
      self.no_hosts = true
      say("no hosts matched" .. (ev.play and (" (play " .. tostring(plain(ev.play)) .. ")") or ""))
    end
  end

  --- Read whatever the plugin appended since the last call.
  function self.pump()
    local f = io.open(c.path, "rb")
    if not f then return end
    f:seek("set", self.offset)
    local data = f:read("a")
    f:close()
    if not data or data == "" then return end
    self.offset = self.offset + #data
    self.buf = self.buf .. data
    while true do
      local nl = self.buf:find("\n", 1, true)
      if not nl then break end
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      if line ~= "" then handle(line) end
    end
  end

  function self.close()
    if evidence then evidence:close() evidence = nil end
  end
  return self
end

local function count_totals(recap)
  local t = {ok = 0, changed = 0, failed = 0, unreachable = 0, skipped = 0, rescued = 0, ignored = 0}
  local hosts = 0
  for _, r in pairs(recap) do
    hosts = hosts + 1
    for k in pairs(t) do t[k] = t[k] + (r[k] or 0) end
  end
  return t, hosts
end

local function error_lines(stderr)
  -- Ansible's own error ("ERROR! ..."), else the last non-empty stderr line.
  local err = stderr and stderr:match("(ERROR! [^\n]*)")
  if err then return err end
  local last
  for l in (stderr or ""):gmatch("[^\n]+") do
    if l:match("%S") and not l:match("^%[WARNING%]") then last = l end
  end
  return last
end

--- Say in one line what a result means for a gate: the failed tasks with
--- their hosts and messages, the unreachable hosts, a non-idempotent second
--- pass, or why ansible itself failed.
---@param res bomarun.AnsibleResult
---@return string
function M.describe(res)
  if type(res) ~= "table" then return "ansible: no result" end
  local name = res.name or "ansible"
  local t = res.totals or count_totals(res.recap or {})
  local parts = {}
  for _, ev in ipairs(res.failures or {}) do
    if #parts == 5 then
      parts[#parts + 1] = string.format("and %d more", #res.failures - 5)
      break
    end
    if ev.status == "unreachable" then
      parts[#parts + 1] = string.format("host %s unreachable: %s", ev.host, one_line(ev.msg, 300) or "?")
    else
      parts[#parts + 1] = string.format("task '%s' failed on %s: %s", ev.task or "?", ev.host,
        one_line(ev.msg, 300) or "?")
    end
  end
  if res.timed_out then
    table.insert(parts, 1, string.format("timed out after %g s", res.timeout or 0))
  end
  if res.idempotent == false then
    local list = {}
    for i, ev in ipairs(res.changed_tasks or {}) do
      if i > 5 then list[#list + 1] = "..." break end
      list[#list + 1] = string.format("'%s' on %s", ev.task or "?", ev.host)
    end
    parts[#parts + 1] = string.format("not idempotent: %d task result%s changed on the second run: %s",
      #(res.changed_tasks or {}), #(res.changed_tasks or {}) == 1 and "" or "s", table.concat(list, ", "))
  end
  if #parts == 0 and res.code ~= 0 and not res.timed_out then
    parts[#parts + 1] = string.format("%s exited %s: %s", res.program or "ansible",
      tostring(res.code or ("by signal " .. tostring(res.signal))), error_lines(res.stderr) or "no message")
  end
  if #parts == 0 then
    local _, hosts = count_totals(res.recap or {})
    return string.format("%s: no failed and no unreachable hosts (%d host%s; ok=%d changed=%d skipped=%d)%s",
      name, hosts, hosts == 1 and "" or "s", t.ok, t.changed, t.skipped,
      (res.idempotent and "; idempotent: nothing changed on the second run" or "") ..
      (res.no_hosts and "; a play matched no host" or ""))
  end
  return name .. ": " .. table.concat(parts, "; ")
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

local function list_of(v, what)
  if v == nil then return {} end
  if type(v) == "string" then return {v} end
  if type(v) == "table" then
    for i, x in ipairs(v) do
      if type(x) ~= "string" then error("ansible: " .. what .. "[" .. i .. "] must be a string", 0) end
    end
    return v
  end
  error("ansible: " .. what .. " must be a string or a list of strings", 0)
end

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

-- Builds the command: argv, env and the files behind them.  Raises on
-- programmer errors; returns nil, msg, CODE for secrets that cannot be read.
local function prepare(kind, opts, w)
  local argv = {opts.program or (kind == "adhoc" and "ansible" or "ansible-playbook")}
  local function add(...) for _, a in ipairs({...}) do argv[#argv + 1] = a end end
  local found = {}

  if kind == "adhoc" then
    if type(opts.hosts) ~= "string" and type(opts.hosts) ~= "table" then
      error("ansible.adhoc: hosts (a pattern) is required", 0)
    end
    local pattern = type(opts.hosts) == "table" and table.concat(opts.hosts, ":") or opts.hosts
    add(pattern)
    if type(opts.module) ~= "string" then error("ansible.adhoc: module is required", 0) end
    add("-m", opts.module)
    if opts.args ~= nil then
      local a = opts.args
      if type(a) == "table" then
        local resolved, err = resolve_refs(a, found)
        if resolved == nil and err then return nil, err, "SECRET" end
        a = json.encode(json.object(resolved))
      end
      add("-a", a)
    end
  end

  -- Inventory
  local inv = opts.inventory
  if type(inv) == "table" and (inv.all or inv.hosts or inv.groups or inv.vars or inv.connection) then
    local structure, err = resolve_refs(M.inventory_structure(inv), found)
    if structure == nil and err then return nil, err, "SECRET" end
    local text = M.to_yaml(structure)
    local path = w.tmp .. "/inventory.yml"
    local ok, werr = write_file(path, text)
    if not ok then return nil, werr, "FILE" end
    w.files[#w.files + 1] = path
    w.evidence_files["inventory.yml"] = M.to_yaml(secret.redact_deep(structure))
    add("-i", path)
  else
    for _, i in ipairs(list_of(inv, "inventory")) do add("-i", i) end
  end

  -- Extra vars: plain ones on the command line, secret ones through a file.
  local secret_vars = {}
  local function add_secret_var(k, v) secret_vars[k] = v end
  local function extra_entry(e, what)
    if type(e) == "string" then
      add("-e", e)
    elseif type(e) == "table" then
      local any = {}
      local resolved, err = resolve_refs(e, any)
      if resolved == nil and err then return nil, err end
      if any.any then
        for k, v in pairs(resolved) do add_secret_var(k, v) end
      else
        add("-e", json.encode(json.object(resolved)))
      end
    else
      error("ansible: " .. what .. " must be a table or a string", 0)
    end
    return true
  end
  local ev = opts.extra_vars
  if type(ev) == "table" and #ev > 0 then
    for i, e in ipairs(ev) do
      local ok, err = extra_entry(e, "extra_vars[" .. i .. "]")
      if not ok then return nil, err, "SECRET" end
    end
  elseif ev ~= nil then
    if not (type(ev) == "table" and next(ev) == nil) then
      local ok, err = extra_entry(ev, "extra_vars")
      if not ok then return nil, err, "SECRET" end
    end
  end
  for _, f in ipairs(list_of(opts.extra_vars_files, "extra_vars_files")) do add("-e", "@" .. f) end
  if opts.secret_vars ~= nil then
    if type(opts.secret_vars) ~= "table" then error("ansible: secret_vars must be a table", 0) end
    local resolved, err = resolve_refs(opts.secret_vars, found)
    if resolved == nil and err then return nil, err, "SECRET" end
    register_leaves(resolved)
    for k, v in pairs(resolved) do add_secret_var(k, v) end
  end
  if opts.become_password ~= nil then
    local v = opts.become_password
    if secret.is_ref(v) then
      local value, err = secret.resolve(v)
      if not value then return nil, err, "SECRET" end
      v = value
    end
    secret.register(v)
    add_secret_var("ansible_become_password", v)
  end
  if next(secret_vars) then
    local path = w.tmp .. "/secret-vars.json"
    local ok, err = write_private(path, json.encode(json.object(secret_vars)))
    if not ok then return nil, err, "FILE" end
    w.secret_files[#w.secret_files + 1] = path
    add("-e", "@" .. path)
  end

  -- Vault
  if opts.vault_password ~= nil then
    local v = opts.vault_password
    if secret.is_ref(v) then
      local value, err = secret.resolve(v)
      if not value then return nil, err, "SECRET" end
      v = value
    end
    if type(v) ~= "string" then error("ansible: vault_password must be a string or a secret reference", 0) end
    secret.register(v)
    local path = w.tmp .. "/vault-pass"
    local ok, err = write_private(path, v .. "\n")
    if not ok then return nil, err, "FILE" end
    w.secret_files[#w.secret_files + 1] = path
    add("--vault-password-file", path)
  end
  if opts.vault_password_file then add("--vault-password-file", opts.vault_password_file) end

  -- Selection and modes
  local tags = list_of(opts.tags, "tags")
  if #tags > 0 then add("--tags", table.concat(tags, ",")) end
  local skip = list_of(opts.skip_tags, "skip_tags")
  if #skip > 0 then add("--skip-tags", table.concat(skip, ",")) end
  local limit = list_of(opts.limit, "limit")
  if #limit > 0 then add("--limit", table.concat(limit, ",")) end
  if opts.check then add("--check") end
  if opts.diff then add("--diff") end
  if opts.forks then add("--forks", tostring(math.tointeger(opts.forks) or error("ansible: forks must be an integer", 0))) end
  if opts.become then add("--become") end
  if opts.become_user then add("--become-user", opts.become_user) end
  if opts.become_method then add("--become-method", opts.become_method) end
  if opts.verbose and opts.verbose > 0 then add("-" .. string.rep("v", math.min(opts.verbose, 6))) end
  for _, a in ipairs(list_of(opts.extra_args, "extra_args")) do add(a) end

  -- The playbook(s)
  if kind == "playbook" then
    if opts.play ~= nil and opts.playbook ~= nil then
      error("ansible.playbook: give playbook or play, not both", 0)
    end
    if opts.play ~= nil then
      if type(opts.play) ~= "table" then error("ansible.playbook: play must be a table", 0) end
      local plays = opts.play[1] ~= nil and opts.play or {opts.play}
      local resolved, err = resolve_refs(plays, found)
      if resolved == nil and err then return nil, err, "SECRET" end
      local text = M.to_yaml(json.array(resolved))
      local dir = opts.play_dir and (host.realpath(opts.play_dir) or opts.play_dir) or w.tmp
      local path = dir .. "/bomarun-play-" .. host.random_hex(4) .. ".yml"
      local ok, werr = write_file(path, text)
      if not ok then return nil, werr, "FILE" end
      w.files[#w.files + 1] = path
      w.evidence_files["play.yml"] = M.to_yaml(json.array(secret.redact_deep(resolved)))
      add(path)
    else
      local books = list_of(opts.playbook, "playbook")
      if #books == 0 then error("ansible.playbook: playbook (a path) or play (a table) is required", 0) end
      for _, b in ipairs(books) do add(b) end
    end
  end

  -- Environment: our callback next to the stdout one, every temp and
  -- control path in the private directory, nothing in ~.
  local user_env = opts.env or {}
  local function joined(first, var, sep)
    local v = user_env[var]
    if v == nil then v = os.getenv(var) end
    if type(v) == "string" and v ~= "" then return first .. sep .. v end
    return first
  end
  local env = {
    -- Callbacks the caller enables (environment or opts.env) run too; an
    -- ansible.cfg's callbacks_enabled is overridden by this variable.
    ANSIBLE_CALLBACK_PLUGINS = joined(PLUGIN_DIR, "ANSIBLE_CALLBACK_PLUGINS", ":"),
    ANSIBLE_CALLBACKS_ENABLED = joined("bomarun", "ANSIBLE_CALLBACKS_ENABLED", ","),
    ANSIBLE_LOAD_CALLBACK_PLUGINS = "1",        -- the ad-hoc `ansible` loads them only when asked
    BOMARUN_ANSIBLE_EVENTS = w.events,
    ANSIBLE_LOCAL_TEMP = w.tmp .. "/local",
    ANSIBLE_REMOTE_TEMP = opts.remote_tmp or (w.tmp .. "/remote"),
    ANSIBLE_SSH_CONTROL_PATH_DIR = w.tmp .. "/cp",
    ANSIBLE_RETRY_FILES_ENABLED = "0",
    ANSIBLE_NOCOLOR = "1",
    ANSIBLE_FORCE_COLOR = false,
  }
  if opts.host_key_checking ~= nil then
    env.ANSIBLE_HOST_KEY_CHECKING = opts.host_key_checking and "True" or "False"
  end
  for k, v in pairs(user_env) do
    if k ~= "ANSIBLE_CALLBACK_PLUGINS" and k ~= "ANSIBLE_CALLBACKS_ENABLED" then env[k] = v end
  end
  return argv, env
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

local function run(kind, opts)
  -- Level 2: M.playbook and M.adhoc tail-call run, so that is their caller.
  if type(opts) ~= "table" then error("ansible." .. kind .. ": expected a table of options", 2) end
  -- A misspelt option must not be dropped without anyone noticing.
  for k in pairs(opts) do
    if not KNOWN[k] or (kind == "playbook" and ADHOC_ONLY[k]) or (kind == "adhoc" and PLAYBOOK_ONLY[k]) then
      error(string.format("ansible.%s: unknown option '%s'", kind, tostring(k)), 2)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("ansible: timeout must be a positive number of seconds", 2)
  end
  local step = step_ctx.current()
  local name = default_name(opts, kind)
  local prefix = opts.prefix or ("[" .. name .. "]")
  local sink = log.sink()

  local tmp, terr = private_dir(opts)
  if not tmp then return nil, terr, "FILE" end
  local w = {tmp = tmp, files = {}, secret_files = {}, evidence_files = {}, events = tmp .. "/events.jsonl"}
  w.files[#w.files + 1] = w.events

  local collector, evdir, program
  local ok, r, msg, rcode, partial, command = pcall(function()
    local argv, env_or_err, code = prepare(kind, opts, w)
    if not argv then return nil, env_or_err, code end
    local env = env_or_err
    program = argv[1]
    local cmdline = quote_argv(argv)
    evdir = evidence_dir(opts, step, name)
    if evdir then
      for fname, text in pairs(w.evidence_files) do write_file(evdir .. "/" .. fname, secret.redact(text)) end
    end
    collector = new_collector{path = w.events, prefix = prefix, name = name, step = step, sink = sink,
                              echo = opts.echo ~= false, on_event = opts.on_event, evidence = evdir}
    if sink then
      sink(prefix .. " " .. cmdline)
      if evdir then sink(prefix .. " evidence: " .. evdir) end
    end
    if step then
      step:event({type = "ansible_start", run = name, command = cmdline, dir = evdir,
                  check = opts.check or nil})
    end

    local out = evdir and io.open(evdir .. "/output.log", "ab")
    if out then out:setvbuf("line") end
    w.out = out
    local on_line = function(line, stream)
      if out then out:write(stream == "stderr" and "! " or "", secret.redact(line), "\n") end
      if stream == "stderr" and sink and line:match("%S") then sink(prefix .. " ! " .. line) end
    end
    local h, serr, scode = proc.spawn{argv = argv, env = env, cwd = opts.cwd, timeout = opts.timeout,
                                      grace = opts.grace, drain = opts.drain, quiet = true, on_line = on_line}
    if not h then
      if out then out:close() end
      return nil, "ansible: " .. name .. ": " .. tostring(serr), scode
    end
    w.pid = h:pid()
    local tailer = task.spawn_named("ansible events " .. name, function()
      while true do
        collector.pump()
        task.sleep(POLL_INTERVAL)
      end
    end)
    local pr, pmsg, pcode, ppartial = h:wait()
    tailer:cancel()
    collector.pump()
    collector.close()
    if out then out:close() end
    return pr, pmsg, pcode, ppartial, cmdline
  end)

  if not ok then
    -- Cancelled (or a programmer error): nothing may wait any more.  Keep
    -- what evidence there is, remove the secrets at once and let a
    -- detached cleaner end the rest.
    local err = r
    if w.out then pcall(w.out.close, w.out) end
    if collector then
      pcall(collector.pump)
      pcall(collector.close)
      if task.cancel_code(err) then
        pcall(collector.say, "cancelled (" .. tostring(err) .. "): the process group is killed")
      end
    end
    remove_private(w, false)
    error(err, 0)
  end
  remove_private(w, true)
  if collector and collector.callback_error then
    error("ansible: on_event raised: " .. tostring(collector.callback_error), 2)
  end

  local pr = r or partial
  if not pr then return nil, msg, rcode end      -- could not start, or a secret could not be read
  local timed_out = rcode == "TIMEOUT"
  local events = collector.events
  local recap = collector.recap or recap_from_events(events)
  local res = {name = name, events = events, recap = recap, plays = collector.plays,
               no_hosts = collector.no_hosts, code = pr.code, signal = pr.signal, duration = pr.duration,
               stdout = pr.stdout, stderr = pr.stderr, command = command, dir = evdir,
               timed_out = timed_out, timeout = opts.timeout, program = program,
               lingering = pr.lingering or nil}
  local totals = count_totals(recap)
  res.totals = totals
  local failures, changed = {}, {}
  for _, ev in ipairs(events) do
    local hr = recap[ev.host] or {}
    if ev.status == "unreachable" and (hr.unreachable or 1) > 0 then
      failures[#failures + 1] = ev
    elseif ev.status == "failed" and not ev.ignored and (hr.failed or 1) > 0 then
      failures[#failures + 1] = ev
    elseif ev.status == "changed" then
      changed[#changed + 1] = ev
    end
  end
  res.failures, res.changed_tasks = failures, changed
  res.ok = not timed_out and pr.code == 0 and totals.failed == 0 and totals.unreachable == 0
  res.msg = M.describe(res)

  local hosts = {}
  for h in pairs(recap) do hosts[#hosts + 1] = h end
  table.sort(hosts)
  for _, h in ipairs(hosts) do collector.say(recap_line(h, recap[h])) end
  local verdict
  if timed_out then
    verdict = string.format("TIMEOUT after %g s: the process group was killed", opts.timeout)
  elseif res.ok then
    verdict = string.format("ok in %.1fs (changed=%d)", pr.duration, totals.changed)
  else
    verdict = string.format("FAILED in %.1fs: %s", pr.duration, res.msg)
  end
  if pr.lingering then
    collector.say(string.format("a leftover process held ansible's output after it exited: its group was killed after %g s",
      opts.drain or 2))
  end
  collector.say(verdict, log.colour() and log.paint(res.ok and "green" or "red", verdict) or verdict)
  if step then
    step:event({type = "ansible_recap", run = name, ok = res.ok, code = pr.code, signal = pr.signal,
                duration = pr.duration, recap = recap, totals = totals, timed_out = timed_out or nil,
                msg = res.msg, dir = evdir})
  end
  if timed_out then
    return nil, string.format("ansible: %s: %s timed out after %g s; its process group was killed",
      name, program, opts.timeout), "TIMEOUT", res
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

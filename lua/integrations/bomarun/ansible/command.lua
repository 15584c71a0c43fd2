--- bomarun.ansible.command: the ansible-playbook (or ansible) command of a
--- run: its argv, its environment and the files behind them (rendered
--- inventory and play, secret vars, vault password) in the run's private
--- directory.  Secrets never reach the command line.
local host = require "bomarun._host"
local files = require "bomarun.ansible.files"
local inventory = require "bomarun.ansible.inventory"
local json = require "bomarun.json"
local secret = require "bomarun.secret"
local yaml = require "bomarun.ansible.yaml"

local M = {}

-- Where the callback plugin lives: next to this file, so an installed tree
-- (cmake --install copies lua/ wholesale) finds it the same way.
local function find_plugin_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/[^/]*$") or "."
  dir = dir .. "/plugins/callback"
  return host.realpath(dir) or dir
end

--- The directory of the bomarun callback plugin.
---@type string
M.PLUGIN_DIR = find_plugin_dir()

-- Secrets in tables -----------------------------------------------------------

-- A copy of v with every secret reference replaced by its value (which is
-- registered for redaction).  Returns nil, err when one cannot be read;
-- sets found.any when there was one.
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

-- A value or a secret reference: true, the value (a reference's is read
-- and registered for redaction), or false, err.
local function secret_value(v)
  if not secret.is_ref(v) then return true, v end
  local value, err = secret.resolve(v)
  if not value then return false, err end
  return true, value
end

--- A string or a list of strings as a list; raises on anything else.
---@param v string|string[]|nil
---@param what string  the option's name, for the error
---@return string[]
function M.list_of(v, what)
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
local list_of = M.list_of

-- The parts of the command ----------------------------------------------------
-- Each takes the command being built (argv, opts, w, secret_vars), adds to
-- it and returns true, or nil, msg, CODE; programmer errors raise.

local function add(cmd, ...)
  for _, a in ipairs({...}) do cmd.argv[#cmd.argv + 1] = a end
end

local function adhoc_args(cmd)
  local opts = cmd.opts
  if cmd.kind ~= "adhoc" then return true end
  if type(opts.hosts) ~= "string" and type(opts.hosts) ~= "table" then
    error("ansible.adhoc: hosts (a pattern) is required", 0)
  end
  add(cmd, type(opts.hosts) == "table" and table.concat(opts.hosts, ":") or opts.hosts)
  if type(opts.module) ~= "string" then error("ansible.adhoc: module is required", 0) end
  add(cmd, "-m", opts.module)
  if opts.args ~= nil then
    local a = opts.args
    if type(a) == "table" then
      local resolved, err = resolve_refs(a, {})
      if resolved == nil and err then return nil, err, "SECRET" end
      a = json.encode(json.object(resolved))
    end
    add(cmd, "-a", a)
  end
  return true
end

-- A table inventory is written as inventory.yml in the private directory,
-- with a redacted copy for the evidence.
local function inventory_args(cmd)
  local inv, w = cmd.opts.inventory, cmd.w
  if not (type(inv) == "table" and (inv.all or inv.hosts or inv.groups or inv.vars or inv.connection)) then
    for _, i in ipairs(list_of(inv, "inventory")) do add(cmd, "-i", i) end
    return true
  end
  local structure, err = resolve_refs(inventory.structure(inv), {})
  if structure == nil and err then return nil, err, "SECRET" end
  local path = w.tmp .. "/inventory.yml"
  local ok, werr = files.write_file(path, yaml.encode(structure))
  if not ok then return nil, werr, "FILE" end
  w.files[#w.files + 1] = path
  w.evidence_files["inventory.yml"] = yaml.encode(secret.redact_deep(structure))
  add(cmd, "-i", path)
  return true
end

-- One extra_vars entry: a string as is, a map as JSON on the command line,
-- or into the secret vars when it holds a secret reference.
local function extra_entry(cmd, e, what)
  if type(e) == "string" then
    add(cmd, "-e", e)
  elseif type(e) == "table" then
    local any = {}
    local resolved, err = resolve_refs(e, any)
    if resolved == nil and err then return nil, err end
    if any.any then
      for k, v in pairs(resolved) do cmd.secret_vars[k] = v end
    else
      add(cmd, "-e", json.encode(json.object(resolved)))
    end
  else
    error("ansible: " .. what .. " must be a table or a string", 0)
  end
  return true
end

local function extra_vars_args(cmd)
  local ev = cmd.opts.extra_vars
  if type(ev) == "table" and #ev > 0 then
    for i, e in ipairs(ev) do
      local ok, err = extra_entry(cmd, e, "extra_vars[" .. i .. "]")
      if not ok then return nil, err, "SECRET" end
    end
  elseif ev ~= nil and not (type(ev) == "table" and next(ev) == nil) then
    local ok, err = extra_entry(cmd, ev, "extra_vars")
    if not ok then return nil, err, "SECRET" end
  end
  for _, f in ipairs(list_of(cmd.opts.extra_vars_files, "extra_vars_files")) do add(cmd, "-e", "@" .. f) end
  return true
end

-- secret_vars, become_password and the extra_vars maps that hold a secret,
-- through a 0600 JSON file passed as -e @file.
local function secret_vars_args(cmd)
  local opts = cmd.opts
  if opts.secret_vars ~= nil then
    if type(opts.secret_vars) ~= "table" then error("ansible: secret_vars must be a table", 0) end
    local resolved, err = resolve_refs(opts.secret_vars, {})
    if resolved == nil and err then return nil, err, "SECRET" end
    register_leaves(resolved)
    for k, v in pairs(resolved) do cmd.secret_vars[k] = v end
  end
  if opts.become_password ~= nil then
    local ok, v = secret_value(opts.become_password)
    if not ok then return nil, v, "SECRET" end
    secret.register(v)
    cmd.secret_vars.ansible_become_password = v
  end
  if next(cmd.secret_vars) then
    local path = cmd.w.tmp .. "/secret-vars.json"
    local ok, err = files.write_private(path, json.encode(json.object(cmd.secret_vars)))
    if not ok then return nil, err, "FILE" end
    cmd.w.secret_files[#cmd.w.secret_files + 1] = path
    add(cmd, "-e", "@" .. path)
  end
  return true
end

local function vault_args(cmd)
  local opts = cmd.opts
  if opts.vault_password ~= nil then
    local ok, v = secret_value(opts.vault_password)
    if not ok then return nil, v, "SECRET" end
    if type(v) ~= "string" then error("ansible: vault_password must be a string or a secret reference", 0) end
    secret.register(v)
    local path = cmd.w.tmp .. "/vault-pass"
    local written, werr = files.write_private(path, v .. "\n")
    if not written then return nil, werr, "FILE" end
    cmd.w.secret_files[#cmd.w.secret_files + 1] = path
    add(cmd, "--vault-password-file", path)
  end
  if opts.vault_password_file then add(cmd, "--vault-password-file", opts.vault_password_file) end
  return true
end

-- Selection and modes: tags, limit, check, become, verbosity, extra_args.
local function selection_args(cmd)
  local opts = cmd.opts
  local tags = list_of(opts.tags, "tags")
  if #tags > 0 then add(cmd, "--tags", table.concat(tags, ",")) end
  local skip = list_of(opts.skip_tags, "skip_tags")
  if #skip > 0 then add(cmd, "--skip-tags", table.concat(skip, ",")) end
  local limit = list_of(opts.limit, "limit")
  if #limit > 0 then add(cmd, "--limit", table.concat(limit, ",")) end
  if opts.check then add(cmd, "--check") end
  if opts.diff then add(cmd, "--diff") end
  if opts.forks then
    add(cmd, "--forks", tostring(math.tointeger(opts.forks) or error("ansible: forks must be an integer", 0)))
  end
  if opts.become then add(cmd, "--become") end
  if opts.become_user then add(cmd, "--become-user", opts.become_user) end
  if opts.become_method then add(cmd, "--become-method", opts.become_method) end
  if opts.verbose and opts.verbose > 0 then add(cmd, "-" .. string.rep("v", math.min(opts.verbose, 6))) end
  for _, a in ipairs(list_of(opts.extra_args, "extra_args")) do add(cmd, a) end
  return true
end

-- An inline play is written as bomarun-play-XXXXXXXX.yml (in play_dir or
-- the private directory), with a redacted copy for the evidence.
local function inline_play(cmd)
  local opts, w = cmd.opts, cmd.w
  if type(opts.play) ~= "table" then error("ansible.playbook: play must be a table", 0) end
  local plays = opts.play[1] ~= nil and opts.play or {opts.play}
  local resolved, err = resolve_refs(plays, {})
  if resolved == nil and err then return nil, err, "SECRET" end
  local dir = opts.play_dir and (host.realpath(opts.play_dir) or opts.play_dir) or w.tmp
  local path = dir .. "/bomarun-play-" .. host.random_hex(4) .. ".yml"
  local ok, werr = files.write_file(path, yaml.encode(json.array(resolved)))
  if not ok then return nil, werr, "FILE" end
  w.files[#w.files + 1] = path
  w.evidence_files["play.yml"] = yaml.encode(json.array(secret.redact_deep(resolved)))
  add(cmd, path)
  return true
end

local function playbook_args(cmd)
  local opts = cmd.opts
  if cmd.kind ~= "playbook" then return true end
  if opts.play ~= nil and opts.playbook ~= nil then
    error("ansible.playbook: give playbook or play, not both", 0)
  end
  if opts.play ~= nil then return inline_play(cmd) end
  local books = list_of(opts.playbook, "playbook")
  if #books == 0 then error("ansible.playbook: playbook (a path) or play (a table) is required", 0) end
  for _, b in ipairs(books) do add(cmd, b) end
  return true
end

-- In command-line order.
local PARTS = {adhoc_args, inventory_args, extra_vars_args, secret_vars_args, vault_args, selection_args,
               playbook_args}

-- The environment ---------------------------------------------------------------

-- Our callback next to the stdout one, every temp and control path in the
-- private directory, nothing in ~.
local function environment(opts, w)
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
    ANSIBLE_CALLBACK_PLUGINS = joined(M.PLUGIN_DIR, "ANSIBLE_CALLBACK_PLUGINS", ":"),
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
  return env
end

--- Build the command of a run: argv, env and the files behind them, which
--- are recorded in w (files, secret_files, evidence_files).  Raises on
--- programmer errors; returns nil, msg, CODE ("SECRET", "FILE") when a
--- secret cannot be read or a file cannot be written.
---@param kind "playbook"|"adhoc"
---@param opts bomarun.AnsibleOptions
---@param w table  the run's files: tmp, events, files, secret_files, evidence_files
---@return string[]|nil argv
---@return table<string, string|false>|string env_or_err
---@return string? code
function M.build(kind, opts, w)
  local cmd = {kind = kind, opts = opts, w = w, secret_vars = {},
               argv = {opts.program or (kind == "adhoc" and "ansible" or "ansible-playbook")}}
  for _, part in ipairs(PARTS) do
    local ok, err, code = part(cmd)
    if not ok then return nil, err, code end
  end
  return cmd.argv, environment(opts, w)
end

return M

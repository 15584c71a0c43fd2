--- Profiles: per-site constants as data-only Lua files.
---
--- profiles/NAME.lua (or a path) is evaluated in a sandbox with no io, os,
--- require or load.  It returns a table of constants (or assigns them as
--- globals).  Secrets are references, never values:
---
---   return { cluster = "capi-test-1",
---            password = secret.env "OS_PASSWORD",
---            vault_pass = secret.file "~/.vault-pass" }
local host = require "bomarun._host"
local secret = require "bomarun.secret"

local M = {}

local SAFE = {"assert", "error", "ipairs", "next", "pairs", "select", "tonumber",
              "tostring", "type", "pcall", "rawequal", "rawget", "rawlen", "unpack"}

-- A profile gets its own copy of each library table: with the host's, a
-- profile could replace string.find or table.concat for the whole run (and
-- switch redaction off).  Left out: string.dump (code, not data) and
-- math.randomseed (it would reseed the host's generator).  The string
-- metatable's __index stays the host's string table, but a profile cannot
-- reach it: there is no getmetatable here and strings have no __newindex.
local LEAVE_OUT = {string = {dump = true}, math = {randomseed = true}}

local function copy_lib(name, lib)
  local c, skip = {}, LEAVE_OUT[name] or {}
  for k, v in pairs(lib) do
    if not skip[k] then c[k] = v end
  end
  return c
end

local function sandbox()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.string, env.math = copy_lib("string", string), copy_lib("math", math)
  env.table, env.utf8 = copy_lib("table", table), copy_lib("utf8", utf8)
  env.secret = {env = secret.env, file = secret.file}
  return env
end

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

--- Where a profile named `name` is looked for, in order.
---@param name string            a name, or a path (contains "/" or ends in .lua)
---@param runbook_source? string  the runbook's file, for profiles next to it
---@return string[] paths
function M.candidates(name, runbook_source)
  if name:find("/", 1, true) or name:match("%.lua$") then return {name} end
  local list = {"profiles/" .. name .. ".lua"}
  if runbook_source then
    local d = dirname(runbook_source)
    list[#list + 1] = d .. "/../profiles/" .. name .. ".lua"
    list[#list + 1] = d .. "/profiles/" .. name .. ".lua"
  end
  if host.lua_dir then
    list[#list + 1] = host.lua_dir .. "/../profiles/" .. name .. ".lua"
  end
  return list
end

--- Load a profile file in the sandbox.
---@param path string
---@return table|nil constants, string|nil err
function M.load_file(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "profile: cannot read " .. path .. ": " .. tostring(err) end
  local text = f:read("a")
  f:close()
  local env = sandbox()
  local chunk, perr = load(text, "@" .. path, "t", env)
  if not chunk then return nil, "profile: " .. perr end
  local task = require "bomarun.task"
  -- Bounded: a profile is data; a loop in one must not hang the run.
  local ok, res, terr = pcall(task.timeout, 2, chunk)
  if not ok then return nil, "profile: " .. path .. ": " .. tostring(res) end
  if res == nil and terr then return nil, "profile: " .. path .. ": evaluation " .. terr end
  local out = {}
  if type(res) == "table" then
    for k, v in pairs(res) do out[k] = v end
  elseif res ~= nil then
    return nil, "profile: " .. path .. " must return a table of constants, not a " .. type(res)
  end
  local base = sandbox()
  for k, v in pairs(env) do
    if base[k] == nil and out[k] == nil then out[k] = v end
  end
  return out
end

--- Find and load profile `name`.
---@param name string
---@param runbook_source? string  the runbook's file, for profiles next to it
---@return table|nil constants, string|nil path_or_err  the file it was read from, or the error
function M.load(name, runbook_source)
  local tried = M.candidates(name, runbook_source)
  for _, p in ipairs(tried) do
    if host.exists(p) == "file" then
      local c, err = M.load_file(p)
      if not c then return nil, err end
      return c, p
    end
  end
  return nil, "profile '" .. name .. "' not found (looked in " .. table.concat(tried, ", ") .. ")"
end

local function coerce(v, want, current)
  local kind = want or (current ~= nil and type(current)) or nil
  if kind == "number" or (kind == nil and tonumber(v) and v:match("^%-?%d+%.?%d*$")) then
    local n = tonumber(v)
    if n then return math.tointeger(n) or n end
  end
  if kind == "boolean" or (kind == nil and (v == "true" or v == "false")) then
    if v == "true" then return true elseif v == "false" then return false end
  end
  return v
end

--- Apply --set KEY=VALUE overrides (KEY may be dotted: a.b.c) to env in
--- place; a VALUE becomes a number or boolean where the declared type (or
--- the current value, or its look) says so.
---@param env table                          the constants
---@param sets? {[1]: string, [2]: string}[]  {KEY, VALUE} pairs
---@param types? table<string, string>        KEY -> declared type (from needs_map)
function M.apply_sets(env, sets, types)
  for _, kv in ipairs(sets or {}) do
    local key, value = kv[1], kv[2]
    local t = env
    local parts = {}
    for p in key:gmatch("[^.]+") do parts[#parts + 1] = p end
    for k = 1, #parts - 1 do
      if type(t[parts[k]]) ~= "table" then t[parts[k]] = {} end
      t = t[parts[k]]
    end
    local last = parts[#parts]
    t[last] = coerce(value, types and types[key], t[last])
  end
end

--- Normalise needs: {"a", "b"} or {a = "string"} -> {name = type|"any"}.
---@param needs? string[]|table<string, string>
---@return table<string, string> types, string[] names  names sorted
function M.needs_map(needs)
  local m, order = {}, {}
  for k, v in pairs(needs or {}) do
    if type(k) == "number" then
      if not m[v] then order[#order + 1] = v end
      m[v] = m[v] or "any"
    else
      if not m[k] then order[#order + 1] = k end
      m[k] = v
    end
  end
  table.sort(order)
  return m, order
end

local function type_of(v)
  if secret.is_ref(v) then return "secret" end
  return type(v)
end

--- Check the constants a runbook and its steps need.  Returns a list of
--- problems (empty when all is well).
---@param env table  the constants
---@param rb bomarun.Runbook
---@return string[] problems
function M.check_needs(env, rb)
  local problems = {}
  local function check(needs, who)
    local m, order = M.needs_map(needs)
    for _, name in ipairs(order) do
      local want, v = m[name], env[name]
      if v == nil then
        problems[#problems + 1] = string.format("missing constant '%s' (needed by %s)", name, who)
      elseif want ~= "any" and type_of(v) ~= want and not (want == "string" and type_of(v) == "secret") then
        problems[#problems + 1] = string.format("constant '%s' is a %s, %s needs a %s", name, type_of(v), who, want)
      end
    end
  end
  check(rb.needs, "the runbook")
  for _, u in ipairs(rb.units) do
    if u.node.needs then check(u.node.needs, "step " .. u.node.id) end
    for _, it in ipairs(u.node.items or {}) do
      if it.needs then check(it.needs, "item " .. it.id) end
    end
  end
  return problems
end

--- Resolve secret references in place; returns nil, err on the first
--- that cannot be read.
---@param env table  the constants (plain nested tables are searched too)
---@return true|nil ok, string|nil err
function M.resolve_secrets(env)
  for k, v in pairs(env) do
    if secret.is_ref(v) then
      local value, err = secret.resolve(v)
      if not value then return nil, err .. " (profile constant '" .. tostring(k) .. "')" end
      env[k] = value
    elseif type(v) == "table" and getmetatable(v) == nil then
      local ok, err = M.resolve_secrets(v)
      if not ok then return nil, err end
    end
  end
  return true
end

return M

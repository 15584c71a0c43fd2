--- bomarun.ansible.yaml: Lua values as YAML the way a person writes it,
--- for inline plays and table inventories (ansible.to_yaml).
---
--- Why not json.encode or lyaml.dump (Ansible reads JSON too; see
--- docs/ansible.md, "Inventories and inline plays as tables"): the files
--- land in the evidence directory for people to read, so keys come in the
--- order a person writes them (`name` first, `tasks` last) and multi-line
--- strings as literal blocks; lyaml.dump orders keys by `pairs`, writes
--- every empty table as `[]` (`ping: []` fails the play), knows nothing of
--- json.null, loses float digits and leaves "2001-12-14", "=" and "<<"
--- plain, which YAML 1.1 reads as a date or cannot read at all.
local json = require "bomarun.json"
local secret = require "bomarun.secret"

local M = {}

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
-- Keys whose empty value is a list, not a map: Ansible refuses `tasks: {}`
-- and `loop: {}`, and a module's empty arguments must stay `{}`.
local LIST_KEYS = {tasks = true, handlers = true, pre_tasks = true, post_tasks = true, roles = true,
                   tags = true, loop = true, with_items = true, block = true, rescue = true,
                   always = true, vars_files = true, notify = true, collections = true}

local function rank(k)
  if type(k) ~= "string" then return 10 end
  return KEY_RANK[k] or (KEYWORDS[k] and 50) or 10
end

local YAML_WORDS = {}
for w in ("y yes n no true false on off null ~"):gmatch("%S+") do YAML_WORDS[w] = true end

-- Characters a YAML reader refuses raw (C1 controls, U+FFFE, U+FFFF) or
-- reads as a line break (U+0085, U+2028, U+2029), as UTF-8 patterns.
local UNSAFE_UTF8 = {"\xC2[\x80-\x9F]", "\xE2\x80[\xA8\xA9]", "\xEF\xBF[\xBE\xBF]"}

local function escape_codepoint(c)
  return string.format("\\u%04X", utf8.codepoint(c))
end

local function yaml_quote(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" elseif c == "\t" then return "\\t" elseif c == "\r" then return "\\r"
    elseif c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\x%02X", c:byte())
  end)
  for _, p in ipairs(UNSAFE_UTF8) do s = s:gsub(p, escape_codepoint) end
  return '"' .. s .. '"'
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

local function has_unsafe_utf8(s)
  for _, p in ipairs(UNSAFE_UTF8) do
    if s:find(p) then return true end
  end
  return false
end

-- A literal block for multi-line text a person would write as one.
local function yaml_block(s, indent)
  if not s:find("\n", 1, true) or s:find("[\r%z\1-\8\11-\31\127]") or s:match("^[ \n]")
     or s:find("\n\n$") or not utf8.len(s) or has_unsafe_utf8(s) then
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
  -- YAML 1.1 reads a float only with a dot: 1e+20 would be a string.
  if not s:find("[.n]") then s = s:gsub("^([^eE]*)", "%1.0", 1) end
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

-- A table that becomes nested lines (not a secret reference or json.null,
-- which are scalars).
local function is_nested(x)
  return type(x) == "table" and not secret.is_ref(x) and x ~= json.null
end

local emit

-- Append list item x (at `path`) to out, its "- " at `indent`.
local function emit_item(out, x, indent, path, seen)
  local pad = string.rep(" ", indent)
  if is_nested(x) then
    local kind = classify(x, path)
    if kind == "empty" then
      out[#out + 1] = pad .. "- " .. (getmetatable(x) == json.array_mt and "[]" or "{}")
    elseif kind == "map" then
      -- The map's first key goes on the dash's line.
      local sub = {}
      emit(sub, x, indent + 2, path, seen)
      sub[1] = pad .. "- " .. sub[1]:sub(indent + 3)
      for _, l in ipairs(sub) do out[#out + 1] = l end
    else
      out[#out + 1] = pad .. "-"
      emit(out, x, indent + 2, path, seen)
    end
  elseif type(x) == "string" and yaml_block(x, indent + 2) then
    out[#out + 1] = pad .. "- " .. yaml_block(x, indent + 2)
  else
    out[#out + 1] = pad .. "- " .. scalar(x, path)
  end
end

-- Append the entry k: x (at `path`) to out, at `indent`.
local function emit_entry(out, k, x, indent, path, seen)
  local pad = string.rep(" ", indent)
  local kt = key_text(k, path)
  if is_nested(x) then
    if classify(x, path) == "empty" then
      local list = getmetatable(x) == json.array_mt or (LIST_KEYS[k] and getmetatable(x) ~= json.object_mt)
      out[#out + 1] = pad .. kt .. ": " .. (list and "[]" or "{}")
    else
      out[#out + 1] = pad .. kt .. ":"
      emit(out, x, indent + 2, path, seen)
    end
  elseif type(x) == "string" and yaml_block(x, indent + 2) then
    out[#out + 1] = pad .. kt .. ": " .. yaml_block(x, indent + 2)
  else
    out[#out + 1] = pad .. kt .. ": " .. scalar(x, path)
  end
end

-- Append the lines of value v (a non-empty table) at `indent` to out.
emit = function(out, v, indent, path, seen)
  if seen[v] then error("ansible: cannot render a cycle as YAML at " .. path, 0) end
  seen[v] = true
  local kind, n = classify(v, path)
  if kind == "list" then
    for i = 1, n do emit_item(out, v[i], indent, path .. "[" .. i .. "]", seen) end
  else
    for _, k in ipairs(sorted_keys(v, path)) do
      emit_entry(out, k, v[k], indent, path .. "." .. tostring(k), seen)
    end
  end
  seen[v] = nil
end

--- Render a Lua value as YAML (see ansible.to_yaml).
---@param v any
---@return string
function M.encode(v)
  if not is_nested(v) then
    return scalar(v, "$") .. "\n"
  end
  local kind = classify(v, "$")
  if kind == "empty" then return (getmetatable(v) == json.array_mt and "[]" or "{}") .. "\n" end
  local out = {}
  emit(out, v, 0, "$", {})
  return table.concat(out, "\n") .. "\n"
end

return M

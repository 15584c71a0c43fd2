--- Secrets: references in profiles, values that never reach evidence.
---
--- A profile names a secret by reference (`secret.env "OS_PASSWORD"`,
--- `secret.file "~/.vault-pass"`); the value is read when the run starts and
--- registered here, and every log line, event, report and error message
--- passes through `redact`, which replaces each registered value with ***.
local M = {}

local values = {}      -- registered secret strings, longest first
local MASK = "***"

---@class bomarun.SecretRef
---@field kind "env"|"file"
---@field name string

local ref_mt = {__name = "bomarun.secret_ref"}
ref_mt.__tostring = function(r) return "<secret " .. r.kind .. ":" .. r.name .. ">" end

--- A reference to a secret held in an environment variable.
---@param name string
---@return bomarun.SecretRef
function M.env(name)
  return setmetatable({kind = "env", name = name}, ref_mt)
end

--- A reference to a secret held in a file (trailing newline stripped).
---@param path string
---@return bomarun.SecretRef
function M.file(path)
  return setmetatable({kind = "file", name = path}, ref_mt)
end

--- Whether v is a secret reference (from secret.env or secret.file).
---@param v any
---@return boolean
function M.is_ref(v)
  return getmetatable(v) == ref_mt
end

--- Register a value so it is redacted everywhere from now on.
---@param v string  values that are not strings, or shorter than 3 bytes, are ignored
function M.register(v)
  if type(v) ~= "string" or #v < 3 then return end
  for _, x in ipairs(values) do if x == v then return end end
  values[#values + 1] = v
  table.sort(values, function(a, b) return #a > #b end)
end

--- Resolve a reference to its value (and register the value).
---@param ref bomarun.SecretRef
---@return string|nil value, string|nil err
function M.resolve(ref)
  local v
  if ref.kind == "env" then
    v = os.getenv(ref.name)
    if not v or v == "" then
      return nil, "secret: environment variable " .. ref.name .. " is not set"
    end
  else
    local path = ref.name:gsub("^~/", (os.getenv("HOME") or "") .. "/")
    local f, err = io.open(path, "rb")
    if not f then return nil, "secret: cannot read " .. ref.name .. ": " .. tostring(err) end
    v = f:read("a"):gsub("\r?\n$", "")
    f:close()
    if v == "" then return nil, "secret: file " .. ref.name .. " is empty" end
  end
  M.register(v)
  return v
end

local function replace_plain(s, needle)
  local out, i = {}, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = MASK
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- Replace every registered secret in s with ***.
---@param s any
---@return any
function M.redact(s)
  if type(s) ~= "string" or #values == 0 then return s end
  for _, v in ipairs(values) do s = replace_plain(s, v) end
  return s
end

--- A copy of v with every string redacted (tables are copied deeply).
--- v itself comes back when nothing is registered or it is neither a
--- string nor a table.
---@generic T
---@param v T
---@param seen? table  originals already copied -> their copies (for cycles; internal)
---@return T
function M.redact_deep(v, seen)
  if #values == 0 then return v end
  if type(v) == "string" then return M.redact(v) end
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = setmetatable({}, getmetatable(v))
  seen[v] = out
  for k, x in pairs(v) do out[M.redact_deep(k, seen)] = M.redact_deep(x, seen) end
  return out
end

--- Forget every registered value (tests only).
function M._reset() values = {} end

return M

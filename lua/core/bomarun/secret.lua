--- Secrets: references in profiles, values that never reach evidence.
---
--- A profile names a secret by reference (`secret.env "OS_PASSWORD"`,
--- `secret.file "~/.vault-pass"`); the value is read when the run starts and
--- registered here, and every log line, event, report and error message
--- passes through `redact`, which replaces each registered value with ***.
---
--- A value is redacted in every form bomarun's own output gives it: as is,
--- shell-quoted (proc.quote's escaping of '), JSON-escaped (json.encode's
--- form, without the quotes), %q-quoted (without the quotes), and, for a
--- multi-line value (a key, a certificate), each of its lines in all those
--- forms, since subprocess output and first-line summaries show it line by
--- line.  Values and lines shorter than MIN_LENGTH bytes (and blank lines)
--- are not redacted: masking every "ab" would destroy ordinary output.
local json = require "bomarun.json"

-- Captured now: a profile or runbook that replaced string.find or
-- table.concat later must not switch redaction off.
local find, sub, gsub, gmatch, format = string.find, string.sub, string.gsub, string.gmatch, string.format
local concat, sort = table.concat, table.sort
local type, ipairs, pairs, pcall, tostring = type, ipairs, pairs, pcall, tostring
local getmetatable, setmetatable = getmetatable, setmetatable

local M = {}

local MIN = 3
--- Values (and lines of multi-line values) shorter than this many bytes are
--- not redacted (read-only: changing it changes nothing).
M.MIN_LENGTH = MIN

local values = {}      -- registered secret strings
local needles = {}     -- every form of every value, longest first
local warned = {}      -- references already warned about (too short)
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

-- The forms of one string: as is, shell-quoted, JSON-escaped, %q-quoted.
local function add_forms(v, into)
  into[#into + 1] = v
  into[#into + 1] = (gsub(v, "'", "'\\''"))          -- proc.quote's inside, without the outer quotes
  local ok, j = pcall(json.encode, v)                  -- invalid UTF-8 has no JSON form
  if ok and type(j) == "string" then into[#into + 1] = sub(j, 2, -2) end
  into[#into + 1] = sub(format("%q", v), 2, -2)
  -- A trailing control character is written \ddd when a digit follows it.
  into[#into + 1] = sub(format("%q", v .. "0"), 2, -3)
end

--- The forms of v that are redacted (each at least MIN_LENGTH bytes):
--- v as is, shell-quoted, JSON-escaped, %q-quoted, and the same for each
--- line of a multi-line v (blank lines and lines shorter than MIN_LENGTH
--- excepted).  Empty for a value shorter than MIN_LENGTH.
---@param v string
---@return string[] forms  distinct, longest first
function M.forms(v)
  local all = {}
  if type(v) ~= "string" or #v < MIN then return all end
  add_forms(v, all)
  if find(v, "\n", 1, true) then
    for line in gmatch(v .. "\n", "([^\n]*)\n") do
      line = gsub(line, "\r$", "")
      if #line >= MIN and find(line, "%S") then add_forms(line, all) end
    end
  end
  local out, seen = {}, {}
  for _, f in ipairs(all) do
    if #f >= MIN and not seen[f] then
      seen[f] = true
      out[#out + 1] = f
    end
  end
  sort(out, function(a, b) return #a > #b or (#a == #b and a < b) end)
  return out
end

local function rebuild()
  local all, seen = {}, {}
  for _, v in ipairs(values) do
    for _, f in ipairs(M.forms(v)) do
      if not seen[f] then
        seen[f] = true
        all[#all + 1] = f
      end
    end
  end
  sort(all, function(a, b) return #a > #b or (#a == #b and a < b) end)
  needles = all
end

--- Register a value so it is redacted everywhere from now on, in every form
--- listed under `forms`.
---@param v string  values that are not strings, or shorter than MIN_LENGTH bytes, are ignored
function M.register(v)
  if type(v) ~= "string" or #v < MIN then return end
  for _, x in ipairs(values) do if x == v then return end end
  values[#values + 1] = v
  rebuild()
end

-- A value too short to be redacted is still used: say so, once per
-- reference, naming the reference and never the value.
local function warn_short(ref)
  local key = ref.kind .. ":" .. ref.name
  if warned[key] then return end
  warned[key] = true
  io.stderr:write(format("bomarun: warning: secret %s is shorter than %d characters; it is used but "
    .. "will NOT be redacted from output\n", tostring(ref), MIN))
end

--- Resolve a reference to its value (and register the value).  A value
--- shorter than MIN_LENGTH is returned but cannot be redacted: a warning
--- naming the reference goes to stderr.
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
    local path = gsub(ref.name, "^~/", (gsub(os.getenv("HOME") or "", "%%", "%%%%")) .. "/")
    local f, err = io.open(path, "rb")
    if not f then return nil, "secret: cannot read " .. ref.name .. ": " .. tostring(err) end
    local text, rerr = f:read("a")   -- nil, "Is a directory" for a directory
    f:close()
    if not text then return nil, "secret: cannot read " .. ref.name .. ": " .. tostring(rerr) end
    v = gsub(text, "\r?\n$", "")
    if v == "" then return nil, "secret: file " .. ref.name .. " is empty" end
  end
  if #v < MIN then warn_short(ref) end
  M.register(v)
  return v
end

local function replace_plain(s, needle)
  local out, i = {}, 1
  while true do
    local a, b = find(s, needle, i, true)
    if not a then break end
    out[#out + 1] = sub(s, i, a - 1)
    out[#out + 1] = MASK
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = sub(s, i)
  return concat(out)
end

--- Replace every registered secret, in each of its forms, in s with ***.
---@param s any
---@return any
function M.redact(s)
  if type(s) ~= "string" or #needles == 0 then return s end
  for _, v in ipairs(needles) do s = replace_plain(s, v) end
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
  if #needles == 0 then return v end
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
function M._reset() values, needles, warned = {}, {}, {} end

return M

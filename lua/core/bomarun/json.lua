--- bomarun.json: JSON encoding and decoding.
---
--- A thin, documented face over the C module `bomarun._json` (jansson).
---
--- Mapping:
---   object  <-> table marked with `json.object_mt`
---   array   <-> table marked with `json.array_mt`
---   null    <-> `json.null` (nil cannot be stored in a table)
---   integer <-> integer, real <-> float (2.0 encodes as `2.0`)
---
--- Unmarked tables are classified by their keys when encoding: keys exactly
--- 1..n (n > 0) make an array, string keys make an object, and the empty
--- table encodes as `{}` (use `json.array()` for `[]`).  Object keys are
--- sorted unless `sort_keys = false`.

local c = require "bomarun._json"

local json = {}

---@alias bomarun.json.value table|string|number|boolean|lightuserdata

---@class bomarun.json.decode_opts
---@field reject_duplicates? boolean  fail on repeated object keys (default: last one wins)

---@class bomarun.json.encode_opts
---@field indent? integer        0..31 spaces per level; 0 or absent = compact
---@field sort_keys? boolean     sort object keys (default true, for stable output)
---@field ensure_ascii? boolean  escape every non-ASCII character as \uXXXX

--- The JSON `null` value: a unique light userdata, distinct from nil.
---@type lightuserdata
json.null = c.null

--- Metatable marking a table as a JSON array (`__name` "bomarun.json.array").
---@type table
json.array_mt = c.array_mt

--- Metatable marking a table as a JSON object (`__name` "bomarun.json.object").
---@type table
json.object_mt = c.object_mt

--- Decode a JSON document (any value, not only objects and arrays).
--- Malformed input is not an error: it returns nil, a message of the form
--- `"json: LINE:COL: reason"` and the code `"JSON"`.
---@param text string
---@param opts? bomarun.json.decode_opts
---@return bomarun.json.value|nil value
---@return string? err
---@return "JSON"? code
function json.decode(text, opts)
  return c.decode(text, opts)
end

--- Encode a Lua value as JSON text.
--- Raises an error naming the offending path (e.g. `"json: cannot encode a
--- function at $.a[3]"`) for values JSON cannot represent: functions,
--- userdata, cycles, NaN/inf, invalid UTF-8, sparse or mixed-key tables.
--- Array indices in paths are Lua's (1-based).
---@param value bomarun.json.value
---@param opts? bomarun.json.encode_opts
---@return string
function json.encode(value, opts)
  return c.encode(value, opts)
end

--- `s` with every byte that is not part of valid UTF-8 (the rules `encode`
--- applies: no overlong forms, no surrogates, nothing above U+10FFFF)
--- written as the text `\xHH` (upper-case hex): Latin-1 "r\233s" becomes
--- "r\\xE9s", readable and encodable.  Valid UTF-8 comes back unchanged.
---@param s string
---@return string
function json.escape_utf8(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = string.format("\\x%02X", s:byte(bad))
    i = bad + 1
  end
  return table.concat(out)
end

-- Sanitize -----------------------------------------------------------------

local MAX_DEPTH = 1000   -- well below the decoder's limit, so the copy reads back

local function path_step(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  if math.type(k) == "integer" then return path .. "[" .. k .. "]" end
  return path .. "[" .. string.format("%q", tostring(k)) .. "]"
end

local function key_text(k)
  local kind = type(k)
  if kind == "string" then return (json.escape_utf8(k):gsub("%z", "\\x00")) end
  if kind == "number" then
    if k ~= k then return "nan" end
    if math.type(k) == "integer" then return tostring(k) end
    return (k == math.huge and "inf") or (k == -math.huge and "-inf") or string.format("%.17g", k)
  end
  if kind == "boolean" then return tostring(k) end
  return nil
end

local function sanitize(v, path, depth, visiting, problems)
  local kind = type(v)
  if kind == "string" then return json.escape_utf8(v) end
  if kind == "number" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    return v
  end
  if kind == "boolean" or kind == "nil" or v == c.null then return v end
  if kind ~= "table" then
    problems[#problems + 1] = {what = "a " .. kind, path = path}
    return "<" .. kind .. ">"
  end
  if visiting[v] then
    problems[#problems + 1] = {what = "a cycle", path = path}
    return "<cycle>"
  end
  if depth >= MAX_DEPTH then
    problems[#problems + 1] = {what = "nesting deeper than " .. MAX_DEPTH, path = path}
    return "<nested too deeply>"
  end
  visiting[v] = true
  local mt = getmetatable(v)
  local mark = (mt == c.array_mt and "array") or (mt == c.object_mt and "object") or nil
  -- Keys exactly 1..n make an array (unless marked an object); anything
  -- else becomes an object with string keys.
  local ints, others, max = 0, 0, 0
  for k in next, v do
    if math.type(k) == "integer" and k >= 1 then
      ints = ints + 1
      if k > max then max = k end
    else
      others = others + 1
    end
  end
  local out
  if mark ~= "object" and others == 0 and ints == max and (ints > 0 or mark == "array") then
    out = mark and setmetatable({}, c.array_mt) or {}
    for i = 1, max do out[i] = sanitize(rawget(v, i), path_step(path, i), depth + 1, visiting, problems) end
  else
    out = setmetatable({}, c.object_mt)
    if ints == 0 and others == 0 and not mark then setmetatable(out, nil) end
    for k, x in next, v do
      local kt = key_text(k)
      if kt == nil then
        problems[#problems + 1] = {what = "a " .. type(k) .. " as a key", path = path}
      else
        out[kt] = sanitize(x, path_step(path, k), depth + 1, visiting, problems)
      end
    end
  end
  visiting[v] = nil
  return out
end

--- A copy of `v` that `encode` always accepts, for evidence that must not
--- be lost: invalid UTF-8 bytes in strings and keys as the text `\xHH`
--- (escape_utf8; a NUL in a key as `\x00`, which the decoder refuses),
--- NaN and infinities as the strings "nan", "inf", "-inf", a table that
--- is neither 1..n nor string-keyed as an object with string keys ("1",
--- "true", ...).  What JSON cannot hold at all (a function, userdata, a
--- thread, a cycle, a table key, nesting deeper than 1000) is replaced by a
--- string such as "<function>" and listed in `problems`, each with its
--- path from `root` (e.g. `$.a[3]`), so the caller can refuse it or say so.
---@param v any
---@param root? string  the name of v in problem paths (default "$")
---@return any copy, {what: string, path: string}[] problems
function json.sanitize(v, root)
  local problems = {}
  local out = sanitize(v, root or "$", 0, {}, problems)
  return out, problems
end

--- Mark `t` (or a new table) as a JSON array and return it.
--- Raises if `t` already has a metatable other than the JSON ones.
---@generic T: table
---@param t? T
---@return T
function json.array(t)
  return c.array(t)
end

--- Mark `t` (or a new table) as a JSON object and return it.
--- Raises if `t` already has a metatable other than the JSON ones.
---@generic T: table
---@param t? T
---@return T
function json.object(t)
  return c.object(t)
end

--- Whether `encode` would emit `v` as a JSON array: marked with `array_mt`,
--- or unmarked with keys exactly 1..n (n > 0).
---@param v any
---@return boolean
function json.is_array(v)
  return c.is_array(v)
end

return json

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

--- bomarun.dag's shared helpers: argument checks (they raise "dag: ..." at
--- the caller's level), resource lists, and the formatting of seconds and
--- error messages.  Internal to bomarun.dag.
local M = {}

--- The failure modes g:run knows.
M.MODES = {["fail-fast"] = true, continue = true}

--- Times closer than this are equal (ranks and start times are sums of floats).
M.EPS = 1e-9

--- Raise "dag: msg" at `level` counted from the caller of fail (1: that caller).
---@param msg string
---@param level? integer
function M.fail(msg, level)
  error("dag: " .. msg, (level or 1) + 1)
end

--- Raise if `t` has a key that is not a string in `allowed`, naming the
--- allowed ones.
---@param t table
---@param allowed table<string, true>
---@param what string   what the table is, for the message ("g:run", "component 'x'")
---@param level integer
function M.check_keys(t, allowed, what, level)
  for k in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      M.fail(string.format("%s: unknown field '%s' (expected %s)", what, tostring(k), table.concat(names, ", ")),
        level + 1)
    end
  end
end

--- {"a", "b"} -> {a = true, b = true}
---@param list string[]
---@return table<string, true>
function M.set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

--- Whether v is an integer >= 1.
---@param v any
---@return boolean
function M.is_count(v)
  return math.type(v) == "integer" and v >= 1
end

--- A list of component names, checked, without duplicates (first one kept).
---@param v any
---@param what string
---@param level integer
---@return string[]
function M.name_list(v, what, level)
  if v == nil then return {} end
  if type(v) ~= "table" then M.fail(what .. " must be a list of component names", level + 1) end
  local out, seen = {}, {}
  for k, n in pairs(v) do
    if math.type(k) ~= "integer" or type(n) ~= "string" or n == "" then
      M.fail(what .. " must be a list of component names", level + 1)
    end
  end
  for _, n in ipairs(v) do
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  return out
end

--- {apt = 1, ["k8s-api"] = 2} or {"apt", "containerd"} -> {{name =, count =}}
--- sorted by name (the one global order in which a part takes them).
--- Raises on a resource without a cap or bigger than its cap.
---@param v any
---@param caps table<string, integer>
---@param what string
---@param level integer
---@return bomarun.DagResource[]
function M.resource_list(v, caps, what, level)
  if v == nil then return {} end
  if type(v) ~= "table" then M.fail(what .. " must be a table {name = count} or a list of names", level + 1) end
  local counts = {}
  for k, c in pairs(v) do
    local name, count = k, c
    if math.type(k) == "integer" then name, count = c, 1 end
    if type(name) ~= "string" or name == "" then
      M.fail(what .. " must be a table {name = count} or a list of names", level + 1)
    end
    if not M.is_count(count) then
      M.fail(string.format("%s: resource '%s' needs a count that is an integer >= 1, not %s", what, name,
        tostring(count)), level + 1)
    end
    if caps[name] == nil then
      M.fail(string.format("%s: resource '%s' has no cap (declare it: dag.new{caps = {[\"%s\"] = N}})", what, name,
        name), level + 1)
    end
    counts[name] = (counts[name] or 0) + count
    if counts[name] > caps[name] then
      M.fail(string.format("%s: needs %d of resource '%s' but its cap is %d, so it could never start", what,
        counts[name], name, caps[name]), level + 1)
    end
  end
  local out = {}
  for name, count in pairs(counts) do out[#out + 1] = {name = name, count = count} end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

--- Seconds for humans: "-" for nil, 3 significant digits or so.
---@param x number|nil
---@return string
function M.fmt_s(x)
  if x == nil then return "-" end
  if x >= 100 then return string.format("%.0f", x) end
  if x >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

--- "apt, k8s-api=2"
---@param list bomarun.DagResource[]
---@return string
function M.fmt_resources(list)
  local parts = {}
  for _, r in ipairs(list) do
    parts[#parts + 1] = r.count == 1 and r.name or (r.name .. "=" .. r.count)
  end
  return table.concat(parts, ", ")
end

--- The first line of tostring(s).
---@param s any
---@return string
function M.first_line(s)
  s = tostring(s)
  return s:match("^[^\n]*")
end

--- An error as message and traceback (the traceback nil if it has none).
---@param err any
---@return string message, string|nil traceback
function M.split_traceback(err)
  if type(err) ~= "string" then return tostring(err), nil end
  local msg, tb = err:match("^(.-)\n(stack traceback:.*)$")
  return msg or err, tb
end

--- An xpcall handler: a string error gets a traceback; other values
--- (cancellation errors) pass unchanged so their code stays readable.
---@param e any
---@return any
function M.traceback(e)
  if type(e) == "string" then return debug.traceback(e, 2) end
  return e
end

return M

--- Cluster API conditions: `Cluster`, `Machine`, the infrastructure
--- objects (`OpenStackCluster`, ...), in their v1beta1 shape (a
--- `status.conditions` array with severity, `failureReason` /
--- `failureMessage`, `infrastructureReady`, an infrastructure provider's
--- `status.ready`) and their v1beta2 shape (metav1 conditions in
--- `status.conditions` or, on a v1beta1 object, `status.v1beta2.conditions`;
--- the old ones under `status.deprecated.v1beta1`).
local poll = require "bomarun.poll"
local task = require "bomarun.task"

local M = {}

local util = require "bomarun.k8s.util"
local str, tbl = util.str, util.tbl

---@class bomarun.K8sCondition
---@field type string
---@field status string          "True", "False", "Unknown"
---@field reason string|nil
---@field message string|nil
---@field severity string|nil    v1beta1: "Error", "Warning", "Info"
---@field last_transition string|nil
---@field source string          where it was read: "conditions", "v1beta2.conditions", "deprecated.v1beta1.conditions", "status.ready", ...

local function add(out, list, source)
  for _, c in ipairs(tbl(list)) do
    if type(c) == "table" and str(c.type) and not out[c.type] then
      out[c.type] = {type = c.type, status = tostring(c.status), reason = str(c.reason), message = str(c.message),
                     severity = str(c.severity), last_transition = str(c.lastTransitionTime), source = source}
    end
  end
end

local function synth(out, ctype, value, source)
  if out[ctype] or type(value) ~= "boolean" then return end
  out[ctype] = {type = ctype, status = value and "True" or "False", source = source}
end

--- An object's conditions by type.  status.conditions first, then
--- status.v1beta2.conditions, then status.deprecated.v1beta1.conditions
--- for types not seen yet; "Ready" from an infrastructure object's
--- status.ready and "InfrastructureReady" from status.infrastructureReady /
--- status.initialization.infrastructureProvisioned when no condition says.
---@param obj table
---@return table<string, bomarun.K8sCondition>
function M.conditions(obj)
  local st = tbl(tbl(obj).status)
  local out = {}
  add(out, st.conditions, "conditions")
  add(out, tbl(st.v1beta2).conditions, "v1beta2.conditions")
  add(out, tbl(tbl(st.deprecated).v1beta1).conditions, "deprecated.v1beta1.conditions")
  synth(out, "Ready", st.ready, "status.ready")
  synth(out, "InfrastructureReady", st.infrastructureReady, "status.infrastructureReady")
  synth(out, "InfrastructureReady", tbl(st.initialization).infrastructureProvisioned,
        "status.initialization.infrastructureProvisioned")
  return out
end

--- A Cluster API object's terminal failure (v1beta1 failureReason /
--- failureMessage, also under status.deprecated.v1beta1), or nil.
---@param obj table
---@return string|nil
function M.failure(obj)
  local st = tbl(tbl(obj).status)
  local old = tbl(tbl(st.deprecated).v1beta1)
  local reason = str(st.failureReason) or str(old.failureReason)
  local message = str(st.failureMessage) or str(old.failureMessage)
  if not reason and not message then return nil end
  return (reason or "Failed") .. (message and (": " .. message) or "")
end

local function describe(c)
  if not c then return "absent" end
  local s = c.status
  if c.reason then s = s .. " " .. c.reason end
  if c.severity then s = s .. " [" .. c.severity .. "]" end
  if c.message then s = s .. ": " .. c.message:gsub("%s*\n%s*", "; ") end
  return s
end
M.describe = describe

--- Wait until `condition` of the object is True.  Fails at once on a
--- failureReason/failureMessage or when the condition's reason is in
--- `fail_reasons`; on a timeout the message gives the condition's status,
--- reason and message.  timeout 600, interval 10.
--- Returns the condition and the object.
---@param kc bomarun.K8sClient
---@param resource string|table
---@param name string
---@param cond string
---@param opts table
---@return bomarun.K8sCondition|nil condition, table|string|nil object_or_err, string|nil code
function M.wait_condition(kc, resource, name, cond, opts)
  local r = kc:resource(resource)
  local ns = r.namespaced and (opts.namespace or kc.namespace) or nil
  local label = r.resource .. (r.group ~= "" and ("." .. r.group) or "") .. " " .. (ns and (ns .. "/") or "") .. name
  local what = label .. " " .. cond
  local fail_reasons = {}
  for _, x in ipairs(opts.fail_reasons or {}) do fail_reasons[x] = true end
  local verdict, obj, c, failure, api_fail, last_err
  local t0 = task.now()
  local v, err, code = poll.run{function()
      verdict = nil
      local o, gerr, gcode = kc:get(r, name, {namespace = ns})
      if not o then
        last_err = gerr
        if gcode == "Unauthorized" or gcode == "Forbidden" then
          verdict, api_fail = "fail", {err = gerr, code = gcode}
          return "error: " .. gcode
        end
        return nil, gerr
      end
      obj, c = o, M.conditions(o)[cond]
      failure = M.failure(o)
      if c and c.status == "True" then
        verdict = "ok"
      elseif failure or (c and c.reason and fail_reasons[c.reason]) then
        verdict = "fail"
      end
      return describe(c)
    end,
    ok = function() return verdict == "ok" end, fail = function() return verdict == "fail" end,
    timeout = opts.timeout or 600, interval = opts.interval or 10, what = what, quiet = opts.quiet}
  if v ~= nil then return c, obj end
  if code == "FAILED_STATE" and api_fail then return nil, api_fail.err, api_fail.code end
  if code == "FAILED_STATE" then
    return nil, string.format("k8s: %s: %s", label, failure or (cond .. " " .. describe(c))), "FAILED_STATE"
  end
  if code == "TIMEOUT" then
    local s = string.format("k8s: %s: %s not True after %.1f s: %s", label, cond, task.now() - t0,
      obj and describe(c) or ("never read: " .. tostring(last_err)))
    return nil, s, "TIMEOUT"
  end
  return nil, err, code
end

return M

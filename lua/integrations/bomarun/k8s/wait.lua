--- The waits a runbook needs, each a poll (bomarun.poll: every attempt in
--- the step log, changes journaled) that re-reads the API on every attempt
--- and stops at once on a state that waiting cannot fix:
---
---   nodes            Ready (count, version); a Ready node at another version fails at once
---   pods             Running and ready; CrashLoopBackOff, ImagePullBackOff/ErrImagePull,
---                    CreateContainerError, a failed init container, a Failed pod, or
---                    Pending past `pending_deadline` fail at once, naming pod, container
---                    and reason, with the container's last log lines
---   service_address  a LoadBalancer Service's external IP or hostname
---
--- Each is called as a client method (kc:wait_nodes{...}, ...).
local json = require "bomarun.json"
local poll = require "bomarun.poll"
local task = require "bomarun.task"

local M = {}

local util = require "bomarun.k8s.util"
local str, tbl = util.str, util.tbl

local function cut(s, n)
  s = tostring(s or ""):gsub("%s+", " ")
  if #s > n then return s:sub(1, n - 3) .. "..." end
  return s
end

-- Time -----------------------------------------------------------------------

-- Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Seconds since the epoch of an RFC 3339 time ("2021-03-02T15:10:01Z",
--- fractions and offsets allowed), or nil.
---@param s any
---@return number|nil
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(sec)
  rest = rest:gsub("^%.%d+", "")
  local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    t = sign == "+" and t - off or t + off
  end
  return t
end

local MONTHS = {Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                Nov = 11, Dec = 12}

--- Seconds since the epoch of an HTTP date ("Mon, 30 Nov 2026 01:43:01 GMT"), or nil.
---@param s any
---@return number|nil
function M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec = s:match("^%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT$")
  if not d or not MONTHS[mon] then return nil end
  return days_from_civil(tonumber(y), MONTHS[mon], tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(sec)
end

-- The server's clock (its Date header), else ours: pod ages are measured
-- against the clock that stamped them.
local function server_now(headers)
  return M.parse_http_date(type(headers) == "table" and headers.date or nil) or os.time()
end

local function duration(s)
  s = math.floor(s + 0.5)
  if s < 120 then return s .. "s" end
  if s < 7200 then return string.format("%dm%02ds", s // 60, s % 60) end
  if s < 172800 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
  return string.format("%dd%02dh", s // 86400, (s % 86400) // 3600)
end

-- Pods ------------------------------------------------------------------------

-- Waiting reasons no amount of waiting fixes.
local FATAL = {CrashLoopBackOff = true, ImagePullBackOff = true, ErrImagePull = true, CreateContainerError = true,
               CreateContainerConfigError = true, InvalidImageName = true, ErrImageNeverPull = true,
               RunContainerError = true}
M.FATAL_REASONS = FATAL

-- A container that ran (and may have logged): worth its last lines.
local HAS_LOGS = {CrashLoopBackOff = true, RunContainerError = true, Error = true}

---@class bomarun.K8sPodProblem
---@field pod string
---@field namespace string|nil
---@field container string|nil
---@field init boolean|nil       an init container
---@field reason string
---@field message string|nil
---@field restarts integer|nil
---@field exit_code integer|nil
---@field logs string|nil        the container's last log lines (wait_pods)
---@field log_error string|nil   why they could not be read

local function problem(pod, c, init, reason, message)
  local meta = tbl(pod.metadata)
  return {pod = meta.name, namespace = meta.namespace, container = c and c.name, init = init or nil,
          reason = reason, message = str(message), restarts = c and tonumber(c.restartCount)}
end

--- What makes a pod fail at once, or nil: a container (or init container)
--- waiting on CrashLoopBackOff, ImagePullBackOff, ErrImagePull,
--- CreateContainerError, ...; an init container that exited non-zero; a
--- Failed pod.
---@param pod table
---@return bomarun.K8sPodProblem|nil
function M.pod_problem(pod)
  local st = tbl(pod.status)
  for _, c in ipairs(tbl(st.initContainerStatuses)) do
    local s = tbl(c.state)
    local w, t = tbl(s.waiting), tbl(s.terminated)
    if FATAL[w.reason] then return problem(pod, c, true, w.reason, w.message) end
    local code = tonumber(t.exitCode)
    if code and code ~= 0 then
      local p = problem(pod, c, true, str(t.reason) or "Error",
        "exit code " .. code .. (str(t.message) and (": " .. t.message) or ""))
      p.exit_code = code
      return p
    end
  end
  for _, c in ipairs(tbl(st.containerStatuses)) do
    local w = tbl(tbl(c.state).waiting)
    if FATAL[w.reason] then
      local p = problem(pod, c, false, w.reason, w.message)
      local last = tbl(tbl(c.lastState).terminated)
      if tonumber(last.exitCode) then
        p.exit_code = tonumber(last.exitCode)
        if not p.message then p.message = "last exit code " .. last.exitCode end
      end
      return p
    end
  end
  if st.phase == "Failed" then return problem(pod, nil, false, str(st.reason) or "Failed", st.message) end
  return nil
end

local function condition(obj, ctype)
  for _, c in ipairs(tbl(tbl(obj.status).conditions)) do
    if type(c) == "table" and c.type == ctype then return c end
  end
  return nil
end

-- "ready", "done" (Succeeded), "pending" or "waiting", and why not ready.
local function pod_state(pod)
  local st = tbl(pod.status)
  if st.phase == "Succeeded" then return "done" end
  local why = {}
  for _, c in ipairs(tbl(st.containerStatuses)) do
    if c.ready ~= true then
      local w = tbl(tbl(c.state).waiting)
      why[#why + 1] = c.name .. " " .. (str(w.reason) or (tbl(c.state).running and "not ready") or "not running")
    end
  end
  if st.phase == "Running" then
    local rc = condition(pod, "Ready")
    if (rc and rc.status == "True") or (not rc and #why == 0 and #tbl(st.containerStatuses) > 0) then
      return "ready"
    end
    return "waiting", #why > 0 and table.concat(why, ", ") or "not ready"
  end
  if st.phase == "Pending" then
    local sc = condition(pod, "PodScheduled")
    if sc and sc.status == "False" then
      return "pending", (str(sc.reason) or "Unschedulable") .. (str(sc.message) and (": " .. sc.message) or ""),
        str(sc.reason) or "Unschedulable", str(sc.message)
    end
    for _, c in ipairs(tbl(st.initContainerStatuses)) do
      local w = tbl(tbl(c.state).waiting)
      if w.reason then return "pending", "init " .. c.name .. " " .. w.reason, w.reason, str(w.message) end
    end
    -- The reason the first waiting container gives (ContainerCreating, PodInitializing, ...).
    for _, c in ipairs(tbl(st.containerStatuses)) do
      local w = tbl(tbl(c.state).waiting)
      if str(w.reason) then return "pending", table.concat(why, ", "), w.reason, str(w.message) end
    end
    return "pending", #why > 0 and table.concat(why, ", ") or "Pending", nil
  end
  return "waiting", str(st.phase) or "no phase"
end

local function pod_name(p)
  local meta = tbl(p.metadata)
  return (meta.namespace and (meta.namespace .. "/") or "") .. tostring(meta.name)
end

local function problem_text(p)
  local where = (p.namespace and (p.namespace .. "/") or "") .. tostring(p.pod)
  local s = "pod " .. where
  if p.container then s = s .. " " .. (p.init and "init container " or "container ") .. p.container end
  s = s .. ": " .. p.reason
  if p.message then s = s .. ": " .. cut(p.message, 300) end
  if p.restarts and p.restarts > 0 then s = s .. " (restarts " .. p.restarts .. ")" end
  return s
end
M.problem_text = problem_text

local function scope_text(kc, opts)
  local s = opts.all_namespaces and "pods in all namespaces" or
    ("pods in namespace " .. (opts.namespace or kc.namespace))
  if opts.label_selector then s = s .. " (" .. opts.label_selector .. ")" end
  return s
end

-- One reading of the pods: verdict "ok" | "fail" | nil (keep waiting),
-- a short summary, and the problems / not-ready details.
local function judge_pods(pods, now, opts, first_seen, clock)
  local problems, waiting, ready, done = {}, {}, 0, 0
  for _, p in ipairs(pods) do
    local pr = M.pod_problem(p)
    if pr then
      problems[#problems + 1] = pr
    else
      local state, why, preason, pmsg = pod_state(p)
      if state == "ready" then
        ready = ready + 1
      elseif state == "done" then
        done = done + 1
      else
        if state == "pending" then
          local key = pod_name(p)
          local since = M.parse_time(tbl(p.metadata).creationTimestamp)
          local age
          if since then
            age = now - since
          else
            first_seen[key] = first_seen[key] or clock
            age = clock - first_seen[key]
          end
          if age > opts.pending_deadline then
            local pr2 = problem(p, nil, false, preason or "Pending",
              string.format("Pending for %s (deadline %s)%s", duration(age), duration(opts.pending_deadline),
                pmsg and (": " .. pmsg) or (why and why ~= "Pending" and (": " .. why) or "")))
            pr2.pending_for = age
            problems[#problems + 1] = pr2
            goto next
          end
        end
        waiting[#waiting + 1] = pod_name(p) .. " (" .. cut(why, 160) .. ")"
      end
    end
    ::next::
  end
  local n = #pods
  if #problems > 0 then
    local first = problems[1]
    return "fail", string.format("%d pods: %s%s", n, problem_text(first):sub(1, 100),
      #problems > 1 and string.format(" (+%d more)", #problems - 1) or ""), problems, waiting
  end
  if n >= opts.min and #waiting == 0 then
    return "ok", string.format("%d/%d ready%s", ready, n, done > 0 and (", " .. done .. " completed") or ""),
      problems, waiting
  end
  if n < opts.min then
    return nil, string.format("%d pods (want at least %d)", n, opts.min), problems, waiting
  end
  return nil, string.format("%d/%d ready; waiting: %s", ready, n, table.concat(waiting, ", ")), problems, waiting
end

-- API errors that waiting cannot fix.
local FATAL_API = {Unauthorized = true, Forbidden = true}

--- Wait for pods (a namespace, a selector) to be Running and ready (or
--- Succeeded); see the module's comment for what fails at once.
--- opts: namespace (default the client's) or all_namespaces, label_selector,
--- field_selector, timeout (300), interval (2), pending_deadline (300 s of
--- Pending, by the pod's creationTimestamp against the server's clock),
--- min (1: at least this many pods), log_lines (20; false: none), quiet.
--- Returns the pods; nil, message, "FAILED_STATE", problem at once on a
--- failure; nil, message, "TIMEOUT" naming the pods not ready.
---@param kc bomarun.K8sClient
---@param opts table
---@return table[]|nil pods, string|nil err, string|nil code, bomarun.K8sPodProblem|nil problem
function M.pods(kc, opts)
  opts = {namespace = opts.namespace, all_namespaces = opts.all_namespaces, label_selector = opts.label_selector,
          field_selector = opts.field_selector, timeout = opts.timeout or 300, interval = opts.interval or 2,
          pending_deadline = opts.pending_deadline or 300, min = opts.min or 1, quiet = opts.quiet,
          log_lines = opts.log_lines == nil and 20 or opts.log_lines}
  local scope = scope_text(kc, opts)
  local verdict, last_pods, problems, waiting, api_fail, summary
  local first_seen = {}
  local t0 = task.now()
  local v, err, code = poll.run{function()
      verdict = nil
      local pods, lerr, lcode = kc:_list("pods", opts)
      if not pods then
        if FATAL_API[lcode] then
          verdict, api_fail = "fail", {err = lerr, code = lcode}
          return "error: " .. tostring(lcode)
        end
        return nil, lerr
      end
      local now = server_now(lerr)   -- _list's second value: the headers
      last_pods = pods
      verdict, summary, problems, waiting = judge_pods(pods, now, opts, first_seen, task.now())
      return summary
    end,
    ok = function() return verdict == "ok" end, fail = function() return verdict == "fail" end,
    timeout = opts.timeout, interval = opts.interval, what = scope, quiet = opts.quiet}
  if v ~= nil then return last_pods end
  local elapsed = task.now() - t0
  if code == "FAILED_STATE" and api_fail then return nil, api_fail.err, api_fail.code end
  if code == "FAILED_STATE" and problems and problems[1] then
    local first = problems[1]
    local lines = {"k8s: " .. scope .. ": " .. problem_text(first)}
    for i = 2, #problems do lines[#lines + 1] = "  also " .. problem_text(problems[i]) end
    if opts.log_lines and first.container and HAS_LOGS[first.reason] then
      local text, lerr = kc:logs(first.pod, {namespace = first.namespace, container = first.container,
                                             tail = opts.log_lines})
      if text then
        first.logs = text
        lines[#lines + 1] = string.format("  last log lines of %s/%s:", first.pod, first.container)
        for l in text:gmatch("[^\n]+") do lines[#lines + 1] = "    " .. l end
      else
        first.log_error = lerr
        lines[#lines + 1] = "  (no log lines: " .. tostring(lerr) .. ")"
      end
    end
    return nil, table.concat(lines, "\n"), "FAILED_STATE", first
  end
  if code == "TIMEOUT" then
    local what = summary or err
    if waiting and #waiting > 0 and last_pods then
      local ready = #last_pods - #waiting
      what = string.format("%d/%d ready; not ready: %s", ready, #last_pods, table.concat(waiting, "; "))
    end
    return nil, string.format("k8s: %s: not all Running and ready after %.1f s: %s", scope, elapsed, what),
      "TIMEOUT"
  end
  return nil, err, code
end

-- Nodes ------------------------------------------------------------------------

local function version_matches(have, want)
  if not want then return true end
  have = tostring(have or ""):gsub("^v", "")
  want = tostring(want):gsub("^v", "")
  return have == want or have:sub(1, #want + 1) == want .. "." or have:sub(1, #want + 1) == want .. "+"
    or have:sub(1, #want + 1) == want .. "-"
end
M.version_matches = version_matches

--- Wait for nodes to be Ready: at least `count` (default 1) Ready, none
--- NotReady unless `all = false`, every Ready node's kubelet at `version`
--- ("v1.22" matches v1.22.5).  A Ready node at another version fails at
--- once (waiting does not upgrade it).  timeout 600, interval 5.
--- Returns the nodes; nil, message naming the nodes not Ready and why,
--- "TIMEOUT" (or "FAILED_STATE").
---@param kc bomarun.K8sClient
---@param opts table
---@return table[]|nil nodes, string|nil err, string|nil code
function M.nodes(kc, opts)
  local count, all = opts.count or 1, opts.all ~= false
  local want = opts.version
  local verdict, last, notready, wrong, api_fail
  local what = "nodes Ready" .. (opts.count and (" (" .. count .. ")") or "") .. (want and (" at " .. want) or "")
  local t0 = task.now()
  local v, err, code = poll.run{function()
      verdict = nil
      local nodes, lerr, lcode = kc:_list("nodes", {label_selector = opts.label_selector})
      if not nodes then
        if FATAL_API[lcode] then
          verdict, api_fail = "fail", {err = lerr, code = lcode}
          return "error: " .. tostring(lcode)
        end
        return nil, lerr
      end
      last, notready, wrong = nodes, {}, {}
      local ready = 0
      for _, n in ipairs(nodes) do
        local rc = condition(n, "Ready")
        local name = tostring(tbl(n.metadata).name)
        if rc and rc.status == "True" then
          ready = ready + 1
          local kv = tbl(tbl(n.status).nodeInfo).kubeletVersion
          if not version_matches(kv, want) then wrong[#wrong + 1] = name .. " runs " .. tostring(kv) end
        else
          notready[#notready + 1] = name .. " (" .. (rc and ((str(rc.reason) or rc.status) ..
            (str(rc.message) and (": " .. cut(rc.message, 160)) or "")) or "no Ready condition") .. ")"
        end
      end
      local enough = ready >= count and (not all or #notready == 0)
      if enough and #wrong > 0 then
        verdict = "fail"
      elseif enough then
        verdict = "ok"
      end
      local s = string.format("%d/%d Ready", ready, #nodes)
      if #notready > 0 then s = s .. "; not ready: " .. table.concat(notready, ", ") end
      if #wrong > 0 then s = s .. "; wrong version: " .. table.concat(wrong, ", ") end
      return s
    end,
    ok = function() return verdict == "ok" end, fail = function() return verdict == "fail" end,
    timeout = opts.timeout or 600, interval = opts.interval or 5, what = what, quiet = opts.quiet}
  if v ~= nil then return last end
  if code == "FAILED_STATE" and api_fail then return nil, api_fail.err, api_fail.code end
  local elapsed = task.now() - t0
  if code == "FAILED_STATE" then
    return nil, string.format("k8s: %s: %s (expected %s)", what, table.concat(wrong, ", "), tostring(want)),
      "FAILED_STATE"
  end
  if code == "TIMEOUT" and last then
    local ready = #last - #notready
    local s = string.format("k8s: %s: %d of %d Ready after %.1f s (want %s%d)", what, ready, #last, elapsed,
      all and "all, at least " or "at least ", count)
    if #notready > 0 then s = s .. "; not ready: " .. table.concat(notready, "; ") end
    if #wrong > 0 then s = s .. "; wrong version: " .. table.concat(wrong, ", ") end
    return nil, s, "TIMEOUT"
  end
  return nil, err, code
end

-- Services -----------------------------------------------------------------------

--- Wait for a LoadBalancer Service's external address: status.loadBalancer
--- .ingress[1].ip, else its hostname.  A Service of another type fails at
--- once.  timeout 300, interval 5.  Returns the address and the Service.
---@param kc bomarun.K8sClient
---@param name string
---@param opts table
---@return string|nil address, table|string|nil service_or_err, string|nil code
function M.service_address(kc, name, opts)
  local ns = opts.namespace or kc.namespace
  local what = "external address of service " .. ns .. "/" .. name
  local verdict, svc, addr, api_fail
  local t0 = task.now()
  local v, err, code = poll.run{function()
      verdict = nil
      local s, gerr, gcode = kc:get("services", name, {namespace = ns})
      if not s then
        if FATAL_API[gcode] then
          verdict, api_fail = "fail", {err = gerr, code = gcode}
          return "error: " .. tostring(gcode)
        end
        return nil, gerr
      end
      svc = s
      local typ = tbl(s.spec).type
      if typ ~= "LoadBalancer" then
        verdict = "fail"
        return "type " .. tostring(typ)
      end
      for _, ing in ipairs(tbl(tbl(tbl(s.status).loadBalancer).ingress)) do
        addr = str(ing.ip) or str(ing.hostname)
        if addr then
          verdict = "ok"
          return addr
        end
      end
      return "pending"
    end,
    ok = function() return verdict == "ok" end, fail = function() return verdict == "fail" end,
    timeout = opts.timeout or 300, interval = opts.interval or 5, what = what, quiet = opts.quiet}
  if v ~= nil then return addr, svc end
  if code == "FAILED_STATE" and api_fail then return nil, api_fail.err, api_fail.code end
  if code == "FAILED_STATE" then
    return nil, string.format("k8s: service %s/%s is of type %s: it gets no external address", ns, name,
      tostring(tbl(svc.spec).type)), "FAILED_STATE"
  end
  if code == "TIMEOUT" then
    local lb = svc and json.encode(tbl(svc.status).loadBalancer or {}) or nil
    return nil, string.format("k8s: %s: none after %.1f s%s", what, task.now() - t0,
      lb and (" (status.loadBalancer " .. lb .. ")") or (err and ("; last: " .. err) or "")), "TIMEOUT"
  end
  return nil, err, code
end

return M

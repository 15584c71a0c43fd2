--- Keystone v3 for a handle: the auth request for its scope, its token
--- (re-issued before expiry; one task authenticates while the others wait,
--- and a cancelled authentication wakes them to try again).
local fault = require "bomarun.openstack.fault"
local http = require "bomarun.http"
local json = require "bomarun.json"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local M = {}

--- The Keystone v3 URL for an auth_url given with or without /v3.
---@param auth_url string
---@return string
function M.auth_url_v3(auth_url)
  auth_url = auth_url:gsub("/+$", "")
  if auth_url:match("/v3$") then return auth_url end
  return auth_url .. "/v3"
end

-- The auth request body for credentials + scope.
local function auth_body(auth, scope, token)
  local identity
  if token then
    identity = {methods = {"token"}, token = {id = token}}
  elseif auth.application_credential_secret then
    local ac = {secret = auth.application_credential_secret}
    if auth.application_credential_id then
      ac.id = auth.application_credential_id
    else
      ac.name = auth.application_credential_name
      ac.user = {name = auth.username, id = auth.user_id,
                 domain = {name = auth.user_domain_name or (auth.user_domain_id == nil and "Default" or nil),
                           id = auth.user_domain_id}}
    end
    return {auth = {identity = {methods = {"application_credential"}, application_credential = ac}}}
  elseif auth.token then
    identity = {methods = {"token"}, token = {id = auth.token}}
  else
    local user = {password = auth.password}
    if auth.user_id then
      user.id = auth.user_id
    else
      user.name = auth.username
      user.domain = auth.user_domain_id and {id = auth.user_domain_id}
        or {name = auth.user_domain_name or "Default"}
    end
    identity = {methods = {"password"}, password = {user = user}}
  end
  local body = {auth = {identity = identity}}
  if scope then
    if scope.system then
      body.auth.scope = {system = {all = true}}
    elseif scope.project_id then
      body.auth.scope = {project = {id = scope.project_id}}
    elseif scope.project then
      local d = scope.domain_id and {id = scope.domain_id} or {name = scope.domain or "Default"}
      body.auth.scope = {project = {name = scope.project, domain = d}}
    elseif scope.domain or scope.domain_id then
      body.auth.scope = {domain = scope.domain_id and {id = scope.domain_id} or {name = scope.domain}}
    end
  end
  return body
end

--- The scope a cloud's auth section asks for (project, domain or system), or nil.
---@param auth table
---@return table|nil scope
function M.scope_from_cloud(auth)
  if auth.system_scope then return {system = auth.system_scope} end
  if auth.project_id then return {project_id = auth.project_id} end
  if auth.project_name then
    return {project = auth.project_name, domain = auth.project_domain_name or auth.user_domain_name,
            domain_id = auth.project_domain_id}
  end
  if auth.domain_name or auth.domain_id then return {domain = auth.domain_name, domain_id = auth.domain_id} end
  return nil
end

--- A scope as text, for messages and as the key of a connection's handles.
---@param scope table|nil
---@return string
function M.scope_text(scope)
  if not scope then return "unscoped" end
  if scope.system then return "system" end
  if scope.project_id then return "project " .. scope.project_id end
  if scope.project then return "project " .. (scope.domain or scope.domain_id or "Default") .. "/" .. scope.project end
  return "domain " .. tostring(scope.domain or scope.domain_id)
end

local function parse_time(s)
  -- "2026-11-21T15:04:05.000000Z" -> epoch seconds (UTC)
  local y, mo, d, h, mi, se = tostring(s):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local t = os.time({year = tonumber(y), month = tonumber(mo), day = tonumber(d),
                     hour = tonumber(h), min = tonumber(mi), sec = tonumber(se), isdst = false})
  -- os.time took it as local time: correct by the local offset.
  local utc = os.time(os.date("!*t", t))
  return t + (t - utc)
end

-- Authenticate handle h (its scope) with the connection's credentials.
--- Issue a token for the handle's scope and store it (with the catalog,
--- project, roles) on the handle.
---@param h bomarun.OpenStackHandle
---@return boolean|nil ok, string|nil err, string|nil code
function M.authenticate(h)
  local conn = h.conn
  local body = auth_body(conn.auth, h.scope)
  if h.scope and conn.auth.application_credential_secret then
    -- Application credentials are bound to one project: rescope from a
    -- token issued by them is refused by Keystone; say so plainly.
    if h ~= conn.default then
      return nil, "openstack: an application credential is bound to its own project; it cannot be rescoped to " ..
        M.scope_text(h.scope), "SCOPE"
    end
  end
  local url = conn.auth_url .. "/auth/tokens"
  local r, err, code = http.request{method = "POST", url = url, body = body, timeout = conn.timeout,
                                    cainfo = conn.cacert, insecure = conn.insecure,
                                    headers = {Accept = "application/json"}}
  if not r then return nil, "openstack: authentication at " .. url .. ": " .. err, code end
  local doc = json.decode(r.body or "")
  if r.status ~= 201 then
    return nil, string.format("openstack: authentication (%s, %s) at %s failed: %d: %s",
      conn.auth.username or conn.auth.user_id or conn.auth.application_credential_id or "token",
      M.scope_text(h.scope), url, r.status, fault.fault_message(doc or r.body)), r.status == 401 and "AUTH" or "HTTP_" .. r.status
  end
  local token = r.headers["x-subject-token"]
  secret.register(token)
  local t = doc and doc.token or {}
  h.token = token
  h.expires_at = parse_time(t.expires_at) or (os.time() + 3600)
  h.catalog = t.catalog or {}
  h.project = t.project
  h.domain = t.domain
  h.system = t.system
  h.user = t.user
  h.roles = {}
  for _, role in ipairs(t.roles or {}) do h.roles[#h.roles + 1] = role.name end
  return true
end

-- Re-issue the token if it expires within 60 s.
-- One task authenticates; the others wait for its outcome.  If that task
-- is cancelled (or raises) half-way, the flag is cleared and its waiters
-- are woken to try again themselves: nobody waits on an event nobody sets.
---@param h bomarun.OpenStackHandle
---@return boolean|nil ok, string|nil err, string|nil code
function M.ensure_token(h)
  while true do
    if h.token and h.expires_at - os.time() > 60 then return true end
    local pending = h.reauth_in_flight
    if not pending then break end
    local _, ok, err, code = pending:wait()
    if code ~= "RETRY" then
      if not ok then return nil, err, code end
      return true
    end
  end
  local ev = task.event()
  h.reauth_in_flight = ev
  local pok, ok, err, code = pcall(M.authenticate, h)
  h.reauth_in_flight = nil
  if not pok then
    ev:set(nil, "the authenticating task ended half-way", "RETRY")
    error(ok, 0)
  end
  ev:set(ok, err, code)
  return ok, err, code
end

return M

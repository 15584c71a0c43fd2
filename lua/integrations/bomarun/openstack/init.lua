--- OpenStack in process: Keystone v3 auth, scopes as objects, the service
--- catalog, REST requests with the service's own error messages, retries of
--- idempotent reads, pagination, and per-service concurrency caps.
---
---   local openstack = require "bomarun.openstack"
---   local conn = assert(openstack.connect{cloud = "mycloud"})  -- or {auth = {...}} or OS_* env
---   local p = assert(conn:scoped{project = "capi-mgmt", domain = "capi"})
---   local body, status, headers = p:request("GET", "image", "/v2/images")
---   local img = assert(p.image:find("ubuntu-jammy"))
---
--- A handle (conn itself, or conn:scoped{...}) holds its own token and can
--- only act in its own scope.  Tokens are re-issued before they expire and
--- once on a 401.
local http = require "bomarun.http"
local json = require "bomarun.json"
local log = require "bomarun.log"
local poll = require "bomarun.poll"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local M = {}

-- Configuration ---------------------------------------------------------

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function yaml_load(path)
  local text = read_file(path)
  if not text then return nil end
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then error("openstack: reading " .. path .. " needs lyaml (Debian package lua-yaml)", 0) end
  local ok2, doc = pcall(lyaml.load, text)
  if not ok2 then error("openstack: " .. path .. " is not valid YAML: " .. tostring(doc), 0) end
  return doc
end

local function config_paths(name)
  local home = os.getenv("HOME") or ""
  local list = {}
  local env = os.getenv(name == "clouds" and "OS_CLIENT_CONFIG_FILE" or "OS_CLIENT_SECURE_FILE")
  if env then list[#list + 1] = env end
  list[#list + 1] = name .. ".yaml"
  list[#list + 1] = home .. "/.config/openstack/" .. name .. ".yaml"
  list[#list + 1] = "/etc/openstack/" .. name .. ".yaml"
  return list
end

local function merge(dst, src)
  for k, v in pairs(src or {}) do
    if type(v) == "table" and type(dst[k]) == "table" then merge(dst[k], v) else dst[k] = v end
  end
  return dst
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end

--- The cloud entry `name` from clouds.yaml (+ secure.yaml), searched in
--- $OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, /etc/openstack/.
---@param name string
---@param clouds_file? string  read this clouds.yaml instead of searching
---@return table|nil cloud, string|nil err
function M.load_cloud(name, clouds_file)
  local tried = {}
  for _, path in ipairs(clouds_file and {clouds_file} or config_paths("clouds")) do
    tried[#tried + 1] = path
    local doc = yaml_load(path)
    if doc and type(doc.clouds) == "table" and doc.clouds[name] then
      local cloud = deep_copy(doc.clouds[name])
      for _, spath in ipairs(config_paths("secure")) do
        local sdoc = yaml_load(spath)
        if sdoc and type(sdoc.clouds) == "table" and sdoc.clouds[name] then
          merge(cloud, sdoc.clouds[name])
          break
        end
      end
      cloud.source = path
      return cloud
    end
  end
  return nil, "openstack: cloud '" .. name .. "' not found in " .. table.concat(tried, ", ")
end

--- A cloud entry from OS_* environment variables (an openrc).
---@return table|nil cloud, string|nil err
function M.cloud_from_env()
  local e = os.getenv
  if not e("OS_AUTH_URL") then return nil, "openstack: OS_AUTH_URL is not set" end
  local auth = {
    auth_url = e("OS_AUTH_URL"), username = e("OS_USERNAME"), password = e("OS_PASSWORD"),
    user_id = e("OS_USER_ID"),
    user_domain_name = e("OS_USER_DOMAIN_NAME"), user_domain_id = e("OS_USER_DOMAIN_ID"),
    project_name = e("OS_PROJECT_NAME") or e("OS_TENANT_NAME"), project_id = e("OS_PROJECT_ID") or e("OS_TENANT_ID"),
    project_domain_name = e("OS_PROJECT_DOMAIN_NAME"), project_domain_id = e("OS_PROJECT_DOMAIN_ID"),
    domain_name = e("OS_DOMAIN_NAME"), system_scope = e("OS_SYSTEM_SCOPE"),
    application_credential_id = e("OS_APPLICATION_CREDENTIAL_ID"),
    application_credential_name = e("OS_APPLICATION_CREDENTIAL_NAME"),
    application_credential_secret = e("OS_APPLICATION_CREDENTIAL_SECRET"),
    token = e("OS_TOKEN"),
  }
  return {auth = auth, region_name = e("OS_REGION_NAME"), interface = e("OS_INTERFACE"),
          auth_type = e("OS_AUTH_TYPE"), cacert = e("OS_CACERT"), source = "OS_* environment"}
end

-- Errors ------------------------------------------------------------------

--- The service's own message from an error body, whatever its shape
--- (Nova, Neutron, Octavia, Magnum, Keystone, Glance).
---@param body any  the decoded body (a table), or its text
---@return string
function M.fault_message(body)
  if type(body) == "table" then
    if type(body.errors) == "table" and type(body.errors[1]) == "table" then
      local e = body.errors[1]
      return tostring(e.detail or e.title or e.code)
    end
    if type(body.error) == "table" then return tostring(body.error.message or body.error.title) end
    if body.NeutronError then return tostring(body.NeutronError.message or body.NeutronError) end
    if body.faultstring then return tostring(body.faultstring) end
    if body.message then return tostring(body.message) end
    if body.title or body.description then return tostring(body.description or body.title) end
    for _, v in pairs(body) do   -- Nova: {"itemNotFound": {"message": ...}}
      if type(v) == "table" and v.message then return tostring(v.message) end
    end
    return json.encode(body)
  end
  if type(body) == "string" then
    local s = body:gsub("<[^>]*>", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    return #s > 300 and s:sub(1, 297) .. "..." or s
  end
  return ""
end

-- Handles -----------------------------------------------------------------

---@class bomarun.OpenStackHandle  a token in one scope on a connection; services are fields
---@field conn bomarun.OpenStackConnection
---@field scope table|nil        {project=, project_id=, domain=, domain_id=, system=}; nil: unscoped
---@field token string|nil
---@field expires_at number|nil
---@field catalog table[]|nil
---@field project table|nil      the token's project {id=, name=, domain=}
---@field domain table|nil
---@field system table|nil
---@field user table|nil
---@field roles string[]|nil
---@field identity table         the services (collections and methods), made on first use
---@field image table
---@field compute table
---@field network table
---@field loadbalancer table
---@field container_infra table
local Handle = {}
Handle.__index = function(h, k)
  local m = Handle[k]
  if m ~= nil then return m end
  local svc = M.services[k]
  if svc then
    local bound = svc(h)
    rawset(h, k, bound)
    return bound
  end
end

---@class bomarun.OpenStackConnection
---@field auth table             the credentials (secrets resolved)
---@field auth_url string        Keystone v3
---@field region string|nil
---@field interface string|nil
---@field cacert string|nil
---@field insecure boolean|nil
---@field timeout number
---@field retries integer
---@field backoff number
---@field microversions table<string, string>
---@field endpoints table<string, string>
---@field handles table<string, bomarun.OpenStackHandle>  by scope
---@field caps table<string, bomarun.Semaphore>           by service type
---@field cap_limits table<string, integer>
---@field cap_default integer
---@field source string|nil
---@field default bomarun.OpenStackHandle

local Conn = {}
Conn.__index = Conn

-- base + path; a version segment in both (an identity endpoint ending in
-- /v3 and a path starting /v3/...) is not doubled.
local function join_url(base, path)
  if path:match("^https?://") then return path end
  base = base:gsub("/+$", "")
  if path == "" then return base end
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  local last = base:match("/(v%d[%w.]*)$")
  if last and (path == "/" .. last or path:sub(1, #last + 2) == "/" .. last .. "/") then
    path = path:sub(#last + 2)
  end
  return base .. path
end

local function auth_url_v3(auth_url)
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

local function scope_from_cloud(auth)
  if auth.system_scope then return {system = auth.system_scope} end
  if auth.project_id then return {project_id = auth.project_id} end
  if auth.project_name then
    return {project = auth.project_name, domain = auth.project_domain_name or auth.user_domain_name,
            domain_id = auth.project_domain_id}
  end
  if auth.domain_name or auth.domain_id then return {domain = auth.domain_name, domain_id = auth.domain_id} end
  return nil
end

local function scope_text(scope)
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
local function authenticate(h)
  local conn = h.conn
  local body = auth_body(conn.auth, h.scope)
  if h.scope and conn.auth.application_credential_secret then
    -- Application credentials are bound to one project: rescope from a
    -- token issued by them is refused by Keystone; say so plainly.
    if h ~= conn.default then
      return nil, "openstack: an application credential is bound to its own project; it cannot be rescoped to " ..
        scope_text(h.scope), "SCOPE"
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
      scope_text(h.scope), url, r.status, M.fault_message(doc or r.body)), r.status == 401 and "AUTH" or "HTTP_" .. r.status
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
local function ensure_token(h)
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
  local pok, ok, err, code = pcall(authenticate, h)
  h.reauth_in_flight = nil
  if not pok then
    ev:set(nil, "the authenticating task ended half-way", "RETRY")
    error(ok, 0)
  end
  ev:set(ok, err, code)
  return ok, err, code
end

--- The endpoint URL of a service type in this handle's catalog.
---@param service_type string  "image", "compute", "network", "load-balancer", "identity", "container-infra", ...
---@return string|nil url, string|nil err
function Handle:endpoint(service_type)
  local conn = self.conn
  local override = conn.endpoints[service_type]
  if override then return override end
  local want_if = conn.interface or "public"
  local aliases = {["load-balancer"] = {"load-balancer", "loadbalancer"}, compute = {"compute"},
                   ["container-infra"] = {"container-infra"}, image = {"image"}, network = {"network"},
                   identity = {"identity"}, placement = {"placement"}, orchestration = {"orchestration"}}
  for _, t in ipairs(aliases[service_type] or {service_type}) do
    for _, svc in ipairs(self.catalog or {}) do
      if svc.type == t then
        for _, ep in ipairs(svc.endpoints or {}) do
          if ep.interface == want_if and (not conn.region or ep.region == conn.region or ep.region_id == conn.region) then
            local url = ep.url
            if self.project then
              url = url:gsub("%%%(tenant_id%)s", self.project.id):gsub("%%%(project_id%)s", self.project.id)
            end
            return url
          end
        end
      end
    end
  end
  return nil, string.format("openstack: no %s endpoint for service type '%s'%s in the catalog of the %s token",
    want_if, service_type, conn.region and (" in region " .. conn.region) or "", scope_text(self.scope))
end

local MICROVERSION_HEADERS = {
  compute = function(v) return {["OpenStack-API-Version"] = "compute " .. v, ["X-OpenStack-Nova-API-Version"] = v} end,
  ["container-infra"] = function(v) return {["OpenStack-API-Version"] = "container-infra " .. v} end,
  placement = function(v) return {["OpenStack-API-Version"] = "placement " .. v} end,
  ["load-balancer"] = function(v) return {["OpenStack-API-Version"] = "load-balancer " .. v} end,
}

local IDEMPOTENT = {GET = true, HEAD = true}

--- Send a request to a service.  Returns the decoded body (a table for
--- JSON, else the text), the HTTP status and the headers; an HTTP error
--- status is data.  Returns nil, message, CODE when the request could not
--- be made at all (no endpoint, refused, timed out after the retries...).
---@param method string
---@param service_type string
---@param path string              relative to the endpoint (or a full URL)
---@param opts? {body?: any, headers?: table, query?: table, microversion?: string, timeout?: number, retries?: integer, body_file?: string, output_file?: string, content_type?: string, raw?: boolean}
---@return any body, integer|string status, table|string headers
function Handle:request(method, service_type, path, opts)
  opts = opts or {}
  method = method:upper()
  local conn = self.conn
  local base, eerr = self:endpoint(service_type)
  if not base then return nil, eerr, "NO_ENDPOINT" end
  local url = join_url(base, path)
  if opts.query then
    local parts = {}
    local keys = {}
    for k in pairs(opts.query) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = opts.query[k]
      parts[#parts + 1] = k .. "=" .. tostring(v):gsub("[^%w%-._~:]", function(c) return string.format("%%%02X", c:byte()) end)
    end
    if #parts > 0 then url = url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&") end
  end
  local retries = opts.retries or (IDEMPOTENT[method] and conn.retries or 0)
  local cap = conn:cap(service_type)
  local attempt, reauthed = 0, false
  while true do
    attempt = attempt + 1
    local ok, aerr, acode = ensure_token(self)
    if not ok then return nil, aerr, acode end
    local headers = {Accept = "application/json", ["X-Auth-Token"] = self.token}
    local mv = opts.microversion or conn.microversions[service_type]
    if mv and MICROVERSION_HEADERS[service_type] then
      for k, v in pairs(MICROVERSION_HEADERS[service_type](mv)) do headers[k] = v end
    end
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    local body = opts.body
    if type(body) == "table" then
      body = json.encode(body)
      headers["Content-Type"] = opts.content_type or "application/json"
    elseif opts.content_type then
      headers["Content-Type"] = opts.content_type
    end
    if opts.body_file then headers["Content-Type"] = headers["Content-Type"] or "application/octet-stream" end
    -- The unit goes back however the request ends (a cancelled poll
    -- attempt or step timeout included).
    local r, err, code = cap:with(http.request, {method = method, url = url, headers = headers, body = body,
                                      body_file = opts.body_file, output_file = opts.output_file,
                                      timeout = opts.timeout or conn.timeout, cainfo = conn.cacert,
                                      insecure = conn.insecure})
    local transient
    if not r then
      transient = true
    elseif r.status == 401 and not reauthed then
      -- The token was revoked or expired early: once, with a new one.
      reauthed = true
      self.token = nil
      attempt = attempt - 1
    elseif r.status >= 500 then
      transient = true
    else
      local ct = r.headers["content-type"] or ""
      local decoded = r.body
      if not opts.raw and r.body and r.body ~= "" and ct:find("json", 1, true) then
        decoded = json.decode(r.body) or r.body
      end
      r.request_id = r.headers["x-openstack-request-id"] or r.headers["x-compute-request-id"]
      return decoded, r.status, r.headers
    end
    if transient then
      if attempt > retries then
        if not r then
          return nil, string.format("openstack: %s %s: %s", method, url, err:gsub("^http: %S+ %S+: ", "")), code
        end
        local ct = r.headers["content-type"] or ""
        local decoded = (r.body and ct:find("json", 1, true)) and json.decode(r.body) or r.body
        return decoded, r.status, r.headers
      end
      local delay = conn.backoff * 2 ^ (attempt - 1)
      log.to_step(string.format("openstack: %s %s: %s; retry %d/%d in %.1fs", method, url,
        r and ("HTTP " .. r.status) or err, attempt, retries, delay))
      task.sleep(delay)
    end
  end
end

--- Like request, but a non-2xx status becomes nil, "openstack: METHOD URL:
--- STATUS: the service's message (request id ...)", "HTTP_<status>", body.
--- A 2xx with no body gives true.  nil, message, CODE when it could not be
--- made (as request).
---@param method string
---@param service_type string
---@param path string  relative to the endpoint (or a full URL)
---@param opts? table  as for request
---@return any body, integer|string status_or_err, table<string, string>|string|nil headers_or_code, any err_body
function Handle:call(method, service_type, path, opts)
  local body, status, headers = self:request(method, service_type, path, opts)
  if body == nil and type(status) == "string" then return nil, status, headers end
  if status >= 200 and status < 300 then return body == nil and true or body, status, headers end
  local base = self:endpoint(service_type) or ""
  local rid = headers["x-openstack-request-id"] or headers["x-compute-request-id"]
  return nil, string.format("openstack: %s %s: %d: %s%s", method:upper(), join_url(base, path), status,
    M.fault_message(body), rid and (" (request id " .. rid .. ")") or ""), "HTTP_" .. status, body
end

local function next_link(body, key)
  if type(body) ~= "table" then return nil end
  if type(body.next) == "string" then return body.next end
  local links = body[key .. "_links"] or (type(body.links) == "table" and body.links)
  if type(links) == "table" then
    if type(links.next) == "string" then return links.next end
    for _, l in ipairs(links) do
      if type(l) == "table" and l.rel == "next" then return l.href end
    end
  end
  return nil
end

--- GET a collection, following `next` links and markers.
---@param service_type string
---@param path string
---@param key string           the list's key in the body ("images", "servers", ...)
---@param opts? {query?: table, limit?: integer, page_size?: integer}
---@return table[]|nil items, string|nil err, string|nil code
function Handle:list(service_type, path, key, opts)
  opts = opts or {}
  local query = {}
  for k, v in pairs(opts.query or {}) do query[k] = v end
  if opts.page_size then query.limit = opts.page_size end
  local items = {}
  local next_path = path
  local q = query
  local pages = 0
  while next_path do
    pages = pages + 1
    local body, err, code = self:call("GET", service_type, next_path, {query = q})
    if not body then return nil, err, code end
    local page = body[key]
    if type(page) ~= "table" then
      return nil, "openstack: GET " .. path .. ": no '" .. key .. "' list in the response", "BAD_RESPONSE"
    end
    for _, it in ipairs(page) do
      items[#items + 1] = it
      if opts.limit and #items >= opts.limit then return items end
    end
    local nxt = next_link(body, key)
    if not nxt or #page == 0 or pages > 10000 then break end
    -- Relative next links (Glance) are relative to the endpoint's root.
    if not nxt:match("^https?://") then
      local base = self:endpoint(service_type)
      local root = base:match("^(https?://[^/]+)")
      local prefix = base:sub(#root + 1):gsub("/+$", "")
      if prefix ~= "" and nxt:sub(1, #prefix) == prefix then nxt = nxt:sub(#prefix + 1) end
      if nxt:sub(1, 1) ~= "/" then nxt = "/" .. nxt end
    end
    next_path = nxt
    q = nil
  end
  items.pages = pages
  return items
end

--- Poll a resource until its `field` reaches an ok state; fail at once on
--- a fail state.  `get` is called afresh each attempt.
---@param get fun(): table|nil, string|nil  the resource, or nil, err
---@param spec {field?: string, ok?: any[]|fun(v: any): boolean, fail?: any[]|fun(v: any): boolean, timeout?: number, interval?: number, what?: string, on_attempt?: function, quiet?: boolean}
---@return any value, string|nil err, string|nil code  as poll.run: the field's value
function Handle:wait_for(get, spec)
  local field = spec.field or "status"
  return poll.run{function()
      local obj, err = get()
      if not obj then return nil, err end
      return obj[field]
    end, ok = spec.ok, fail = spec.fail, timeout = spec.timeout or 600, interval = spec.interval or 2,
    what = spec.what or field, on_attempt = spec.on_attempt, quiet = spec.quiet}
end

--- A handle on the same connection with its own token in another scope.
---@param scope {project?: string, project_id?: string, domain?: string, domain_id?: string, system?: string}
---@return table|nil handle, string|nil err, string|nil code
function Handle:scoped(scope)
  local conn = self.conn
  if type(scope) ~= "table" then error("openstack: scoped{...} expects a table", 2) end
  local key = scope_text(scope)
  if conn.handles[key] then return conn.handles[key] end
  local h = setmetatable({conn = conn, scope = scope}, Handle)
  local ok, err, code = authenticate(h)
  if not ok then return nil, err, code end
  conn.handles[key] = h
  return h
end

--- Describe the scope: "project capi/capi-mgmt", "system", ...
---@return string
function Handle:scope_description()
  if self.system then return "system" end
  if self.project then
    return "project " .. (self.project.domain and self.project.domain.name or "?") .. "/" .. self.project.name
  end
  if self.domain then return "domain " .. self.domain.name end
  return scope_text(self.scope)
end

--- Whether this handle's token carries a role.
---@param name string
---@return boolean
function Handle:has_role(name)
  for _, r in ipairs(self.roles or {}) do if r == name then return true end end
  return false
end

--- The semaphore bounding requests in flight to a service type.
---@param service_type string
---@return bomarun.Semaphore
function Conn:cap(service_type)
  local sem = self.caps[service_type]
  if not sem then
    sem = task.semaphore(self.cap_limits[service_type] or self.cap_default)
    self.caps[service_type] = sem
  end
  return sem
end

---@class bomarun.OpenStackOptions
---@field cloud? string            a clouds.yaml entry
---@field clouds_file? string      read this clouds.yaml instead of searching
---@field auth? table              {auth_url, username, password, user_domain_name, project_name, project_domain_name, ...}
---@field region_name? string
---@field interface? string        "public" (default), "internal", "admin"
---@field cacert? string           CA bundle
---@field insecure? boolean        skip TLS verification (warned)
---@field timeout? number          per request, seconds (default 60)
---@field retries? integer         retries of GET on 5xx/connection errors (default 3)
---@field backoff? number          first retry delay, doubling (default 0.5 s)
---@field concurrency? table<string, integer>  requests in flight per service type (default 8 each)
---@field microversions? table<string, string> e.g. {compute = "2.79"}
---@field endpoints? table<string, string>      override catalog URLs per service type

--- Authenticate once and return the connection's default-scope handle.
---@param opts? bomarun.OpenStackOptions
---@return table|nil handle, string|nil err, string|nil code
function M.connect(opts)
  opts = opts or {}
  local cloud, err
  if opts.cloud then
    cloud, err = M.load_cloud(opts.cloud, opts.clouds_file)
  elseif opts.auth then
    cloud = {auth = opts.auth}
  else
    cloud, err = M.cloud_from_env()
  end
  if not cloud then return nil, err, "CONFIG" end
  local auth = deep_copy(cloud.auth or {})
  for _, k in ipairs({"password", "application_credential_secret", "token"}) do
    if secret.is_ref(auth[k]) then
      local v, serr = secret.resolve(auth[k])
      if not v then return nil, "openstack: " .. serr, "CONFIG" end
      auth[k] = v
    end
    if type(auth[k]) == "string" then secret.register(auth[k]) end
  end
  if not auth.auth_url then return nil, "openstack: no auth_url for " .. (opts.cloud or "the connection"), "CONFIG" end
  local conn = setmetatable({
    auth = auth, auth_url = auth_url_v3(auth.auth_url),
    region = opts.region_name or cloud.region_name, interface = opts.interface or cloud.interface,
    cacert = opts.cacert or cloud.cacert, insecure = opts.insecure or cloud.verify == false,
    timeout = opts.timeout or 60, retries = opts.retries or 3, backoff = opts.backoff or 0.5,
    microversions = merge({compute = "2.79", ["container-infra"] = "latest"}, opts.microversions),
    endpoints = opts.endpoints or {}, handles = {}, caps = {},
    cap_limits = opts.concurrency or {}, cap_default = 8, source = cloud.source,
  }, Conn)
  local h = setmetatable({conn = conn, scope = scope_from_cloud(auth)}, Handle)
  conn.default = h
  local ok, aerr, acode = authenticate(h)
  if not ok then return nil, aerr, acode end
  conn.handles[scope_text(h.scope)] = h
  return h
end

-- Services and resources ------------------------------------------------------

M.services = {}

local function looks_like_id(s)
  return type(s) == "string" and (s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$")
    or s:match("^%x+$") and #s == 32)
end

---@class bomarun.OpenStackCollectionDef
---@field service string         the service type
---@field path string
---@field key string             the list's key in a body
---@field what string            for messages
---@field single? string         the key wrapping one resource in a body
---@field list_path? string
---@field create_path? string
---@field update_method? string  default "PUT"
---@field name_filter? boolean   false: find does not filter by name on the server
---@field bare_create? boolean   create/update send attrs unwrapped
---@field show_after_find? boolean
---@field ok? string[]
---@field fail? string[]

-- A collection: list/show/find/create/delete/update/wait/wait_deleted.
---@class bomarun.OpenStackCollection
---@field h bomarun.OpenStackHandle
---@field d bomarun.OpenStackCollectionDef
local Collection = {}
Collection.__index = Collection

local function collection(h, d)
  return setmetatable({h = h, d = d}, Collection)
end

--- The collection's path, or one resource's.
---@param id? string
---@return string
function Collection:path(id)
  if id then return self.d.path .. "/" .. id end
  return self.d.path
end

local function unwrap(d, body)
  if d.single and type(body) == "table" and body[d.single] ~= nil then return body[d.single] end
  return body
end

--- List resources (query filters; opts.limit, opts.page_size).
---@param query? table
---@param opts? {limit?: integer, page_size?: integer}
---@return table[]|nil items, string|nil err, string|nil code
function Collection:list(query, opts)
  opts = opts or {}
  return self.h:list(self.d.service, self.d.list_path or self.d.path, self.d.key,
                     {query = query, limit = opts.limit, page_size = opts.page_size})
end

--- Show one resource by id.
---@param id string
---@return table|nil resource, string|nil err, string|nil code, any err_body
function Collection:show(id)
  local body, err, code, ebody = self.h:call("GET", self.d.service, self:path(id))
  if not body then return nil, err, code, ebody end
  return unwrap(self.d, body)
end

--- Find by id or by exact name; nil, msg, "NOT_FOUND" | "NOT_UNIQUE".
---@param name_or_id string
---@param query? table  more filters for the list
---@return table|nil resource, string|nil err, string|nil code, any err_body
function Collection:find(name_or_id, query)
  if looks_like_id(name_or_id) then
    local obj, err, code = self:show(name_or_id)
    if obj then return obj end
    if code ~= "HTTP_404" then return nil, err, code end
  end
  local q = {}
  for k, v in pairs(query or {}) do q[k] = v end
  if self.d.name_filter ~= false then q.name = name_or_id end
  local items, err, code = self:list(q)
  if not items then return nil, err, code end
  local found = {}
  for _, it in ipairs(items) do
    if it.name == name_or_id or it.id == name_or_id or it.uuid == name_or_id then found[#found + 1] = it end
  end
  if #found == 0 then
    return nil, string.format("openstack: no %s named '%s' (%s)", self.d.what, name_or_id,
      self.h:scope_description()), "NOT_FOUND"
  end
  if #found > 1 then
    return nil, string.format("openstack: %d %ss are named '%s': use an id", #found, self.d.what, name_or_id),
      "NOT_UNIQUE"
  end
  if self.d.show_after_find then return self:show(found[1].id or found[1].uuid) end
  return found[1]
end

--- Create a resource from a table of attributes.
---@param attrs table
---@param opts? {microversion?: string}
---@return table|nil resource, string|nil err, string|nil code, any err_body
function Collection:create(attrs, opts)
  local body = self.d.single and not self.d.bare_create and {[self.d.single] = attrs} or attrs
  local res, err, code, ebody = self.h:call("POST", self.d.service, self.d.create_path or self.d.path,
                                            {body = body, microversion = opts and opts.microversion})
  if not res then return nil, err, code, ebody end
  return unwrap(self.d, res)
end

--- Update attributes (PUT, or PATCH where the service uses it).
---@param id string
---@param attrs table
---@return table|nil resource, string|nil err, string|nil code
function Collection:update(id, attrs)
  local body = self.d.single and not self.d.bare_create and {[self.d.single] = attrs} or attrs
  local res, err, code = self.h:call(self.d.update_method or "PUT", self.d.service, self:path(id), {body = body})
  if not res then return nil, err, code end
  return unwrap(self.d, res)
end

--- Delete by id (never retried).
---@param id string
---@return any body, integer|string status_or_err, table<string, string>|string|nil headers_or_code, any err_body  as Handle:call
function Collection:delete(id)
  return self.h:call("DELETE", self.d.service, self:path(id))
end

--- Wait until the resource's status is in ok; fail at once on fail.
---@param id string
---@param spec? {field?: string, ok?: any[]|fun(v: any): boolean, fail?: any[]|fun(v: any): boolean, timeout?: number, interval?: number, what?: string, on_attempt?: function, quiet?: boolean}
---@return any value, string|nil err, string|nil code  as poll.run: the status reached
function Collection:wait(id, spec)
  spec = spec or {}
  local what = spec.what or (self.d.what .. " " .. id .. " " .. (spec.field or "status"))
  local copy = {}
  for k, v in pairs(spec) do copy[k] = v end
  copy.what = what
  copy.ok = spec.ok or self.d.ok or {"ACTIVE"}
  copy.fail = spec.fail or self.d.fail or {"ERROR"}
  return self.h:wait_for(function() return self:show(id) end, copy)
end

--- Wait until GET answers 404.
---@param id string
---@param spec? {fail?: any[]|fun(v: any): boolean, timeout?: number, interval?: number, what?: string, on_attempt?: function, quiet?: boolean}
---@return "DELETED"|nil value, string|nil err, string|nil code  as poll.run
function Collection:wait_deleted(id, spec)
  spec = spec or {}
  return poll.run{function()
      local obj, err, code = self:show(id)
      if code == "HTTP_404" then return "DELETED" end
      if not obj then return nil, err end
      return obj.status or obj.provisioning_status or "PRESENT"
    end, ok = {"DELETED"}, fail = spec.fail or {"ERROR", "DELETE_FAILED"}, timeout = spec.timeout or 600,
    interval = spec.interval or 2, what = spec.what or (self.d.what .. " " .. id .. " deletion"),
    on_attempt = spec.on_attempt, quiet = spec.quiet}
end

local function service(defs, extra)
  return function(h)
    local s = {h = h}
    for name, d in pairs(defs) do s[name] = collection(h, d) end
    for k, fn in pairs(extra or {}) do s[k] = function(_, ...) return fn(h, s, ...) end end
    return s
  end
end

--- A collection of this handle's (list/show/find/create/delete/update/wait)
--- from a definition {service=, path=, key=, single=, what=, ...}, for
--- resources the service modules do not name.
---@param def table
---@return table collection
function Handle:collection(def)
  return collection(self, def)
end

-- The services, each in a file of its own: {collections = {...}, methods = {...}}.
local SERVICE_DEFS = {
  identity = require "bomarun.openstack.identity",
  image = require "bomarun.openstack.image",
  compute = require "bomarun.openstack.compute",
  network = require "bomarun.openstack.network",
  loadbalancer = require "bomarun.openstack.loadbalancer",
  container_infra = require "bomarun.openstack.container_infra",
}
for name, def in pairs(SERVICE_DEFS) do
  M.services[name] = service(def.collections, def.methods)
end

return M

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

local kauth = require "bomarun.openstack.auth"
local coll = require "bomarun.openstack.collection"
local config = require "bomarun.openstack.config"
local fault = require "bomarun.openstack.fault"

local M = {}

M.load_cloud = config.load_cloud
M.cloud_from_env = config.cloud_from_env
M.fault_message = fault.fault_message
M.services = {}

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
    want_if, service_type, conn.region and (" in region " .. conn.region) or "", kauth.scope_text(self.scope))
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
    local ok, aerr, acode = kauth.ensure_token(self)
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
  local key = kauth.scope_text(scope)
  if conn.handles[key] then return conn.handles[key] end
  local h = setmetatable({conn = conn, scope = scope}, Handle)
  local ok, err, code = kauth.authenticate(h)
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
  return kauth.scope_text(self.scope)
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
  local auth = config.deep_copy(cloud.auth or {})
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
    auth = auth, auth_url = kauth.auth_url_v3(auth.auth_url),
    region = opts.region_name or cloud.region_name, interface = opts.interface or cloud.interface,
    cacert = opts.cacert or cloud.cacert, insecure = opts.insecure or cloud.verify == false,
    timeout = opts.timeout or 60, retries = opts.retries or 3, backoff = opts.backoff or 0.5,
    microversions = config.merge({compute = "2.79", ["container-infra"] = "latest"}, opts.microversions),
    endpoints = opts.endpoints or {}, handles = {}, caps = {},
    cap_limits = opts.concurrency or {}, cap_default = 8, source = cloud.source,
  }, Conn)
  local h = setmetatable({conn = conn, scope = kauth.scope_from_cloud(auth)}, Handle)
  conn.default = h
  local ok, aerr, acode = kauth.authenticate(h)
  if not ok then return nil, aerr, acode end
  conn.handles[kauth.scope_text(h.scope)] = h
  return h
end

--- A collection of this handle's (list/show/find/create/delete/update/wait)
--- from a definition {service=, path=, key=, single=, what=, ...}, for
--- resources the service modules do not name.
---@param def table
---@return table collection
function Handle:collection(def)
  return coll.collection(self, def)
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
  M.services[name] = coll.service(def.collections, def.methods)
end

return M

--- Kubernetes in process: kubeconfig files (and the one Magnum returns),
--- client certificates, bearer tokens, get/list/create/patch/delete, and
--- the waits a runbook needs (nodes Ready, pods Running with the failures
--- `kubectl wait` misses, a Service's external address, Cluster API
--- conditions), each a poll that re-reads the API on every attempt.
---
---   local k8s = require "bomarun.k8s"
---   local kc = assert(k8s.connect{kubeconfig = "path"})  -- or {server=, ca=, cert=, key=, token=}
---   local nodes = assert(kc:list("nodes"))
---   local pods = assert(kc:list("pods", {namespace = "kube-system", label_selector = "k8s-app=calico-node"}))
---   local svc = kc:get("services", "rr", {namespace = "default"})
---   kc:create(manifest) ; kc:delete("services", "rr", {namespace = "default"})
---   kc:wait_pods{namespace = "kube-system", timeout = 300}
---
--- Errors: nil, "k8s: METHOD PATH: message (Reason, HTTP code)", Reason
--- (the API's Status: "NotFound", "Forbidden", "Unauthorized", ...); a
--- transport failure keeps bomarun.http's code (REFUSED, TLS, TIMEOUT, ...).
local crypto = require "bomarun._crypto"
local host = require "bomarun._host"
local http = require "bomarun.http"
local json = require "bomarun.json"
local log = require "bomarun.log"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local capi = require "bomarun.k8s.capi"
local kubeconfig = require "bomarun.k8s.kubeconfig"
local resources = require "bomarun.k8s.resources"
local wait = require "bomarun.k8s.wait"

local M = {}

M.kubeconfig = kubeconfig
M.resources = resources
M.pod_problem = wait.pod_problem
M.conditions = capi.conditions
M.capi_failure = capi.failure

---@class bomarun.K8sClient  a connection to one cluster's API server
---@field server string          https://host:port
---@field namespace string       the default namespace (the context's, else "default")
---@field context string|nil
---@field source string|nil      the kubeconfig file, if any
---@field versions table<string, string>  group -> version overrides
---@field server_version table|nil         GET /version, when connect probed it
---@field timeout number
---@field retries integer
---@field backoff number
local Client = {}
Client.__index = Client

local IDEMPOTENT = {GET = true, HEAD = true}
local TRANSIENT_HTTP = {[429] = true, [500] = true, [502] = true, [503] = true, [504] = true}
local TRANSIENT_CODE = {RESET = true, TIMEOUT = true}

local util = require "bomarun.k8s.util"
local str = util.str

-- The error of a non-2xx response: the Status object's message and
-- reason when the body is one.
local function api_error(method, path, r, decoded)
  if type(decoded) == "table" and decoded.kind == "Status" then
    local reason = str(decoded.reason) or ("HTTP_" .. r.status)
    local msg = str(decoded.message) or reason
    return nil, string.format("k8s: %s %s: %s (%s, HTTP %d)", method, path, msg, reason, r.status), reason, decoded
  end
  local text = type(r.body) == "string" and r.body:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "") or ""
  if #text > 200 then text = text:sub(1, 197) .. "..." end
  return nil, string.format("k8s: %s %s: HTTP %d%s", method, path, r.status, text ~= "" and (": " .. text) or ""),
    "HTTP_" .. r.status, decoded
end

--- Send a request to the API server.  `path` is the API path (with a
--- query, if any); a table body is sent as JSON.  Returns the decoded body
--- (a table for JSON, else the text), the HTTP status and the headers on a
--- 2xx; nil, "k8s: METHOD PATH: message (Reason, HTTP code)", Reason, the
--- Status object on an API error; nil, message, CODE on a transport failure.
--- GETs are retried on 429/5xx and dropped connections (`retries`).
---@param method string
---@param path string
---@param body? table|string
---@param opts? {query?: table, content_type?: string, accept?: string, headers?: table<string, string>, timeout?: number, retries?: integer}
---@return any body, integer|string status_or_err, table|string|nil headers_or_code, table|nil status_object
function Client:request(method, path, body, opts)
  opts = opts or {}
  method = method:upper()
  if opts.query then
    local q = resources.query(opts.query)
    if q ~= "" then path = path .. (path:find("?", 1, true) and "&" or "?") .. q end
  end
  local headers = {Accept = opts.accept or "application/json"}
  if self._auth then headers.Authorization = self._auth end
  if type(body) == "table" then
    body = json.encode(body)
    headers["Content-Type"] = opts.content_type or "application/json"
  elseif body ~= nil then
    headers["Content-Type"] = opts.content_type or "application/json"
  end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local retries = opts.retries or (IDEMPOTENT[method] and self.retries or 0)
  local url = self.server .. path
  local attempt = 0
  while true do
    attempt = attempt + 1
    local req = {method = method, url = url, headers = headers, body = body, timeout = opts.timeout or self.timeout}
    for k, v in pairs(self._tls) do req[k] = v end
    local r, err, code = http.request(req)
    if not r then
      if not TRANSIENT_CODE[code] or attempt > retries then
        return nil, string.format("k8s: %s %s: %s", method, url, (tostring(err):gsub("^http: %S+ %S+: ", ""))), code
      end
    elseif not (TRANSIENT_HTTP[r.status] and attempt <= retries) then
      local ct = r.headers["content-type"] or ""
      local decoded = r.body
      if r.body and r.body ~= "" and ct:find("json", 1, true) then decoded = json.decode(r.body) or r.body end
      if r.status >= 200 and r.status < 300 then
        if decoded == "" or decoded == nil then decoded = true end
        return decoded, r.status, r.headers
      end
      return api_error(method, path, r, decoded)
    end
    local delay = self.backoff * 2 ^ (attempt - 1)
    local ra = r and tonumber(r.headers["retry-after"])
    if ra then delay = math.min(ra, 5) end
    log.to_step(string.format("k8s: %s %s: %s; retry %d/%d in %.1fs", method, path,
      r and ("HTTP " .. r.status) or tostring(err), attempt, retries, delay))
    task.sleep(delay)
  end
end

--- Resolve a resource name ("pods", "Pod", "clusters", ...) or an explicit
--- {group=, version=, resource=, namespaced=} (this client's version
--- overrides applied).
---@param resource string|table
---@return bomarun.K8sResource
function Client:resource(resource)
  return resources.resolve(resource, self.versions)
end

--- The API path of a resource's collection or of one object:
--- kc:path("pods", {namespace = "kube-system", name = "x", subresource = "log"}).
--- A namespaced resource gets the client's namespace unless
--- `all_namespaces` is set.
---@param resource string|table
---@param opts? {namespace?: string, name?: string, subresource?: string, all_namespaces?: boolean}
---@return string
function Client:path(resource, opts)
  opts = opts or {}
  local r = self:resource(resource)
  local ns = opts.namespace
  if r.namespaced and not ns and not opts.all_namespaces then ns = self.namespace end
  return resources.path(r, ns, opts.name, opts.subresource)
end

--- One object: kc:get("services", "rr", {namespace = "default"}).
--- nil, msg, "NotFound" when it does not exist.
---@param resource string|table
---@param name string
---@param opts? {namespace?: string}
---@return table|nil object, string|nil err, string|nil code
function Client:get(resource, name, opts)
  if type(name) ~= "string" then error("k8s: get(resource, name, opts): name must be a string", 2) end
  opts = opts or {}
  local obj, err, code = self:request("GET", self:path(resource, {namespace = opts.namespace, name = name}))
  if obj == nil then return nil, err, code end
  return obj
end

-- A list, every page, with the headers of the last page.
function Client:_list(resource, opts)
  opts = opts or {}
  local r = self:resource(resource)
  local path = self:path(r, {namespace = opts.namespace, all_namespaces = opts.all_namespaces})
  local items, cont, pages = {}, nil, 0
  local headers
  repeat
    pages = pages + 1
    local q = {labelSelector = opts.label_selector, fieldSelector = opts.field_selector,
               limit = opts.limit or 500, ["continue"] = cont}
    local body, err, code, st = self:request("GET", path, nil, {query = q})
    if body == nil then return nil, err, code, st end
    headers = code
    if type(body) ~= "table" or type(body.items) ~= "table" and body.items ~= json.null then
      return nil, "k8s: GET " .. path .. ": the answer is not a list", "BAD_RESPONSE"
    end
    local kind = str(body.kind) and body.kind:gsub("List$", "") or r.kind
    if kind == "" then kind = r.kind end
    for _, it in ipairs(type(body.items) == "table" and body.items or {}) do
      -- Items in a List carry no kind/apiVersion on the wire; kubectl adds them, so do we.
      if type(it) == "table" then
        if it.kind == nil then it.kind = kind end
        if it.apiVersion == nil then it.apiVersion = body.apiVersion end
      end
      items[#items + 1] = it
    end
    cont = type(body.metadata) == "table" and str(body.metadata["continue"]) or nil
  until not cont or pages > 100000
  return items, headers, pages
end

--- Every object of a resource, following `continue` across pages of
--- `limit` (default 500, as kubectl): a plain list.  Namespaced resources
--- are listed in `namespace` (default: the client's), or in every
--- namespace with `all_namespaces = true`.
---@param resource string|table
---@param opts? {namespace?: string, all_namespaces?: boolean, label_selector?: string, field_selector?: string, limit?: integer}
---@return table[]|nil items, string|nil err, string|nil code
function Client:list(resource, opts)
  local items, err, code = self:_list(resource, opts)
  if not items then return nil, err, code end
  return items
end

--- Create an object from a manifest (apiVersion, kind, metadata.name;
--- metadata.namespace or opts.namespace or the client's namespace).
--- Returns the object as created; nil, msg, "AlreadyExists" when it exists.
---@param manifest table
---@param opts? {namespace?: string}
---@return table|nil object, string|nil err, string|nil code
function Client:create(manifest, opts)
  opts = opts or {}
  local r = resources.of_manifest(manifest)
  local ns = opts.namespace or (type(manifest.metadata) == "table" and manifest.metadata.namespace) or self.namespace
  local obj, err, code = self:request("POST", resources.path(r, ns), manifest)
  if obj == nil then return nil, err, code end
  return obj
end

local PATCH_TYPES = {
  merge = "application/merge-patch+json",
  strategic = "application/strategic-merge-patch+json",
  json = "application/json-patch+json",
}

--- Patch an object: type "merge" (default, RFC 7386), "strategic"
--- (Kubernetes' strategic merge) or "json" (RFC 6902, a list of ops).
---@param resource string|table
---@param name string
---@param patch table
---@param opts? {namespace?: string, type?: "merge"|"strategic"|"json"}
---@return table|nil object, string|nil err, string|nil code
function Client:patch(resource, name, patch, opts)
  opts = opts or {}
  local ctype = PATCH_TYPES[opts.type or "merge"]
  if not ctype then error("k8s: patch type must be merge, strategic or json, not " .. tostring(opts.type), 2) end
  if opts.type == "json" and #patch == 0 then patch = setmetatable({}, json.array_mt) end
  local obj, err, code = self:request("PATCH", self:path(resource, {namespace = opts.namespace, name = name}), patch,
                                      {content_type = ctype})
  if obj == nil then return nil, err, code end
  return obj
end

--- Delete an object.  Returns what the API answers (the object, or a
--- Status); nil, msg, "NotFound" when it is not there, unless
--- `ignore_not_found` (then true).
---@param resource string|table
---@param name string
---@param opts? {namespace?: string, propagation_policy?: "Background"|"Foreground"|"Orphan", grace_period?: integer, ignore_not_found?: boolean}
---@return any result, string|nil err, string|nil code
function Client:delete(resource, name, opts)
  opts = opts or {}
  local body
  if opts.propagation_policy or opts.grace_period then
    body = {kind = "DeleteOptions", apiVersion = "v1", propagationPolicy = opts.propagation_policy,
            gracePeriodSeconds = opts.grace_period}
  end
  local res, err, code = self:request("DELETE", self:path(resource, {namespace = opts.namespace, name = name}), body)
  if res == nil then
    if code == "NotFound" and opts.ignore_not_found then return true end
    return nil, err, code
  end
  return res
end

--- The last lines of a container's log:
--- GET .../pods/NAME/log?container=C&tailLines=N.
---@param pod string
---@param opts? {namespace?: string, container?: string, tail?: integer, previous?: boolean}
---@return string|nil text, string|nil err, string|nil code
function Client:logs(pod, opts)
  opts = opts or {}
  local path = self:path("pods", {namespace = opts.namespace, name = pod, subresource = "log"})
  local text, err, code = self:request("GET", path, nil, {accept = "*/*", retries = 0, query = {
    container = opts.container, tailLines = opts.tail or 20, previous = opts.previous and "true" or nil}})
  if text == nil then return nil, err, code end
  if text == true then return "" end
  return type(text) == "string" and text or json.encode(text)
end

--- Wait until nodes are Ready (and at `version`): see bomarun.k8s.wait.
---@param opts? {count?: integer, version?: string, all?: boolean, label_selector?: string, timeout?: number, interval?: number, quiet?: boolean}
---@return table[]|nil nodes, string|nil err, string|nil code
function Client:wait_nodes(opts)
  return wait.nodes(self, opts or {})
end

--- Wait until the pods of a namespace (and selector) are Running and
--- ready; fail at once on CrashLoopBackOff, image pull failures,
--- CreateContainerError, a failed init container or Pending past
--- `pending_deadline`, naming pod, container and reason, with the last
--- log lines.  See bomarun.k8s.wait.
---@param opts? {namespace?: string, all_namespaces?: boolean, label_selector?: string, field_selector?: string, timeout?: number, interval?: number, pending_deadline?: number, min?: integer, log_lines?: integer|false, quiet?: boolean}
---@return table[]|nil pods, string|nil err, string|nil code, table|nil problem
function Client:wait_pods(opts)
  return wait.pods(self, opts or {})
end

--- Wait for a LoadBalancer Service's external address (its IP, else its
--- hostname).
---@param name string
---@param opts? {namespace?: string, timeout?: number, interval?: number, quiet?: boolean}
---@return string|nil address, string|table|nil service_or_err, string|nil code
function Client:service_address(name, opts)
  return wait.service_address(self, name, opts or {})
end

--- The conditions of an object (Cluster API v1beta1 and v1beta2 shapes),
--- by type: {status=, reason=, message=, severity=, last_transition=}.
---@param obj table
---@return table<string, table>
function Client:conditions(obj)
  return capi.conditions(obj)
end

--- Wait until an object's condition ("Available", "InfrastructureReady",
--- "Ready", ...) is True; fail at once on a Cluster API failureReason /
--- failureMessage; on failure the message carries the condition's reason
--- and message.
---@param resource string|table
---@param name string
---@param condition string
---@param opts? {namespace?: string, timeout?: number, interval?: number, fail_reasons?: string[], quiet?: boolean}
---@return table|nil condition, table|string|nil object_or_err, string|nil code
function Client:wait_condition(resource, name, condition, opts)
  return capi.wait_condition(self, resource, name, condition, opts or {})
end

--- A kubeconfig for this connection written to `path` (mode 0600), for
--- kubectl run through bomarun.proc.  Credentials go in as data.
---@param path string
---@return string|nil path, string|nil err, string|nil code
function Client:write_kubeconfig(path)
  local s = self._settings
  local function data(pem, file)
    if pem then return crypto.b64encode(pem) end
    if file then
      local f = io.open(file, "rb")
      if f then
        local t = f:read("a")
        f:close()
        return crypto.b64encode(t)
      end
    end
    return nil
  end
  local lines = {"apiVersion: v1", "kind: Config", "clusters:", "- name: bomarun", "  cluster:",
                 "    server: " .. self.server}
  local ca = data(s.ca_pem, s.ca_file)
  if ca then lines[#lines + 1] = "    certificate-authority-data: " .. ca end
  if s.insecure then lines[#lines + 1] = "    insecure-skip-tls-verify: true" end
  lines[#lines + 1] = "users:"
  lines[#lines + 1] = "- name: bomarun"
  lines[#lines + 1] = "  user:"
  local cert, key = data(s.cert_pem, s.cert_file), data(s.key_pem, s.key_file)
  if cert then lines[#lines + 1] = "    client-certificate-data: " .. cert end
  if key then
    secret.register(key)
    lines[#lines + 1] = "    client-key-data: " .. key
  end
  if s.token then lines[#lines + 1] = "    token: " .. s.token end
  for _, l in ipairs({"contexts:", "- name: bomarun", "  context:", "    cluster: bomarun", "    user: bomarun",
                      "    namespace: " .. self.namespace, "current-context: bomarun", ""}) do
    lines[#lines + 1] = l
  end
  local ok, err = host.write_file(path, table.concat(lines, "\n"), tonumber("600", 8))
  if not ok then return nil, "k8s: cannot write kubeconfig " .. path .. ": " .. tostring(err), "LOCAL_FILE" end
  return path
end

---@class bomarun.K8sOptions
---@field kubeconfig? string       a kubeconfig file (default when no server: $KUBECONFIG, else ~/.kube/config)
---@field kubeconfig_data? string  kubeconfig text instead of a file
---@field context? string          a context other than current-context
---@field server? string           https://host:port (overrides the kubeconfig's)
---@field ca? string               CA file
---@field ca_data? string          CA as PEM, or base64 of PEM (certificate-authority-data)
---@field cert? string             client certificate file
---@field key? string              its key file
---@field cert_data? string        client certificate as PEM or base64 of PEM
---@field key_data? string         its key as PEM or base64 of PEM (registered as a secret)
---@field token? string|bomarun.SecretRef  bearer token (registered as a secret)
---@field insecure? boolean        skip TLS verification (a warning is logged)
---@field namespace? string        default namespace (else the context's, else "default")
---@field versions? table<string, string>  API group -> version, e.g. {["cluster.x-k8s.io"] = "v1beta2"}
---@field timeout? number          per request, seconds (default 30)
---@field retries? integer         retries of a GET on 429/5xx or a dropped connection (default 2)
---@field backoff? number          first retry delay, doubling (default 0.5 s)
---@field probe? boolean           GET /version at once (default true): a wrong server, CA or credential fails here

-- Settings from the options: the kubeconfig's context, then explicit fields over it.
local function settings_of(opts)
  local s = {}
  local explicit = opts.server ~= nil
  if opts.kubeconfig_data or opts.kubeconfig or not explicit then
    local doc, err, code
    local source = opts.kubeconfig
    if opts.kubeconfig_data then
      doc, err, code = kubeconfig.parse(opts.kubeconfig_data, "(kubeconfig_data)")
    else
      source = source or kubeconfig.default_path()
      doc, err, code = kubeconfig.load(source)
    end
    if not doc then return nil, err, code end
    s, err, code = kubeconfig.resolve(doc, {context = opts.context, source = source})
    if not s then return nil, err, code end
  end
  local function pem(field)
    if not opts[field] then return nil end
    local p, err, code = kubeconfig.pem_of(opts[field], field, "the options")
    if not p then error(err .. " (" .. tostring(code) .. ")", 4) end
    return p
  end
  s.server = opts.server or s.server
  if opts.ca or opts.ca_data then s.ca_file, s.ca_pem = opts.ca, pem("ca_data") end
  if opts.cert or opts.cert_data then s.cert_file, s.cert_pem = opts.cert, pem("cert_data") end
  if opts.key or opts.key_data then
    s.key_file, s.key_pem = opts.key, pem("key_data")
    s.key_b64 = opts.key_data and not opts.key_data:find("-----BEGIN", 1, true) and opts.key_data or nil
  end
  if opts.token then
    local tok = opts.token
    if secret.is_ref(tok) then
      local v, serr = secret.resolve(tok)
      if not v then return nil, "k8s: " .. serr, "CONFIG" end
      tok = v
    end
    s.token = tok
  end
  if opts.insecure ~= nil then s.insecure = opts.insecure end
  s.namespace = opts.namespace or s.namespace
  return s
end

--- Connect to a cluster's API server.  From a kubeconfig (the current
--- context, or `context`), or explicit {server=, ca=, ca_data=, cert=,
--- key=, cert_data=, key_data=, token=, insecure=} (explicit fields
--- override the kubeconfig's).  Key material and tokens are registered as
--- secrets (redacted from every log, event and report).  With `probe`
--- (default) it reads /version once, so a wrong address, CA or credential
--- fails here.
---@param opts? bomarun.K8sOptions
---@return bomarun.K8sClient|nil client, string|nil err, string|nil code
function M.connect(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("k8s.connect: expected a table of options", 2) end
  local s, err, code = settings_of(opts)
  if not s then return nil, err, code end
  if not s.server then return nil, "k8s: no server (give server = or a kubeconfig)", "CONFIG" end
  s.server = s.server:gsub("/+$", "")
  if not s.server:match("^https?://") then
    return nil, "k8s: server must be an http(s) URL, not " .. s.server, "CONFIG"
  end
  -- Secrets first: nothing below may print them.
  for _, k in ipairs({"key_pem", "key_b64", "token", "password"}) do secret.register(s[k]) end
  if (s.cert_pem or s.cert_file) and not (s.key_pem or s.key_file) then
    return nil, "k8s: a client certificate without its key" .. (s.source and (" in " .. s.source) or ""), "CONFIG"
  end
  local tls = {cainfo = s.ca_file, ca_pem = s.ca_pem, client_cert = s.cert_file, client_key = s.key_file,
               client_cert_pem = s.cert_pem, client_key_pem = s.key_pem, insecure = s.insecure or nil}
  if s.insecure then
    log.info("WARNING: k8s: TLS verification of " .. s.server .. " is OFF (insecure"
      .. (opts.insecure and " = true" or "-skip-tls-verify in " .. tostring(s.source)) .. ")")
  end
  local auth
  if s.token then
    auth = "Bearer " .. s.token
  elseif s.username and s.password then
    auth = "Basic " .. crypto.b64encode(s.username .. ":" .. s.password)
  end
  if auth then secret.register(auth) end
  local kc = setmetatable({
    server = s.server, namespace = s.namespace or "default", context = s.context, source = s.source,
    versions = opts.versions or {}, timeout = opts.timeout or 30, retries = opts.retries or 2,
    backoff = opts.backoff or 0.5, _tls = tls, _auth = auth, _settings = s,
  }, Client)
  if opts.probe ~= false then
    local v, verr, vcode = kc:request("GET", "/version")
    if v == nil then return nil, verr, vcode end
    kc.server_version = type(v) == "table" and v or nil
  end
  return kc
end

return M

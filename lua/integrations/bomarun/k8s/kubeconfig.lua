--- Kubeconfig files, as kubectl reads them and as Magnum writes them
--- (`openstack coe cluster config`, bomarun.openstack's ci:config):
--- clusters (server, certificate-authority[-data], insecure-skip-tls-verify),
--- users (client-certificate[-data], client-key[-data], token, tokenFile,
--- username/password), contexts (cluster, user, namespace) and
--- current-context.  Relative file paths are relative to the kubeconfig's
--- directory, as kubectl has them.
local crypto = require "bomarun._crypto"

local M = {}

---@class bomarun.K8sSettings  what a connection needs, resolved from a kubeconfig context
---@field server string
---@field ca_file? string
---@field ca_pem? string
---@field cert_file? string
---@field cert_pem? string
---@field key_file? string
---@field key_pem? string
---@field key_b64? string        the key as the kubeconfig carried it (registered as a secret too)
---@field token? string
---@field username? string
---@field password? string
---@field insecure? boolean
---@field namespace? string
---@field context? string
---@field cluster? string
---@field user? string
---@field source? string         the kubeconfig file

local util = require "bomarun.k8s.util"
local str = util.str

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

--- The default kubeconfig path: the first entry of $KUBECONFIG, else
--- ~/.kube/config.
---@return string
function M.default_path()
  local env = os.getenv("KUBECONFIG")
  if env and env ~= "" then return (env:match("^[^:]+")) end
  return (os.getenv("HOME") or "") .. "/.kube/config"
end

--- Parse kubeconfig text (YAML or JSON).
---@param text string
---@param source? string  where it came from, for messages
---@return table|nil doc, string|nil err, string|nil code
function M.parse(text, source)
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then return nil, "k8s: reading a kubeconfig needs lyaml (Debian package lua-yaml)", "CONFIG" end
  local ok2, doc = pcall(lyaml.load, text)
  if not ok2 then
    return nil, "k8s: kubeconfig " .. (source or "text") .. " is not valid YAML: " .. tostring(doc), "CONFIG"
  end
  if type(doc) ~= "table" then
    return nil, "k8s: kubeconfig " .. (source or "text") .. " is not a mapping", "CONFIG"
  end
  return doc
end

--- Read and parse a kubeconfig file.
---@param path string
---@return table|nil doc, string|nil err, string|nil code
function M.load(path)
  local text, err = read(path)
  if not text then return nil, "k8s: cannot read kubeconfig " .. path .. ": " .. tostring(err), "CONFIG" end
  local doc, perr, code = M.parse(text, path)
  if not doc then return nil, perr, code end
  return doc
end

local function named(list, name)
  if type(list) ~= "table" then return nil end
  for _, e in ipairs(list) do
    if type(e) == "table" and e.name == name then return e end
  end
  return nil
end

-- PEM from a *-data field: base64 of the PEM (kubeconfig), or PEM itself.
local function pem_of(data, what, where)
  if data:find("-----BEGIN", 1, true) then return data end
  local pem = crypto.b64decode(data)
  if not pem or not pem:find("-----BEGIN", 1, true) then
    return nil, string.format("k8s: %s in %s is neither base64 PEM nor PEM", what, where), "CONFIG"
  end
  return pem
end
M.pem_of = pem_of

local function relative(path, dir)
  if not path or path:sub(1, 1) == "/" or not dir then return path end
  if path:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. path:sub(2) end
  return dir .. "/" .. path
end

--- The settings of one context of a parsed kubeconfig (the current
--- context unless `context` names another).
---@param doc table
---@param opts? {context?: string, source?: string}
---@return bomarun.K8sSettings|nil settings, string|nil err, string|nil code
function M.resolve(doc, opts)
  opts = opts or {}
  local where = opts.source or "the kubeconfig"
  local dir = opts.source and opts.source:match("^(.*)/[^/]*$") or nil
  local cname = opts.context or str(doc["current-context"])
  local cluster_e, user_e, ctx
  if cname then
    local c = named(doc.contexts, cname)
    if not c then return nil, "k8s: no context '" .. cname .. "' in " .. where, "CONFIG" end
    ctx = type(c.context) == "table" and c.context or {}
    cluster_e = named(doc.clusters, ctx.cluster)
    if not cluster_e then
      return nil, string.format("k8s: context '%s' names cluster '%s', which %s does not define", cname,
        tostring(ctx.cluster), where), "CONFIG"
    end
    user_e = ctx.user and named(doc.users, ctx.user)
    if ctx.user and not user_e then
      return nil, string.format("k8s: context '%s' names user '%s', which %s does not define", cname,
        tostring(ctx.user), where), "CONFIG"
    end
  else
    -- No context at all: a file with exactly one cluster (and user).
    if type(doc.clusters) ~= "table" or #doc.clusters ~= 1 then
      return nil, "k8s: " .. where .. " has no current-context; name one with context =", "CONFIG"
    end
    cluster_e = doc.clusters[1]
    user_e = type(doc.users) == "table" and doc.users[1] or nil
    ctx = {}
  end
  local cl = type(cluster_e.cluster) == "table" and cluster_e.cluster or {}
  local u = user_e and type(user_e.user) == "table" and user_e.user or {}
  local s = {context = cname, cluster = cluster_e.name, user = user_e and user_e.name, source = opts.source,
             namespace = str(ctx.namespace), server = str(cl.server)}
  if not s.server then return nil, "k8s: cluster '" .. tostring(cluster_e.name) .. "' in " .. where .. " has no server",
    "CONFIG" end
  s.insecure = cl["insecure-skip-tls-verify"] == true
  local err, code
  if str(cl["certificate-authority-data"]) then
    s.ca_pem, err, code = pem_of(cl["certificate-authority-data"], "certificate-authority-data", where)
    if not s.ca_pem then return nil, err, code end
  else
    s.ca_file = relative(str(cl["certificate-authority"]), dir)
  end
  if str(u["client-certificate-data"]) then
    s.cert_pem, err, code = pem_of(u["client-certificate-data"], "client-certificate-data", where)
    if not s.cert_pem then return nil, err, code end
  else
    s.cert_file = relative(str(u["client-certificate"]), dir)
  end
  if str(u["client-key-data"]) then
    s.key_b64 = u["client-key-data"]
    s.key_pem, err, code = pem_of(u["client-key-data"], "client-key-data", where)
    if not s.key_pem then return nil, err, code end
  else
    s.key_file = relative(str(u["client-key"]), dir)
  end
  s.token = str(u.token)
  if not s.token and str(u.tokenFile) then
    local path = relative(u.tokenFile, dir)
    local t, terr = read(path)
    if not t then return nil, "k8s: cannot read tokenFile " .. path .. ": " .. tostring(terr), "CONFIG" end
    s.token = (t:gsub("%s+$", ""))
  end
  s.username, s.password = str(u.username), str(u.password)
  if type(u.exec) == "table" or type(u["auth-provider"]) == "table" then
    if not (s.token or s.cert_pem or s.cert_file) then
      return nil, string.format("k8s: user '%s' in %s gets its credentials from %s, which bomarun.k8s does not "
        .. "run; give a token or a client certificate, or run kubectl through bomarun.proc",
        tostring(s.user), where, type(u.exec) == "table" and "an exec plugin" or "an auth-provider"), "CONFIG"
    end
  end
  return s
end

return M

--- Resource names to API paths: the core kinds, apps, and the Cluster API
--- kinds (with their groups and versions), by plural, singular or Kind,
--- or an explicit {group=, version=, resource=, namespaced=}.
local M = {}

---@class bomarun.K8sResource
---@field group string          "" for the core group
---@field version string
---@field resource string       the plural, as in the path
---@field kind string
---@field namespaced boolean

-- plural = {group, version, Kind, namespaced}
local KNOWN = {
  nodes = {"", "v1", "Node", false},
  namespaces = {"", "v1", "Namespace", false},
  persistentvolumes = {"", "v1", "PersistentVolume", false},
  pods = {"", "v1", "Pod", true},
  services = {"", "v1", "Service", true},
  endpoints = {"", "v1", "Endpoints", true},
  configmaps = {"", "v1", "ConfigMap", true},
  secrets = {"", "v1", "Secret", true},
  events = {"", "v1", "Event", true},
  serviceaccounts = {"", "v1", "ServiceAccount", true},
  persistentvolumeclaims = {"", "v1", "PersistentVolumeClaim", true},
  deployments = {"apps", "v1", "Deployment", true},
  daemonsets = {"apps", "v1", "DaemonSet", true},
  replicasets = {"apps", "v1", "ReplicaSet", true},
  statefulsets = {"apps", "v1", "StatefulSet", true},
  jobs = {"batch", "v1", "Job", true},
  storageclasses = {"storage.k8s.io", "v1", "StorageClass", false},
  -- Cluster API (core provider)
  clusters = {"cluster.x-k8s.io", "v1beta1", "Cluster", true},
  machines = {"cluster.x-k8s.io", "v1beta1", "Machine", true},
  machinedeployments = {"cluster.x-k8s.io", "v1beta1", "MachineDeployment", true},
  machinesets = {"cluster.x-k8s.io", "v1beta1", "MachineSet", true},
  kubeadmcontrolplanes = {"controlplane.cluster.x-k8s.io", "v1beta1", "KubeadmControlPlane", true},
  -- Cluster API Provider OpenStack
  openstackclusters = {"infrastructure.cluster.x-k8s.io", "v1beta1", "OpenStackCluster", true},
  openstackmachines = {"infrastructure.cluster.x-k8s.io", "v1beta1", "OpenStackMachine", true},
}
M.KNOWN = KNOWN

local BY_NAME = {}
for plural, k in pairs(KNOWN) do
  BY_NAME[plural] = plural
  BY_NAME[k[3]] = plural
  BY_NAME[k[3]:lower()] = plural
end

-- The plural of a Kind the table does not know (the apiserver's own rule
-- for most kinds: lower case, then y -> ies, s/x/ch/sh -> +es, else +s).
local function plural_of(kind)
  local k = kind:lower()
  if k:match("[^aeiou]y$") then return k:sub(1, -2) .. "ies" end
  if k:match("s$") or k:match("x$") or k:match("ch$") or k:match("sh$") then return k .. "es" end
  return k .. "s"
end
M.plural_of = plural_of

--- Resolve a resource name ("pods", "pod", "Pod", "clusters") or an
--- explicit {group=, version=, resource=, namespaced=} table.
--- `versions` overrides a group's version ({["cluster.x-k8s.io"] = "v1beta2"}).
--- Raises on an unknown name (a programmer error).
---@param spec string|table
---@param versions? table<string, string>
---@return bomarun.K8sResource
function M.resolve(spec, versions)
  versions = versions or {}
  if type(spec) == "table" then
    if type(spec.resource) ~= "string" or type(spec.version) ~= "string" then
      error("k8s: an explicit resource needs {group=, version=, resource=}", 3)
    end
    local group = spec.group or ""
    return {group = group, version = spec.version, resource = spec.resource,
            kind = spec.kind or spec.resource, namespaced = spec.namespaced ~= false}
  end
  if type(spec) ~= "string" then error("k8s: a resource is a name or {group=, version=, resource=}", 3) end
  local plural = BY_NAME[spec] or BY_NAME[spec:lower()]
  if not plural then
    error("k8s: unknown resource '" .. spec .. "': give {group=, version=, resource=, namespaced=}", 3)
  end
  local k = KNOWN[plural]
  return {group = k[1], version = versions[k[1]] or k[2], resource = plural, kind = k[3], namespaced = k[4]}
end

--- The resource a manifest belongs to, from its apiVersion and kind.
---@param manifest table
---@return bomarun.K8sResource
function M.of_manifest(manifest)
  if type(manifest) ~= "table" or type(manifest.kind) ~= "string" or type(manifest.apiVersion) ~= "string" then
    error("k8s: a manifest needs apiVersion and kind", 3)
  end
  local group, version = manifest.apiVersion:match("^(.+)/([^/]+)$")
  if not group then group, version = "", manifest.apiVersion end
  local plural = BY_NAME[manifest.kind]
  local known = plural and KNOWN[plural]
  if known and known[1] == group then
    return {group = group, version = version, resource = plural, kind = manifest.kind, namespaced = known[4]}
  end
  return {group = group, version = version, resource = plural_of(manifest.kind), kind = manifest.kind,
          namespaced = true}
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-._~:]", function(c) return string.format("%%%02X", c:byte()) end))
end
M.escape = escape

--- The API path of a resource's collection, or of one object (and a
--- subresource): /api/v1/namespaces/NS/pods/NAME/log, /apis/G/V/...
--- A namespaced resource without a namespace gives the all-namespaces path.
---@param r bomarun.K8sResource
---@param namespace? string
---@param name? string
---@param sub? string
---@return string
function M.path(r, namespace, name, sub)
  local p = r.group == "" and ("/api/" .. r.version) or ("/apis/" .. r.group .. "/" .. r.version)
  if r.namespaced and namespace then p = p .. "/namespaces/" .. escape(namespace) end
  p = p .. "/" .. r.resource
  if name then p = p .. "/" .. escape(name) end
  if sub then p = p .. "/" .. sub end
  return p
end

--- "a=1&b=x%2Cy" from a table (keys sorted; nil values left out).
---@param q table<string, any>
---@return string
function M.query(q)
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    if q[k] ~= nil then parts[#parts + 1] = k .. "=" .. escape(q[k]) end
  end
  return table.concat(parts, "&")
end

return M

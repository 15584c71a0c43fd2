--- Container infra (Magnum): cluster templates, clusters, resize, health, kubeconfig.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).
local crypto = require "bomarun._crypto"
local host = require "bomarun._host"
local secret = require "bomarun.secret"

return {collections = {
  templates = {service = "container-infra", path = "/clustertemplates", key = "clustertemplates",
               what = "cluster template", bare_create = true, update_method = "PATCH", name_filter = false},
  clusters = {service = "container-infra", path = "/clusters", key = "clusters", what = "cluster",
              bare_create = true, ok = {"CREATE_COMPLETE", "UPDATE_COMPLETE"},
              fail = {"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED"}, show_after_find = true,
              name_filter = false},
}, methods = {
  --- Resize a cluster's default worker group.
  resize = function(h, _, id, node_count)
    return h:call("POST", "container-infra", "/clusters/" .. id .. "/actions/resize",
                  {body = {node_count = node_count}})
  end,
  --- health_status and its reason, as the runbooks gate on them.
  health = function(_, s, id)
    local c, err, code = s.clusters:show(id)
    if not c then return nil, err, code end
    return {status = c.health_status, reason = c.health_status_reason}
  end,
  --- Write a kubeconfig for the cluster to `path` (mode 0600), as
  --- `openstack coe cluster config` does for Kubernetes: the cluster's CA,
  --- and a client certificate Magnum signs for a key made here (the key
  --- never leaves this machine).  Returns path.
  config = function(h, s, id, path)
    local c, err, code = s.clusters:show(id)
    if not c then return nil, err, code end
    if not c.api_address then
      return nil, "openstack: cluster " .. id .. " has no api_address yet (status " .. tostring(c.status) .. ")",
        "NOT_READY"
    end
    local ca, cerr, ccode = h:call("GET", "container-infra", "/certificates/" .. c.uuid)
    if not ca then return nil, cerr, ccode end
    -- The key is made here, in process, and never leaves this machine.
    local key, csr = crypto.key_and_csr(2048, {{"CN", "admin"}, {"O", "system:masters"}})
    if not key then return nil, "openstack: cluster " .. id .. " kubeconfig: " .. csr, "LOCAL" end
    local b64 = crypto.b64encode
    -- The kubeconfig carries the key base64-encoded: that is the form a
    -- runbook printing the file would show, so it is redacted too.
    secret.register(key)
    secret.register(b64(key))
    local signed, serr, scode = h:call("POST", "container-infra", "/certificates",
                                       {body = {cluster_uuid = c.uuid, csr = csr}})
    if not signed then return nil, serr, scode end
    local name = c.name or c.uuid
    local yaml = table.concat({
      "apiVersion: v1", "kind: Config", "clusters:", "- name: " .. name, "  cluster:",
      "    server: " .. c.api_address, "    certificate-authority-data: " .. b64(ca.pem),
      "users:", "- name: admin", "  user:", "    client-certificate-data: " .. b64(signed.pem),
      "    client-key-data: " .. b64(key),
      "contexts:", "- name: default", "  context:", "    cluster: " .. name, "    user: admin",
      "current-context: default", ""}, "\n")
    local ok, werr = host.write_file(path, yaml, tonumber("600", 8))
    if not ok then return nil, "openstack: cluster " .. id .. " kubeconfig: " .. werr, "LOCAL_FILE" end
    return path
  end,
}}

--- Identity (Keystone v3): projects, domains, users, roles, role assignments.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).

return {collections = {
  projects = {service = "identity", path = "/v3/projects", key = "projects", single = "project", what = "project"},
  domains = {service = "identity", path = "/v3/domains", key = "domains", single = "domain", what = "domain"},
  users = {service = "identity", path = "/v3/users", key = "users", single = "user", what = "user"},
  roles = {service = "identity", path = "/v3/roles", key = "roles", single = "role", what = "role"},
}, methods = {
  --- Role assignments, filtered ({["user.id"] = ..., ["scope.project.id"] = ...}).
  role_assignments = function(h, _, query)
    return h:list("identity", "/v3/role_assignments", "role_assignments", {query = query})
  end,
  --- A project by name (in a domain, by name or id) or id.
  project = function(_, s, name_or_id, domain)
    local q
    if domain then
      local d, err, code = s.domains:find(domain)
      if not d then return nil, err, code end
      q = {domain_id = d.id}
    end
    return s.projects:find(name_or_id, q)
  end,
}}

--- bomarun.ansible.inventory: the friendly inventory table turned into
--- Ansible's YAML inventory structure (ansible.inventory_structure).
local json = require "bomarun.json"
local yaml = require "bomarun.ansible.yaml"

local M = {}

local function host_list(hosts, path)
  -- {"a", "b"} | {a = {vars}, b = true} | {{name = "a", ...}} | a mix of these
  local out, order = {}, {}
  if hosts == nil then return out, order end
  if type(hosts) == "string" then hosts = {hosts} end
  if type(hosts) ~= "table" then error("ansible: " .. path .. " must be a list or a map of hosts", 0) end
  local n = #hosts
  for i = 1, n do
    local h = hosts[i]
    if type(h) == "string" then
      if not out[h] then order[#order + 1] = h end
      out[h] = out[h] or {}
    elseif type(h) == "table" and type(h.name) == "string" then
      local vars = {}
      for k, x in pairs(h) do if k ~= "name" then vars[k] = x end end
      if not out[h.name] then order[#order + 1] = h.name end
      out[h.name] = vars
    else
      error("ansible: " .. path .. "[" .. i .. "] must be a host name or {name = ..., vars...}", 0)
    end
  end
  local named = {}
  for name, vars in pairs(hosts) do
    if not (math.type(name) == "integer" and name >= 1 and name <= n) then
      if type(name) ~= "string" then error("ansible: " .. path .. " keys must be host names", 0) end
      if type(vars) ~= "table" and vars ~= true then
        error("ansible: " .. path .. "." .. name .. " must be a table of host vars (or true)", 0)
      end
      named[#named + 1] = name
      out[name] = type(vars) == "table" and vars or {}
    end
  end
  table.sort(named)
  for _, name in ipairs(named) do order[#order + 1] = name end
  return out, order
end

-- Connection settings as Ansible variables.
local function connection_vars(c)
  if c == nil then return {} end
  if type(c) ~= "table" then error("ansible: inventory.connection must be a table", 0) end
  local v = {}
  v.ansible_connection = c.type or c.connection
  v.ansible_user = c.user
  v.ansible_port = c.port
  v.ansible_ssh_private_key_file = c.key
  v.ansible_python_interpreter = c.python
  v.ansible_password = c.password
  v.ansible_become_password = c.become_password
  local args = {}
  if c.known_hosts then
    args[#args + 1] = "-o UserKnownHostsFile=" .. c.known_hosts
    args[#args + 1] = "-o StrictHostKeyChecking=" .. (c.host_key_checking == false and "no" or "yes")
  elseif c.host_key_checking == false then
    args[#args + 1] = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
  end
  if c.ssh_args then args[#args + 1] = c.ssh_args end
  if #args > 0 then v.ansible_ssh_common_args = table.concat(args, " ") end
  return v
end
-- The group `gname` of the friendly shape as an Ansible group; vars given
-- in the group's host map are moved to the host, in `hosts`.
local function group_structure(gname, g, hosts)
  if type(gname) ~= "string" then error("ansible: inventory.groups keys must be group names", 0) end
  if type(g) ~= "table" then error("ansible: inventory.groups." .. gname .. " must be a table", 0) end
  local ghosts_in, gorder
  if g.hosts or g.vars or g.children then
    ghosts_in, gorder = host_list(g.hosts, "inventory.groups." .. gname .. ".hosts")
  else
    ghosts_in, gorder = host_list(g, "inventory.groups." .. gname)
  end
  local ghosts = {}
  for _, h in ipairs(gorder) do
    ghosts[h] = json.object()
    if next(ghosts_in[h]) then
      hosts[h] = hosts[h] or {}
      for k, x in pairs(ghosts_in[h]) do hosts[h][k] = x end
    end
  end
  local group = {}
  if next(ghosts) then group.hosts = ghosts end
  if g.vars and next(g.vars) then group.vars = g.vars end
  if g.children then
    group.children = {}
    for _, c in ipairs(g.children) do group.children[c] = json.object() end
  end
  return group
end

--- Ansible's inventory structure for an inventory table (see
--- ansible.inventory_structure).
---@param inv table
---@return table
function M.structure(inv)
  if type(inv) ~= "table" then error("ansible: inventory must be a path or a table", 0) end
  if inv.all then return inv end
  local hosts = host_list(inv.hosts, "inventory.hosts")
  local all_vars = connection_vars(inv.connection)
  for k, x in pairs(inv.vars or {}) do all_vars[k] = x end
  local children = {}
  for gname, g in pairs(inv.groups or {}) do
    children[gname] = group_structure(gname, g, hosts)
  end
  local all = {}
  local hmap = {}
  for name, vars in pairs(hosts) do
    local copy = json.object()
    for k, x in pairs(vars) do copy[k] = x end
    hmap[name] = copy
  end
  if next(hmap) then all.hosts = hmap end
  if next(all_vars) then all.vars = all_vars end
  if next(children) then all.children = children end
  return {all = all}
end

--- An inventory table rendered as YAML text.
---@param inv table
---@return string
function M.render(inv)
  return yaml.encode(M.structure(inv))
end

return M

--- OpenStack credentials: clouds.yaml (+ secure.yaml) and OS_* variables.
local M = {}


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

--- Merge src into dst, tables recursively; returns dst.
---@param dst table
---@param src table|nil
---@return table
function M.merge(dst, src)
  for k, v in pairs(src or {}) do
    if type(v) == "table" and type(dst[k]) == "table" then M.merge(dst[k], v) else dst[k] = v end
  end
  return dst
end

--- A copy of v, tables copied all the way down.
---@param v any
---@return any
function M.deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = M.deep_copy(x) end
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
      local cloud = M.deep_copy(doc.clouds[name])
      for _, spath in ipairs(config_paths("secure")) do
        local sdoc = yaml_load(spath)
        if sdoc and type(sdoc.clouds) == "table" and sdoc.clouds[name] then
          M.merge(cloud, sdoc.clouds[name])
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

return M

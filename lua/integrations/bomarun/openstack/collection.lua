--- A collection of a service's resources (list/show/find/create/delete/
--- update/wait/wait_deleted) and a service made of collections and methods.
local poll = require "bomarun.poll"

local M = {}


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

--- A collection of handle h from definition d ({service=, path=, key=, ...}).
---@param h bomarun.OpenStackHandle
---@param d table
---@return table collection
function M.collection(h, d)
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

--- A service: a constructor that, given a handle, makes its collections
--- (from defs) and binds its methods (extra: method(handle, service, ...)).
---@param defs table<string, table>
---@param extra table<string, function>|nil
---@return fun(h: bomarun.OpenStackHandle): table
function M.service(defs, extra)
  return function(h)
    local s = {h = h}
    for name, d in pairs(defs) do s[name] = M.collection(h, d) end
    for k, fn in pairs(extra or {}) do s[k] = function(_, ...) return fn(h, s, ...) end end
    return s
  end
end

return M

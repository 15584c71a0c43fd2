--- The services' own error messages, whatever the shape of their error body.
local json = require "bomarun.json"

local M = {}

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

return M

--- bomarun.k8s.util: the two readings of API objects every k8s part makes.
local M = {}

--- A non-empty string, or nil (API fields are often "" or absent).
---@param v any
---@return string|nil
function M.str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

--- A table, or an empty one (so nested fields can be read without checks).
---@param v any
---@return table
function M.tbl(v)
  if type(v) == "table" then return v end
  return {}
end

return M

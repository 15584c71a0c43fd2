--- Which steps and items a run takes: --only, --from and --resume.  Returns
--- a map id -> why it is skipped (nil: it runs), or nil, message.
local M = {}

--- The selection for `opts` (and the ids that passed in a resumed run).
---@param rb bomarun.Runbook
---@param opts bomarun.RunbookOptions  only `only` and `from` are read
---@param resumed_pass? table<string, boolean>  id -> true when it passed before
---@return table<string, string>|nil sel, string|nil err
function M.selection(rb, opts, resumed_pass)
  local only = {}
  for _, id in ipairs(opts.only) do only[id] = true end
  local known = {}
  for _, u in ipairs(rb.units) do
    known[u.node.id] = true
    for _, it in ipairs(u.node.items or {}) do known[it.id] = true end
  end
  for id in pairs(only) do
    if not known[id] then return nil, "--only " .. id .. ": no such step or acceptance item in " .. rb.id end
  end
  if opts.from and not known[opts.from] then
    return nil, "--from " .. opts.from .. ": no such step in " .. rb.id
  end
  local started = opts.from == nil
  local sel = {}
  for _, u in ipairs(rb.units) do
    local ids = {u.node.id}
    for _, it in ipairs(u.node.items or {}) do ids[#ids + 1] = it.id end
    for _, id in ipairs(ids) do
      if id == opts.from then started = true end
      local why
      if next(only) and not (only[id] or (u.node.kind == "acceptance" and only[u.node.id])) then
        why = "not selected (--only)"
      elseif not started then
        why = "before --from " .. opts.from
      elseif resumed_pass and resumed_pass[id] then
        why = "resumed"
      end
      sel[id] = why
    end
  end
  return sel
end

return M

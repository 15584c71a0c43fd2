-- fuzz_profile's driver: arbitrary text loaded as a profile file by
-- profile.load_file (its sandbox; evaluation bounded to 2 s), then the
-- --set overrides and the needs check a run applies to it.  load_file
-- must never raise: a bad profile is nil, message.
local profile = require "bomarun.profile"
local common = dofile(FUZZ_DIR .. "/common.lua")

local RB = {needs = {cluster = "string", replicas = "number", flags = "table", debug = "boolean", "region"},
            units = {{node = {kind = "step", id = "1", needs = {"image"}}}}}
local SETS = {{"replicas", "3"}, {"flags.fast", "true"}, {"cluster", "c-1"}}

return function(_, path)
  local c, err = profile.load_file(path)
  if not c then
    if type(err) ~= "string" then fuzz_bug("load_file failed without a message") end
    return
  end
  local env = common.copy(c)
  local ok, perr = pcall(function()
    local types = profile.needs_map(RB.needs)
    profile.apply_sets(env, SETS, types)
    return profile.check_needs(env, RB)
  end)
  if not ok then common.expected("needs", perr) end
end

-- Shared by the fuzz drivers: the errors a driver expects from bad input
-- are counted by where they were raised, and summed up at exit.  With
-- BOMARUN_FUZZ_STRICT=1 an error raised by the library rather than by the
-- fuzzed text itself is a bug instead (to hunt for robustness bugs).
local M = {}

local counts, order, total = {}, {}, 0

-- Where an error comes from: "file.lua:123", or its first words.
local function origin(err)
  local msg = err
  if type(err) == "table" and err.runbook_error then return "the input itself" end   -- a definition error
  if type(err) == "table" then msg = err.message or err.code or "(a table)" end
  msg = tostring(msg):match("^[^\n]*")
  if msg:match("^/tmp/bomarun%-fuzz%-[^/]*/input:") then return "the input itself" end
  return msg:match("([%w_/.-]+%.lua:%d+):") or msg:sub(1, 80)
end

--- An error that bad input may cause (what: the call that raised).  In
--- strict mode an error raised in a library file (lua/...) is a bug.
function M.expected(what, err)
  local where = origin(err)
  if FUZZ_STRICT and where:match("%.lua:%d+$") then   -- raised in the library's code
    fuzz_bug(what .. ": " .. tostring(type(err) == "table" and err.message or err))
  end
  local key = what .. ": " .. where
  if not counts[key] then order[#order + 1] = key end
  counts[key] = (counts[key] or 0) + 1
  total = total + 1
end

--- A copy of a library table, so fuzzed code cannot change the host's
--- (still callable when the original is: runbook{...}).
function M.copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  local mt = getmetatable(t)
  if type(mt) == "table" and mt.__call then
    setmetatable(c, {__call = function(_, ...) return t(...) end})
  end
  return c
end

-- Called by the harness at exit (fuzz_common.c).
function _G.fuzz_at_exit()
  if total == 0 then return end
  table.sort(order, function(a, b) return counts[a] > counts[b] end)
  io.stderr:write(string.format("fuzz: %d expected errors from bad input, by origin:\n", total))
  for i = 1, math.min(#order, 12) do
    io.stderr:write(string.format("  %7d  %s\n", counts[order[i]], order[i]))
  end
end

return M

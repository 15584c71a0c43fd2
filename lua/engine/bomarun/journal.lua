--- The event journal: events.jsonl, one JSON object per line, written and
--- flushed as each event happens, so a kill -9 loses at most the event being
--- written.  Every string is redacted before it is encoded.
local json = require "bomarun.json"
local host = require "bomarun._host"
local secret = require "bomarun.secret"

---@class bomarun.JournalEvent  one line of events.jsonl
---@field type string    run_start, step_start, gate, check, capture, poll, step_end, run_end, ... or a module's own
---@field seq integer     1, 2, ... in the order written
---@field t number        wall time, epoch seconds
---@field step? string    the step or item it belongs to (step_start/step_end use `id`)

---@class bomarun.Journal
---@field f file*|nil     the events.jsonl file (nil for a memory journal, or once closed)
---@field path string|nil
---@field seq integer     the last sequence number given
---@field events bomarun.JournalEvent[]  every event emitted, redacted
local M = {}
M.__index = M

--- Open (append) the journal in run directory `dir`.
---@param dir string
---@return bomarun.Journal|nil journal, string|nil err
function M.open(dir)
  local path = dir .. "/events.jsonl"
  local f, err = io.open(path, "a")
  if not f then return nil, "journal: cannot open " .. path .. ": " .. tostring(err) end
  f:setvbuf("no")
  return setmetatable({f = f, path = path, seq = 0, events = {}}, M)
end

--- A journal that only keeps events in memory (plan mode, tests).
---@return bomarun.Journal
function M.memory()
  return setmetatable({seq = 0, events = {}}, M)
end

--- Append an event {type = ..., ...}; `t` (wall time) and `seq` are added.
--- Returns the event as kept: a redacted copy when any secret is registered.
---@param ev table  {type = "...", ...}; gains seq and t
---@return bomarun.JournalEvent
function M:emit(ev)
  self.seq = self.seq + 1
  ev.seq = self.seq
  ev.t = ev.t or host.time()
  ev = secret.redact_deep(ev)
  self.events[#self.events + 1] = ev
  if self.f then
    local ok, line = pcall(json.encode, ev)
    if not ok then
      line = json.encode({type = "journal_error", seq = ev.seq, t = ev.t,
                          error = "could not encode a " .. tostring(ev.type) .. " event: " .. tostring(line)})
    end
    self.f:write(secret.redact(line) .. "\n")   -- one write: a kill leaves at most one torn line
  end
  return ev
end

--- Close the journal file (nothing to do for a memory journal).
function M:close()
  if self.f then self.f:close() self.f = nil end
end

--- Read every event of a journal file.  A torn last line (the process was
--- killed while writing it) is skipped and reported.
---@param path string  an events.jsonl file
---@return bomarun.JournalEvent[]|nil events, string|nil err, string[] warnings
function M.read(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "journal: cannot read " .. path .. ": " .. tostring(err), {} end
  local events, warnings, n = {}, {}, 0
  for line in f:lines() do
    n = n + 1
    if line ~= "" then
      local ev, jerr = json.decode(line)
      if type(ev) == "table" then
        events[#events + 1] = ev
      else
        warnings[#warnings + 1] = string.format("%s:%d: skipped an unreadable event (%s)", path, n, tostring(jerr))
      end
    end
  end
  f:close()
  return events, nil, warnings
end

return M

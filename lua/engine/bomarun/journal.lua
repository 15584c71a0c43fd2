--- The event journal: events.jsonl, one JSON object per line, written and
--- flushed as each event happens, so a kill -9 loses at most the event being
--- written.  Every string is redacted before it is encoded, and every event
--- is made encodable (json.sanitize: invalid UTF-8 as `\xHH`, NaN as
--- "nan", ...) so that no event is ever dropped.  A write that fails (a
--- full disk) is not ignored: the journal stops writing, keeps the error in
--- `write_error` and calls `on_error` once; the events stay in memory, so
--- the reports can still say what happened.
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
---@field events bomarun.JournalEvent[]  every event emitted, redacted and sanitized
---@field write_error string|nil  why events.jsonl could not be written (nothing is written after it)
---@field on_error fun(msg: string)|nil  called once, with write_error, when a write fails
local M = {}
M.__index = M

--- Open (append) the journal in run directory `dir`.
---@param dir string
---@return bomarun.Journal|nil journal, string|nil err
function M.open(dir)
  local path = dir .. "/events.jsonl"
  local kind = host.exists(path)
  if kind and kind ~= "file" then return nil, "journal: cannot open " .. path .. ": it is a " .. kind end
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

-- What a sanitized event could not hold, as one message naming the step.
local function problem_text(ev, problems)
  local parts = {}
  for k, p in ipairs(problems) do
    if k > 3 then
      parts[#parts + 1] = (#problems - 3) .. " more"
      break
    end
    parts[#parts + 1] = p.what .. " at " .. p.path
  end
  local who = ev.step or ev.id
  return string.format("%s%s event: %s cannot be journaled (written as a placeholder)",
    who and ("step " .. tostring(who) .. ": ") or "", tostring(ev.type), table.concat(parts, ", "))
end

-- Stop writing after the first failed write: a torn line stays the last one.
local function write_failed(self, err)
  if self.write_error then return end
  self.write_error = "journal: cannot write " .. self.path .. ": " .. tostring(err)
  if self.f then pcall(self.f.close, self.f) end
  self.f = nil
  if self.on_error then self.on_error(self.write_error) end
end

--- Append an event {type = ..., ...}; `t` (wall time) and `seq` are added.
--- Returns the event as kept: a redacted, encodable copy.  What JSON cannot
--- hold (a function, a cycle) is written as a placeholder and named in the
--- event's `journal_error`.  Never raises: a failed write sets
--- `write_error` (see M.open).
---@param ev table  {type = "...", ...}; gains seq and t
---@return bomarun.JournalEvent
function M:emit(ev)
  self.seq = self.seq + 1
  ev.seq = self.seq
  ev.t = ev.t or host.time()
  local kept, problems = json.sanitize(secret.redact_deep(ev))
  if #problems > 0 then kept.journal_error = problem_text(kept, problems) end
  self.events[#self.events + 1] = kept
  if self.f then
    local ok, line = pcall(json.encode, kept)
    if not ok then   -- sanitized: only out of memory gets here
      line = json.encode({type = "journal_error", seq = kept.seq, t = kept.t,
                          error = "could not encode a " .. tostring(kept.type) .. " event: " .. tostring(line)})
    end
    local wok, werr = self.f:write(secret.redact(line) .. "\n")   -- one write: a kill leaves at most one torn line
    if not wok then write_failed(self, werr) end
  end
  return kept
end

--- Close the journal file (nothing to do for a memory journal).  Returns
--- nil and the error when the journal could not be written or closed.
---@return true|nil ok, string|nil err
function M:close()
  if self.f then
    local f = self.f
    self.f = nil
    local ok, err = f:close()
    if not ok and not self.write_error then
      self.write_error = "journal: cannot write " .. self.path .. ": " .. tostring(err)
      if self.on_error then self.on_error(self.write_error) end
    end
  end
  if self.write_error then return nil, self.write_error end
  return true
end

--- Read every event of a journal file.  A torn last line (the process was
--- killed while writing it) is skipped and reported.
---@param path string  an events.jsonl file
---@return bomarun.JournalEvent[]|nil events, string|nil err, string[] warnings
function M.read(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "journal: cannot read " .. path .. ": " .. tostring(err), {} end
  local text, rerr = f:read("a")   -- nil, "Is a directory" for a directory
  f:close()
  if not text then return nil, "journal: cannot read " .. path .. ": " .. tostring(rerr), {} end
  local events, warnings, n = {}, {}, 0
  for line in text:gmatch("([^\n]*)\n?") do
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
  return events, nil, warnings
end

return M

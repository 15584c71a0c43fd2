--- bomarun.ansible.results: the callback plugin's events turned into
--- results.  The collector tails the plugin's JSON-lines file while Ansible
--- runs and turns each line into an event table, a console and step-log
--- line, a journal event and an on_event call; the rest counts, sums up
--- and describes a finished run.
local json = require "bomarun.json"
local log = require "bomarun.log"
local secret = require "bomarun.secret"

local M = {}

local CONSOLE_MSG = 200        -- characters of a message on the console
local LOG_MSG = 4000           -- ... and in the step log

local STATUS_WORD = {ok = "ok", changed = "changed", skipped = "skipped", failed = "FAILED",
                     unreachable = "UNREACHABLE"}
local STATUS_COLOUR = {ok = "green", changed = "yellow", skipped = "grey", failed = "red", unreachable = "red"}

local function one_line(s, max)
  if s == nil then return nil end
  s = tostring(s):gsub("%s*\n%s*", " | "):gsub("^%s+", ""):gsub("%s+$", "")
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

local function first_line(s, max)
  if s == nil then return nil end
  s = tostring(s):match("^%s*([^\n]*)") or ""
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

local function fmt_duration(d)
  if not d then return "" end
  return string.format(" (%.2fs)", d)
end

local function result_line(ev, colour, max)
  local word = STATUS_WORD[ev.status] or ev.status
  if ev.status == "failed" and ev.ignored then word = "failed (ignored)" end
  local w = string.format("%-11s", word)
  if colour then w = log.paint(STATUS_COLOUR[ev.status] or "bold", w) end
  local line = string.format("%s %s | %s%s", w, ev.host, ev.task or "?", fmt_duration(ev.duration))
  if ev.delegated_to then line = line .. " -> " .. ev.delegated_to end
  local show_msg = ev.status == "failed" or ev.status == "unreachable" or (ev.action and ev.action:match("debug$"))
  if show_msg and ev.msg then
    line = line .. ": " .. (colour and first_line(ev.msg, max) or one_line(ev.msg, max))
  end
  return line
end

local RECAP_KEYS = {"ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"}

--- One host's recap as a console line: "recap HOST: ok=N changed=N ...".
---@param h string
---@param r bomarun.AnsibleRecap
---@return string
function M.recap_line(h, r)
  local parts = {}
  for _, k in ipairs(RECAP_KEYS) do parts[#parts + 1] = k .. "=" .. tostring(r[k] or 0) end
  return string.format("recap %s: %s", h, table.concat(parts, " "))
end

--- The recap counted from the events, for a run killed before its recap.
---@param events bomarun.AnsibleEvent[]
---@return table<string, bomarun.AnsibleRecap>
function M.recap_from_events(events)
  local recap = {}
  for _, ev in ipairs(events) do
    local r = recap[ev.host]
    if not r then
      r = {ok = 0, changed = 0, failed = 0, unreachable = 0, skipped = 0, rescued = 0, ignored = 0}
      recap[ev.host] = r
    end
    if ev.status == "ok" then r.ok = r.ok + 1
    elseif ev.status == "changed" then r.ok = r.ok + 1 r.changed = r.changed + 1
    elseif ev.status == "skipped" then r.skipped = r.skipped + 1
    elseif ev.status == "unreachable" then r.unreachable = r.unreachable + 1
    elseif ev.status == "failed" then
      if ev.ignored then r.ignored = r.ignored + 1 else r.failed = r.failed + 1 end
    end
  end
  return recap
end

--- The recap summed over hosts, and the number of hosts.
---@param recap table<string, bomarun.AnsibleRecap>
---@return bomarun.AnsibleRecap totals
---@return integer hosts
function M.count_totals(recap)
  local t = {ok = 0, changed = 0, failed = 0, unreachable = 0, skipped = 0, rescued = 0, ignored = 0}
  local hosts = 0
  for _, r in pairs(recap) do
    hosts = hosts + 1
    for k in pairs(t) do t[k] = t[k] + (r[k] or 0) end
  end
  return t, hosts
end

--- The events that fail the run (failed and not ignored, or unreachable,
--- where the recap agrees) and those that changed something.
---@param events bomarun.AnsibleEvent[]
---@param recap table<string, bomarun.AnsibleRecap>
---@return bomarun.AnsibleEvent[] failures
---@return bomarun.AnsibleEvent[] changed
function M.failures_and_changes(events, recap)
  local failures, changed = {}, {}
  for _, ev in ipairs(events) do
    local hr = recap[ev.host] or {}
    if ev.status == "unreachable" and (hr.unreachable or 1) > 0 then
      failures[#failures + 1] = ev
    elseif ev.status == "failed" and not ev.ignored and (hr.failed or 1) > 0 then
      failures[#failures + 1] = ev
    elseif ev.status == "changed" then
      changed[#changed + 1] = ev
    end
  end
  return failures, changed
end

-- Collector -------------------------------------------------------------------

-- Strip JSON metatables and nulls so results are plain Lua tables.
local function plain(v)
  if v == json.null then return nil end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = plain(x) end
  return out
end

local EVENT_FIELDS = {"host", "task", "status", "duration", "msg", "play", "action", "changed", "ignored",
                      "rc", "stdout", "stderr", "handler", "delegated_to", "items", "failed_items", "time"}

---@class bomarun.ansible.CollectorConfig
---@field path string           the plugin's events file
---@field prefix string         console and step-log prefix
---@field name string           the run's name
---@field step table|nil        the current runbook step
---@field sink fun(line: string)|nil  the step log
---@field echo boolean          print result lines on the console
---@field on_event fun(ev: bomarun.AnsibleEvent)|nil
---@field evidence string|nil   evidence directory (gets a redacted events.jsonl)

---@class bomarun.ansible.Collector
---@field events bomarun.AnsibleEvent[]
---@field plays string[]
---@field recap table<string, bomarun.AnsibleRecap>|nil  Ansible's, once its stats arrived
---@field no_hosts boolean
---@field callback_error any    what on_event raised, if it did
---@field c bomarun.ansible.CollectorConfig
---@field evidence file*|nil    the evidence copy of the events
---@field offset integer        bytes of the events file read so far
---@field buf string            a partial last line
local Collector = {}
Collector.__index = Collector

--- A collector of the events file c.path.
---@param c bomarun.ansible.CollectorConfig
---@return bomarun.ansible.Collector
function M.collector(c)
  local self = setmetatable({c = c, events = {}, plays = {}, recap = nil, offset = 0, buf = "",
                             no_hosts = false}, Collector)
  self.evidence = c.evidence and io.open(c.evidence .. "/events.jsonl", "ab")
  if self.evidence then self.evidence:setvbuf("line") end
  return self
end

--- Write a line under the run's prefix to the step log and (with echo) the
--- console, `coloured` being the console's version if given.
---@param line string
---@param coloured? string
function Collector:say(line, coloured)
  local c = self.c
  if c.sink then c.sink(c.prefix .. " " .. line) end
  if c.echo then log.console(c.prefix .. " " .. (coloured or line)) end
end

-- A task result: an event table, a line, a journal event, on_event.
---@param ev table  the plugin's decoded "result" object
function Collector:on_result(ev)
  local c = self.c
  local e = {}
  for _, k in ipairs(EVENT_FIELDS) do e[k] = plain(ev[k]) end
  self.events[#self.events + 1] = e
  self:say(result_line(e, false, LOG_MSG), log.colour() and result_line(e, true, CONSOLE_MSG) or
    result_line(e, false, CONSOLE_MSG))
  if c.step then
    c.step:event({type = "ansible_task", run = c.name, host = e.host, task = e.task, status = e.status,
                  duration = e.duration, msg = e.msg, play = e.play, ignored = e.ignored, rc = e.rc})
  end
  if c.on_event and not self.callback_error then
    -- A raising callback is a programmer error: reported after the run
    -- (the tailer task must keep going), and not called again.
    local ok, err = pcall(c.on_event, e)
    if not ok then self.callback_error = err end
  end
end

-- One line of the events file.
---@param raw string
function Collector:handle(raw)
  local ev = json.decode(raw)
  if type(ev) ~= "table" then return end
  if self.evidence then self.evidence:write(secret.redact(raw), "\n") end
  local kind = ev.event
  if kind == "result" then
    self:on_result(ev)
  elseif kind == "stats" then
    self.recap = plain(ev.recap) or {}
  elseif kind == "play" then
    self.plays[#self.plays + 1] = plain(ev.play)
    if self.c.sink then self.c.sink(self.c.prefix .. " play: " .. tostring(plain(ev.play))) end
  elseif kind == "no_hosts" then
    self.no_hosts = true
    self:say("no hosts matched" .. (ev.play and (" (play " .. tostring(plain(ev.play)) .. ")") or ""))
  end
end

--- Read whatever the plugin appended since the last call.
function Collector:pump()
  local f = io.open(self.c.path, "rb")
  if not f then return end
  f:seek("set", self.offset)
  local data = f:read("a")
  f:close()
  if not data or data == "" then return end
  self.offset = self.offset + #data
  self.buf = self.buf .. data
  while true do
    local nl = self.buf:find("\n", 1, true)
    if not nl then break end
    local line = self.buf:sub(1, nl - 1)
    self.buf = self.buf:sub(nl + 1)
    if line ~= "" then self:handle(line) end
  end
end

--- Close the evidence copy of the events.
function Collector:close()
  if self.evidence then self.evidence:close() self.evidence = nil end
end

-- Describe --------------------------------------------------------------------

local function error_lines(stderr)
  -- Ansible's own error ("ERROR! ..."), else the last non-empty stderr line.
  local err = stderr and stderr:match("(ERROR! [^\n]*)")
  if err then return err end
  local last
  for l in (stderr or ""):gmatch("[^\n]+") do
    if l:match("%S") and not l:match("^%[WARNING%]") then last = l end
  end
  return last
end

local function failure_parts(res, parts)
  for _, ev in ipairs(res.failures or {}) do
    if #parts == 5 then
      parts[#parts + 1] = string.format("and %d more", #res.failures - 5)
      break
    end
    if ev.status == "unreachable" then
      parts[#parts + 1] = string.format("host %s unreachable: %s", ev.host, one_line(ev.msg, 300) or "?")
    else
      parts[#parts + 1] = string.format("task '%s' failed on %s: %s", ev.task or "?", ev.host,
        one_line(ev.msg, 300) or "?")
    end
  end
end

local function idempotence_part(res)
  local list = {}
  for i, ev in ipairs(res.changed_tasks or {}) do
    if i > 5 then list[#list + 1] = "..." break end
    list[#list + 1] = string.format("'%s' on %s", ev.task or "?", ev.host)
  end
  return string.format("not idempotent: %d task result%s changed on the second run: %s",
    #(res.changed_tasks or {}), #(res.changed_tasks or {}) == 1 and "" or "s", table.concat(list, ", "))
end

--- Say in one line what a result means for a gate (see ansible.describe).
---@param res bomarun.AnsibleResult
---@return string
function M.describe(res)
  if type(res) ~= "table" then return "ansible: no result" end
  local name = res.name or "ansible"
  local t = res.totals or M.count_totals(res.recap or {})
  local parts = {}
  failure_parts(res, parts)
  if res.timed_out then
    table.insert(parts, 1, string.format("timed out after %g s", res.timeout or 0))
  end
  if res.idempotent == false then parts[#parts + 1] = idempotence_part(res) end
  if #parts == 0 and res.code ~= 0 and not res.timed_out then
    parts[#parts + 1] = string.format("%s exited %s: %s", res.program or "ansible",
      tostring(res.code or ("by signal " .. tostring(res.signal))), error_lines(res.stderr) or "no message")
  end
  if #parts == 0 then
    local _, hosts = M.count_totals(res.recap or {})
    return string.format("%s: no failed and no unreachable hosts (%d host%s; ok=%d changed=%d skipped=%d)%s",
      name, hosts, hosts == 1 and "" or "s", t.ok, t.changed, t.skipped,
      (res.idempotent and "; idempotent: nothing changed on the second run" or "") ..
      (res.no_hosts and "; a play matched no host" or ""))
  end
  return name .. ": " .. table.concat(parts, "; ")
end

return M

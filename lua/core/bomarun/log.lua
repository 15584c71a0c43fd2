--- Console and step-log output, redacted.
---
--- The runbook runner keeps the current step's log writer in task-local
--- storage ("log_sink"); everything a step prints (its own lines, the output
--- of the processes it runs, poll progress) goes to that file as well as,
--- where asked, to the console.
local host = require "bomarun._host"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local M = {}

local tty = host.isatty(1)
local colour = tty and os.getenv("NO_COLOR") == nil and os.getenv("TERM") ~= "dumb"
local in_place = false   -- a progress line is showing and will be overwritten

M.tty = tty

--- Whether console output may use colour (a terminal, and no NO_COLOR).
---@return boolean
function M.colour() return colour end
--- Turn console colour on or off (--no-color turns it off).
---@param on any  truthy: colour on
function M.set_colour(on) colour = on and true or false end

local codes = {red = "31", green = "32", yellow = "33", blue = "34", grey = "90", bold = "1"}

--- Wrap s in an ANSI colour when colour is on.
---@param name "red"|"green"|"yellow"|"blue"|"grey"|"bold"|string  an unknown name leaves s as it is
---@param s string
---@return string
function M.paint(name, s)
  if not colour or not codes[name] then return s end
  return "\27[" .. codes[name] .. "m" .. s .. "\27[0m"
end

local function clear_in_place()
  if in_place then
    host.write(1, "\r\27[K")
    in_place = false
  end
end

--- Print one line to the console.
---@param line string
function M.console(line)
  clear_in_place()
  host.write(1, secret.redact(line) .. "\n")
end

--- Show a progress line: rewritten in place on a terminal, a plain line
--- otherwise.
---@param line string
function M.progress(line)
  line = secret.redact(line)
  if tty then
    host.write(1, "\r\27[K" .. line)
    in_place = true
  else
    host.write(1, line .. "\n")
  end
end

--- End an in-place progress line (keeps what it last said).
function M.progress_done()
  if in_place then
    host.write(1, "\n")
    in_place = false
  end
end

--- The current step's log writer, if any.
---@return fun(line: string)|nil
function M.sink()
  return task.context("log_sink")
end

--- Write to the current step log only.
---@param line string
function M.to_step(line)
  local sink = M.sink()
  if sink then sink(secret.redact(line)) end
end

--- Write to the current step log and the console.
---@param line string
function M.info(line)
  M.to_step(line)
  M.console(line)
end

return M

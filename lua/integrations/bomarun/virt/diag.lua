--- bomarun.virt.diag: what to keep when a VM cycle fails (bomarun.virt
--- re-exports it as virt.diagnostics): the serial console log, the domain
--- XML and state, and, when ssh still reaches the guest, its journal,
--- cloud-init's logs and status, and the nftables ruleset.
local host = require "bomarun._host"
local secret = require "bomarun.secret"
local step = require "bomarun.step"

local M = {}

-- The commands run in the guest when opts.exec is given (name -> command).
M.GUEST_COMMANDS = {
  {"journal.txt", "sudo -n journalctl -b --no-pager -n 2000 || journalctl -b --no-pager -n 2000"},
  {"cloud-init-status.txt", "cloud-init status --long"},
  {"cloud-init.log", "sudo -n cat /var/log/cloud-init.log"},
  {"cloud-init-output.log", "sudo -n cat /var/log/cloud-init-output.log"},
  {"nft-ruleset.txt", "sudo -n nft list ruleset"},
}

local function copy(src, dst)
  local f = io.open(src, "rb")
  if not f then return false end
  local data = f:read("a")
  f:close()
  return host.write_file(dst, secret.redact(data))
end

--- Collect diagnostics into opts.dir: {domain = handle, dir = DIR,
--- serial_log = path?, exec = function(cmd) -> {status=, stdout=, stderr=}?}.
--- Never raises: each item that cannot be had is noted in MISSING.txt.
--- Returns the list of files written.
---@param opts {domain?: bomarun.VirtDomain, dir: string, serial_log?: string, exec?: fun(cmd: string): table|nil}
---@return string[]
function M.collect(opts)
  local dir = opts.dir
  assert(host.mkdir(dir))
  local written, missing = {}, {}
  local function put(name, data)
    local ok = host.write_file(dir .. "/" .. name, secret.redact(data))
    if ok then written[#written + 1] = dir .. "/" .. name end
  end
  local d = opts.domain
  if d then
    local ok, text = pcall(d.xml, d)
    if ok and text then put("domain.xml", text) else missing[#missing + 1] = "domain.xml: " .. tostring(text) end
    local ok2, st, reason = pcall(d.state, d)
    put("domain-state.txt", string.format("%s %s\n", tostring(ok2 and st), tostring(reason)))
  end
  if opts.serial_log then
    if copy(opts.serial_log, dir .. "/console.log") then
      written[#written + 1] = dir .. "/console.log"
    else
      missing[#missing + 1] = "console.log: cannot read " .. opts.serial_log
    end
  end
  if opts.exec then
    for _, c in ipairs(M.GUEST_COMMANDS) do
      local ok, r = pcall(opts.exec, c[2])
      if ok and type(r) == "table" then
        put(c[1], (r.stdout or "") .. ((r.stderr and r.stderr ~= "") and ("\n[stderr]\n" .. r.stderr) or ""))
      else
        missing[#missing + 1] = c[1] .. ": " .. tostring(r)
      end
    end
  else
    missing[#missing + 1] = "guest logs: ssh did not reach the guest"
  end
  if #missing > 0 then put("MISSING.txt", table.concat(missing, "\n") .. "\n") end
  step.event({type = "virt", op = "diagnostics", dir = dir, files = #written})
  return written
end

return M

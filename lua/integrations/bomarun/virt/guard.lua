--- bomarun.virt.guard: ownership, the host lock, the free-memory check and
--- prune (bomarun.virt re-exports them).
local core = require "bomarun._virt"
local host = require "bomarun._host"
local step = require "bomarun.step"
local xml = require "bomarun.virt.xml"

local M = {}

--- The ownership record bomarun writes into what it creates:
--- {run=, runbook=, host=, pid=, created = ISO-8601 UTC} (from opts).
---@param opts? {run?: string, runbook?: string}
---@return table<string, string>
function M.owner(opts)
  opts = opts or {}
  return {run = opts.run or "adhoc", runbook = opts.runbook, host = host.hostname(),
          pid = tostring(host.getpid()), created = os.date("!%Y-%m-%dT%H:%M:%SZ")}
end

---@class bomarun.VirtLock
---@field path string
---@field release fun(self: bomarun.VirtLock)

--- Take the host lock, so two cycles never run on one host at once.  An
--- flock: the kernel releases it if the holder dies.  opts: name (default
--- "host"), dir (default /run/lock, else /tmp), holder (text naming the
--- holder; default pid, run and host).  Returns a lock (release it, or let
--- it be collected or closed), or nil, "virt: ... held by <holder>", "LOCKED".
---@param opts? {name?: string, dir?: string, holder?: string}
---@return bomarun.VirtLock|nil, string|nil err, string|nil code
function M.lock(opts)
  opts = opts or {}
  local dir = opts.dir or (host.exists("/run/lock") and "/run/lock" or "/tmp")
  local path = dir .. "/bomarun-virt-" .. (opts.name or "host") .. ".lock"
  local holder = opts.holder or string.format("pid %d on %s since %s", host.getpid(), host.hostname(),
    os.date("!%Y-%m-%dT%H:%M:%SZ"))
  local l, err, code = core.lock(path, holder)
  if not l then
    if code == "LOCKED" then
      return nil, string.format("virt: the host lock %s is held by %s; one cycle at a time on a host",
        path, err ~= "" and err or "another process"), "LOCKED"
    end
    return nil, "virt: host lock: " .. tostring(err), code
  end
  step.event({type = "virt", op = "lock", path = path})
  return l
end

--- Refuse when the host has less than `mib` MiB of free memory.
---@param c bomarun.VirtConn
---@param mib number
---@return true|nil, string|nil err, string|nil code
function M.check_free_memory(c, mib)
  local n, err, code = c:node()
  if not n then return nil, err, code end
  local free = n.free_memory / 1048576
  if free < mib then
    return nil, string.format("virt: %s (%s) has %d MiB of free memory; %d MiB are needed to boot",
      c.uri, n.hostname, math.floor(free), math.floor(mib)), "NO_MEMORY"
  end
  return true
end

local function under(path, dir)
  return dir and path:sub(1, #dir + 1) == dir .. "/"
end

--- See bomarun.virt Conn:prune.
---@param c bomarun.VirtConn
---@param opts {prefix?: string, run?: string, files?: string, dry_run?: boolean}
---@return table[]|nil, string|nil err, string|nil code
function M.prune(c, opts)
  local prefix = opts.prefix or "bomarun-"
  local removed = {}
  local doms, err, code = c:domains({prefix = prefix})
  if not doms then return nil, err, code end
  local files_dir = opts.files and (host.realpath(opts.files) or opts.files)
  for _, d in ipairs(doms) do
    if d.owner and (not opts.run or d.owner.run == opts.run) then
      removed[#removed + 1] = {kind = "domain", name = d.name, run = d.owner.run}
      if not opts.dry_run then
        local h = assert(c:domain(d.uuid))
        local text = h:xml({inactive = true}) or ""
        if d.active then
          local ok, e2, c2 = h:destroy()
          if not ok and c2 ~= "VIR_ERR_OPERATION_INVALID" then return nil, e2, c2 end
        end
        local ok, e3, c3 = h:undefine({snapshots = true})
        if not ok and c3 ~= "VIR_ERR_NO_DOMAIN" then return nil, e3, c3 end
        for _, f in ipairs(xml.files(text)) do
          if under(f, files_dir) and os.remove(f) then
            removed[#removed + 1] = {kind = "file", name = f, run = d.owner.run}
          end
        end
      end
    end
  end
  local nets = c:networks() or {}
  for _, n in ipairs(nets) do
    if n.name:sub(1, #prefix) == prefix and n.owner and (not opts.run or n.owner.run == opts.run) then
      removed[#removed + 1] = {kind = "network", name = n.name, run = n.owner.run}
      if not opts.dry_run then
        local h = c:network(n.name)
        if n.active then h:destroy() end
        if n.persistent then
          local ok, e4, c4 = h:undefine()
          if not ok then return nil, e4, c4 end
        end
      end
    end
  end
  step.event({type = "virt", op = "prune", uri = c.uri, removed = #removed, dry_run = opts.dry_run or nil})
  return removed
end

return M

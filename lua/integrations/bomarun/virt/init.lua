--- bomarun.virt: libvirt in process (docs/virt.md).
---
---   local virt = require "bomarun.virt"
---   local c = assert(virt.connect{uri = "qemu:///system"})  -- no uri: "test:///default"
---   local d = assert(c:define{name = "vm", memory = 1024, ...})   -- or XML text
---   d:start() ; d:wait_for_state("running", {timeout = 60})
---   d:snapshot{name = "baseline"} ; d:snapshots() ; d:revert("baseline")
---   d:destroy() ; d:undefine{snapshots = true}
---
--- Every call runs on the connection's own worker thread (libvirt only
--- blocks); the task waits, the loop does not.  Failures come back as
--- nil, "virt: what failed against what: why", CODE where CODE is libvirt's
--- error name (VIR_ERR_NO_DOMAIN, ...).  Lifecycle events arrive through
--- libvirt's event loop, so wait_for_state waits for an event, not a poll.
--- libvirt itself is loaded the first time this module is required.
local core = require "bomarun._virt"
local task = require "bomarun.task"
local step = require "bomarun.step"
local xml = require "bomarun.virt.xml"
local images = require "bomarun.virt.image"
local guard = require "bomarun.virt.guard"
local diag = require "bomarun.virt.diag"

local M = {}

M.DEFAULT_URI = "test:///default"
M.OWNER_NS = xml.OWNER_NS
M.xml = xml

M.STATES = {[0] = "nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended"}
M.EVENTS = {[0] = "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
            "pmsuspended", "crashed"}
local SHUTDOWN_MODES = {acpi = 1, agent = 2, initctl = 4, signal = 8, paravirt = 16}
local ADDRESS_SOURCES = {lease = 0, agent = 1, arp = 2}
local UNDEFINE_MANAGED_SAVE, UNDEFINE_SNAPSHOTS, UNDEFINE_NVRAM, UNDEFINE_CHECKPOINTS = 1, 2, 4, 16
local SNAPSHOT_DISK_ONLY, SNAPSHOT_ATOMIC = 16, 128
local XML_SECURE, XML_INACTIVE = 1, 2
local AFFECT_CONFIG = 2

---@class bomarun.VirtConn
---@field uri string
---@field hostname string
local Conn = {}
Conn.__index = Conn

---@class bomarun.VirtDomain
---@field name string
---@field uuid string
---@field conn bomarun.VirtConn
local Domain = {}
Domain.__index = Domain

---@class bomarun.VirtNetwork
---@field name string
---@field conn bomarun.VirtConn
local Network = {}
Network.__index = Network

---@class bomarun.VirtPool
---@field name string
---@field conn bomarun.VirtConn
local Pool = {}
Pool.__index = Pool

-- One call on the worker; a failure gets its context: what was attempted,
-- against which object, on which connection.
local function call(c, what, op, sub, flags, n, ...)
  if not c.core then error("virt: " .. what .. ": the connection to " .. c.uri .. " is closed", 3) end
  local r = table.pack(c.core:call(op, sub, flags or 0, n or 0, ...))
  if r[1] == nil then
    return nil, string.format("virt: %s on %s: %s", what, c.uri, tostring(r[2])), r[3]
  end
  return table.unpack(r, 1, r.n)
end

--- Open a connection (`uri` defaults to "test:///default", which needs no daemon).
---@param opts? {uri?: string, readonly?: boolean}
---@return bomarun.VirtConn|nil, string|nil err, string|nil code
function M.connect(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("virt.connect: expected a table of options", 2) end
  local uri = opts.uri or M.DEFAULT_URI
  local handle = core.new()
  local actual, host_or_err, code = handle:open(uri, opts.readonly and true or false)
  if not actual then
    handle:close()
    return nil, string.format("virt: connect to %s: %s", uri, tostring(host_or_err)), code
  end
  local c = setmetatable({core = handle, uri = actual, hostname = host_or_err, requested = uri}, Conn)
  step.event({type = "virt", op = "connect", uri = actual})
  return c
end

--- Close the connection (domains it defined stay defined).
function Conn:close()
  if self.core then self.core:close(); self.core = nil end
end
Conn.__close = Conn.close

local function domain_handle(c, name, uuid)
  return setmetatable({conn = c, name = name, uuid = uuid}, Domain)
end

--- Define a domain from XML text or a table (bomarun.virt.xml.domain).
--- A table's `owner` (or opts.owner) becomes bomarun's ownership metadata.
---@param def string|table
---@param opts? {owner?: table}
---@return bomarun.VirtDomain|nil, string|nil err, string|nil code
function Conn:define(def, opts)
  local text = def
  local owner = (opts or {}).owner
  if type(def) == "table" then
    if owner and not def.owner then
      local t = {}
      for k, v in pairs(def) do t[k] = v end
      t.owner = owner
      def = t
    end
    text = xml.domain(def)
  elseif type(def) ~= "string" then
    error("virt: define expects domain XML text or a table", 2)
  end
  local what = "define domain" .. (type(def) == "table" and (" '" .. def.name .. "'") or "")
  local name, uuid_or_err, code = call(self, what, "define", nil, 0, 0, text)
  if not name then return nil, uuid_or_err, code end
  local d = domain_handle(self, name, uuid_or_err)
  if owner and type(def) == "string" then
    local ok, err, c2 = d:set_owner(owner)
    if not ok then return nil, err, c2 end
  end
  step.event({type = "virt", op = "define", domain = name, uuid = uuid_or_err})
  return d
end

--- A handle on an existing domain, by name or UUID.
---@param name string
---@return bomarun.VirtDomain|nil, string|nil err, string|nil code
function Conn:domain(name)
  local n, uuid, code = call(self, "look up domain '" .. tostring(name) .. "'", "lookup", nil, 0, 0, name)
  if not n then return nil, uuid, code end
  return domain_handle(self, n, uuid)
end

--- Every domain: { {name=, uuid=, state=, active=, persistent=, owner=}, ... }
--- (owner: bomarun's ownership metadata, when the domain carries it).
---@param opts? {prefix?: string}
---@return table[]|nil, string|nil err, string|nil code
function Conn:domains(opts)
  local rows, err, code = call(self, "list domains", "list", nil, 0, 0, xml.OWNER_NS)
  if not rows then return nil, err, code end
  local out = {}
  local prefix = (opts or {}).prefix
  for _, r in ipairs(rows) do
    if not prefix or r.name:sub(1, #prefix) == prefix then
      out[#out + 1] = {name = r.name, uuid = r.uuid, state = M.STATES[r.state] or tostring(r.state),
                       active = r.active == 1, persistent = r.persistent == 1,
                       owner = xml.parse_owner(r.metadata, true)}
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

--- The host: {free_memory = bytes, memory_kib=, cpus=, hostname=, libvirt_version=}.
---@return table|nil, string|nil err, string|nil code
function Conn:node()
  return call(self, "read the host's figures", "node", nil)
end

--- Sequence number of the last lifecycle event this connection saw.
---@return integer
function Conn:event_seq() return self.core and self.core:event_seq() or 0 end

--- Lifecycle events after `seq` (at most the last 64):
--- { {seq=, name=, uuid=, event = "started"|..., detail=}, ... }.
---@param seq integer
---@return table[]
function Conn:events_since(seq)
  local out = {}
  for _, e in ipairs(self.core and self.core:events_since(seq) or {}) do
    e.event = M.EVENTS[e.event] or tostring(e.event)
    out[#out + 1] = e
  end
  return out
end

--- Wait (at most `timeout` seconds) for a lifecycle event after `seq`;
--- returns the new sequence number, or nil, msg, "TIMEOUT".
---@param seq integer
---@param timeout number
---@return integer|nil, string|nil err, string|nil code
function Conn:wait_event(seq, timeout)
  local h = self.core
  if not h then error("virt: wait_event: the connection is closed", 2) end
  local n, err, code = task.timeout(timeout, h.wait_event, h, seq)
  if n == nil then
    return nil, code == "TIMEOUT" and ("virt: no lifecycle event within " .. timeout .. " s") or err, code
  end
  return n
end

-- Domains ---------------------------------------------------------------

local function dcall(d, what, sub, flags, n, ...)
  return call(d.conn, what .. " domain '" .. d.name .. "'", "domain", sub, flags, n, d.uuid, ...)
end

local function journaled(d, op, ok, err, code)
  step.event({type = "virt", op = op, domain = d.name, ok = ok and true or false, error = err, code = code})
  return ok, err, code
end

--- Start (boot) the domain.
---@return true|nil, string|nil err, string|nil code
function Domain:start() return journaled(self, "start", dcall(self, "start", "start")) end

--- Ask the guest to shut down: mode "acpi" (default) or "agent".
---@param opts? {mode?: string}
---@return true|nil, string|nil err, string|nil code
function Domain:shutdown(opts)
  local mode = (opts or {}).mode
  local flags = mode and SHUTDOWN_MODES[mode]
  if mode and not flags then error("virt: shutdown mode must be acpi, agent, initctl, signal or paravirt", 2) end
  return journaled(self, "shutdown", dcall(self, "shut down", "shutdown", flags or 0))
end

--- Reboot through the guest: mode "acpi" (default) or "agent".
---@param opts? {mode?: string}
---@return true|nil, string|nil err, string|nil code
function Domain:reboot(opts)
  local mode = (opts or {}).mode
  local flags = mode and SHUTDOWN_MODES[mode]
  if mode and not flags then error("virt: reboot mode must be acpi, agent, initctl, signal or paravirt", 2) end
  return journaled(self, "reboot", dcall(self, "reboot", "reboot", flags or 0))
end

--- Hard reset (the reset button).
---@return true|nil, string|nil err, string|nil code
function Domain:reset() return journaled(self, "reset", dcall(self, "reset", "reset")) end

--- Power off at once (`graceful = true`: SIGTERM to qemu first).
---@param opts? {graceful?: boolean}
---@return true|nil, string|nil err, string|nil code
function Domain:destroy(opts)
  return journaled(self, "destroy", dcall(self, "destroy", "destroy", (opts or {}).graceful and 1 or 0))
end

--- Undefine; by default with snapshot and checkpoint metadata, managed save
--- and nvram, so nothing of it is left in libvirt.
---@param opts? {snapshots?: boolean, nvram?: boolean, managed_save?: boolean}
---@return true|nil, string|nil err, string|nil code
function Domain:undefine(opts)
  opts = opts or {}
  local flags = 0
  if opts.snapshots ~= false then flags = flags | UNDEFINE_SNAPSHOTS | UNDEFINE_CHECKPOINTS end
  if opts.nvram ~= false then flags = flags | UNDEFINE_NVRAM end
  if opts.managed_save ~= false then flags = flags | UNDEFINE_MANAGED_SAVE end
  -- Drivers refuse flags they do not know (the test driver: checkpoints,
  -- nvram) with VIR_ERR_INVALID_ARG: fall back to the ones they do.
  local ok, err, code
  for _, f in ipairs({flags, flags & ~(UNDEFINE_CHECKPOINTS | UNDEFINE_NVRAM),
                      flags & (UNDEFINE_SNAPSHOTS | UNDEFINE_MANAGED_SAVE)}) do
    ok, err, code = dcall(self, "undefine", "undefine", f)
    if ok or code ~= "VIR_ERR_INVALID_ARG" then break end
  end
  return journaled(self, "undefine", ok, err, code)
end

--- Pause the guest's vCPUs.
---@return true|nil, string|nil err, string|nil code
function Domain:suspend() return journaled(self, "suspend", dcall(self, "suspend", "suspend")) end

--- Resume a paused guest.
---@return true|nil, string|nil err, string|nil code
function Domain:resume() return journaled(self, "resume", dcall(self, "resume", "resume")) end

--- The state: "running", "shutoff", "paused", ... and libvirt's reason code.
---@return string|nil state, integer|string|nil reason_or_err, string|nil code
function Domain:state()
  local s, reason, code = dcall(self, "read the state of", "state")
  if not s then return nil, reason, code end
  return M.STATES[s] or tostring(s), reason
end

--- {state=, max_memory_kib=, memory_kib=, vcpus=, cpu_time_ns=, id=}.
---@return table|nil, string|nil err, string|nil code
function Domain:info()
  local t, err, code = dcall(self, "read the info of", "info")
  if not t then return nil, err, code end
  t.state = M.STATES[t.state] or tostring(t.state)
  return t
end

--- The domain XML (`inactive = true`: the persistent definition; secure: with secrets).
---@param opts? {inactive?: boolean, secure?: boolean}
---@return string|nil, string|nil err, string|nil code
function Domain:xml(opts)
  opts = opts or {}
  local flags = (opts.inactive and XML_INACTIVE or 0) | (opts.secure and XML_SECURE or 0)
  local text, err, code = dcall(self, "read the XML of", "xml", flags)
  return text, err, code
end

--- Write bomarun's ownership metadata into the (persistent) definition.
---@param owner table<string, any>
---@return true|nil, string|nil err, string|nil code
function Domain:set_owner(owner)
  return dcall(self, "set ownership metadata on", "set_metadata", AFFECT_CONFIG, 0,
    xml.owner_element(owner, true), xml.OWNER_KEY, xml.OWNER_NS)
end

--- bomarun's ownership metadata, or nil when the domain does not carry it.
---@return table|nil
function Domain:owner()
  local text = dcall(self, "read metadata of", "get_metadata", 0, 0, xml.OWNER_NS)
  return xml.parse_owner(text, true)
end

--- Wait until the domain is in `state` ("running", "shutoff", ... or
--- "undefined"), woken by libvirt's lifecycle events; a re-read every 10 s
--- at most covers an event a remote connection lost.
---@param want string
---@param opts? {timeout?: number}
---@return true|nil, string|nil err, string|nil code
function Domain:wait_for_state(want, opts)
  local timeout = (opts or {}).timeout or 60
  local c = self.conn
  local start = task.now()
  local deadline = start + timeout
  local last
  while true do
    local seq = c:event_seq()
    local st, err, code = self:state()
    if not st then
      if code == "VIR_ERR_NO_DOMAIN" and want == "undefined" then st = "undefined"
      else return nil, err, code end
    end
    if st ~= last then
      step.event({type = "virt", op = "state", domain = self.name, state = st, want = want,
                  elapsed = task.now() - start})
      last = st
    end
    if st == want then return true end
    local left = deadline - task.now()
    if left <= 0 then
      return nil, string.format("virt: domain '%s' on %s did not reach state '%s' within %g s (it is '%s')",
        self.name, c.uri, want, timeout, st), "TIMEOUT"
    end
    c:wait_event(seq, math.min(left, 10))
  end
end

--- Addresses of the guest's interfaces: { {ip=, mac=, iface=, prefix=, family=}, ... }.
--- source: "lease" (libvirt's DHCP), "agent" (qemu-guest-agent), "arp", or
--- "any" (the default): each in turn, and last the loopback forwards of a
--- user-mode NIC ({ip = "127.0.0.1", port = 2222, guest_port = 22, source = "forward"}).
---@param opts? {source?: string}
---@return table[]|nil, string|nil err, string|nil code
function Domain:addresses(opts)
  local source = (opts or {}).source or "any"
  local order = source == "any" and {"lease", "agent", "arp", "forward"} or {source}
  local last_err, last_code
  for _, s in ipairs(order) do
    if s == "forward" then
      local text, err, code = self:xml()
      if not text then return nil, err, code end
      local out = {}
      for _, f in ipairs(xml.forwards(text)) do
        out[#out + 1] = {ip = f.host, port = f.port, guest_port = f.guest, source = "forward"}
      end
      if #out > 0 or source == "forward" then return out end
    else
      local n = ADDRESS_SOURCES[s]
      if not n then error("virt: addresses source must be lease, agent, arp, forward or any", 2) end
      local rows, err, code = dcall(self, "read " .. s .. " addresses of", "addresses", 0, n)
      if rows then
        local out = {}
        for _, r in ipairs(rows) do
          out[#out + 1] = {ip = r.ip, mac = r.mac, iface = r.iface, prefix = r.prefix,
                           family = r.family == 1 and "ipv6" or "ipv4", source = s}
        end
        if #out > 0 or source ~= "any" then return out end
      elseif source ~= "any" then
        return nil, err, code
      else
        last_err, last_code = err, code
      end
    end
  end
  if last_err then return nil, last_err, last_code end
  return {}
end

--- Take a snapshot: {name=, description=, disk_only = false}. Returns
--- {name=, created=} (created: seconds since the epoch, libvirt's own).
---@param opts? {name?: string, description?: string, disk_only?: boolean}
---@return table|nil, string|nil err, string|nil code
function Domain:snapshot(opts)
  opts = opts or {}
  local flags = opts.disk_only and (SNAPSHOT_DISK_ONLY | SNAPSHOT_ATOMIC) or 0
  local name, err, code = dcall(self, "snapshot", "snapshot_create", flags, 0, xml.snapshot(opts))
  if not name then return journaled(self, "snapshot", nil, err, code) end
  step.event({type = "virt", op = "snapshot", domain = self.name, snapshot = name})
  for _, s in ipairs(self:snapshots() or {}) do
    if s.name == name then return s end
  end
  return {name = name}
end

--- The domain's snapshots, oldest first:
--- { {name=, created=, state=, description=, current=, disk_only=}, ... }.
---@return table[]|nil, string|nil err, string|nil code
function Domain:snapshots()
  local rows, err, code = dcall(self, "list snapshots of", "snapshot_list")
  if not rows then return nil, err, code end
  local out = {}
  local parent_of = {}
  for _, r in ipairs(rows) do
    local memory = r.xml:match("<memory snapshot='(%w+)'")
    parent_of[r.name] = r.xml:match("<parent>%s*<name>([^<]*)</name>")
    out[#out + 1] = {name = r.name, created = tonumber(xml.text(r.xml, "creationTime")),
                     state = xml.text(r.xml, "state"), description = xml.text(r.xml, "description"),
                     current = r.current == 1, disk_only = memory == "no" and r.xml:find("snapshot='external'") ~= nil}
  end
  -- Oldest first; within one second, a parent before its children.
  local function depth(n)
    local k = 0
    while parent_of[n] and k < #rows do n = parent_of[n]; k = k + 1 end
    return k
  end
  for _, s in ipairs(out) do s.depth = depth(s.name) end
  table.sort(out, function(a, b)
    if (a.created or 0) ~= (b.created or 0) then return (a.created or 0) < (b.created or 0) end
    if a.depth ~= b.depth then return a.depth < b.depth end
    return a.name < b.name
  end)
  for _, s in ipairs(out) do s.depth = nil end
  return out
end

--- Revert to a snapshot by name.
---@param name string
---@return true|nil, string|nil err, string|nil code
function Domain:revert(name)
  return journaled(self, "revert", dcall(self, "revert to snapshot '" .. name .. "' of", "snapshot_revert", 0, 0, name))
end

--- Delete a snapshot by name.
---@param name string
---@return true|nil, string|nil err, string|nil code
function Domain:delete_snapshot(name)
  return journaled(self, "delete_snapshot",
    dcall(self, "delete snapshot '" .. name .. "' of", "snapshot_delete", 0, 0, name))
end

-- Networks --------------------------------------------------------------

--- Define a network from XML or a table (bomarun.virt.xml.network).
---@param def string|table
---@return bomarun.VirtNetwork|nil, string|nil err, string|nil code
function Conn:network_define(def)
  local text = type(def) == "table" and xml.network(def) or def
  local name, err, code = call(self, "define network", "network", "define", 0, 0, text)
  if not name then return nil, err, code end
  return setmetatable({conn = self, name = name}, Network)
end

--- A handle on a network by name (not checked until used).
---@param name string
---@return bomarun.VirtNetwork
function Conn:network(name) return setmetatable({conn = self, name = name}, Network) end

--- Every network: { {name=, uuid=, active=, persistent=, owner=}, ... }.
---@return table[]|nil, string|nil err, string|nil code
function Conn:networks()
  local rows, err, code = call(self, "list networks", "network", "list")
  if not rows then return nil, err, code end
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = {name = r.name, uuid = r.uuid, active = r.active == 1, persistent = r.persistent == 1,
                     owner = xml.parse_owner(r.xml)}
  end
  return out
end

local function ncall(n, what, sub)
  return call(n.conn, what .. " network '" .. n.name .. "'", "network", sub, 0, 0, n.name)
end
--- Start the network.
---@return true|nil, string|nil err, string|nil code
function Network:start() return ncall(self, "start", "start") end
--- Stop the network.
---@return true|nil, string|nil err, string|nil code
function Network:destroy() return ncall(self, "destroy", "destroy") end
--- Remove the network's definition.
---@return true|nil, string|nil err, string|nil code
function Network:undefine() return ncall(self, "undefine", "undefine") end
--- The network's XML.
---@return string|nil, string|nil err, string|nil code
function Network:xml() return ncall(self, "read the XML of", "xml") end
--- DHCP leases: { {ip=, mac=, hostname=, iface=, expiry=, prefix=}, ... }.
---@return table[]|nil, string|nil err, string|nil code
function Network:leases() return ncall(self, "read the DHCP leases of", "leases") end

-- Storage pools and volumes ---------------------------------------------

--- Define a pool from XML or a table (bomarun.virt.xml.pool).
---@param def string|table
---@return bomarun.VirtPool|nil, string|nil err, string|nil code
function Conn:pool_define(def)
  local text = type(def) == "table" and xml.pool(def) or def
  local name, err, code = call(self, "define storage pool", "pool", "define", 0, 0, text)
  if not name then return nil, err, code end
  return setmetatable({conn = self, name = name}, Pool)
end

--- A handle on a pool by name.
---@param name string
---@return bomarun.VirtPool
function Conn:pool(name) return setmetatable({conn = self, name = name}, Pool) end

--- Every pool: { {name=, uuid=, active=, persistent=}, ... }.
---@return table[]|nil, string|nil err, string|nil code
function Conn:pools()
  local rows, err, code = call(self, "list storage pools", "pool", "list")
  if not rows then return nil, err, code end
  for _, r in ipairs(rows) do
    r.path = xml.text(r.xml, "path")
    r.active, r.persistent, r.xml = r.active == 1, r.persistent == 1, nil
  end
  return rows
end

local function pcall_(p, what, sub, ...)
  return call(p.conn, what .. " storage pool '" .. p.name .. "'", "pool", sub, 0, 0, p.name, ...)
end
--- Build (create the directory of) the pool.
---@return true|nil, string|nil err, string|nil code
function Pool:build() return pcall_(self, "build", "build") end
--- Start the pool.
---@return true|nil, string|nil err, string|nil code
function Pool:start() return pcall_(self, "start", "start") end
--- Stop the pool.
---@return true|nil, string|nil err, string|nil code
function Pool:destroy() return pcall_(self, "stop", "destroy") end
--- Remove the pool's definition.
---@return true|nil, string|nil err, string|nil code
function Pool:undefine() return pcall_(self, "undefine", "undefine") end
--- Rescan the pool's volumes.
---@return true|nil, string|nil err, string|nil code
function Pool:refresh() return pcall_(self, "refresh", "refresh") end
--- Volumes: { {name=, path=, capacity=, allocation=}, ... }.
---@return table[]|nil, string|nil err, string|nil code
function Pool:volumes() return pcall_(self, "list volumes of", "vol_list") end
--- Create a volume from XML or a table (bomarun.virt.xml.volume); returns its path.
---@param def string|table
---@return string|nil path, string|nil err, string|nil code
function Pool:create_volume(def)
  local text = type(def) == "table" and xml.volume(def) or def
  local path, err, code = pcall_(self, "create a volume in", "vol_create", text)
  return path, err, code
end
--- Delete a volume by name.
---@param name string
---@return true|nil, string|nil err, string|nil code
function Pool:delete_volume(name) return pcall_(self, "delete volume '" .. name .. "' in", "vol_delete", name) end

-- Guards, images, diagnostics (their own parts) -------------------------

--- Refuse to boot when the host has less than `mib` MiB free.
---@param mib number
---@return true|nil, string|nil err, string|nil code
function Conn:check_free_memory(mib) return guard.check_free_memory(self, mib) end

--- Remove what bomarun created: domains (destroyed, undefined with their
--- snapshots) and networks whose ownership metadata says so, and nothing
--- else.  opts: prefix (name prefix, default "bomarun-"), run (only that
--- run's), files (also delete the domain's files under this directory),
--- dry_run.  Returns the list of {kind=, name=, reason=} removed (or that
--- would be).
---@param opts? {prefix?: string, run?: string, files?: string, dry_run?: boolean}
---@return table[]|nil, string|nil err, string|nil code
function Conn:prune(opts) return guard.prune(self, opts or {}) end

M.lock = guard.lock
M.owner = guard.owner
M.image = images.image
M.overlay = images.overlay
M.seed = images.seed
M.diagnostics = diag.collect

return M

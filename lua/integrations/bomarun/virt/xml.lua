--- bomarun.virt.xml: libvirt XML from Lua tables (domains, networks, pools,
--- volumes, snapshots) and the few readings of XML the module needs.
---
--- A domain table:
---   {name = "vm", memory = 1024 (MiB), vcpus = 2, type = "qemu" | "kvm",
---    tcg_cache = 256 (MiB, TCG translation cache; qemu only),
---    kernel = path, initrd = path, cmdline = "root=/dev/vda console=ttyS0",
---    disks = { {path = "vm.qcow2", format = "qcow2", target = "vda"},
---              {path = "seed.iso", device = "cdrom", readonly = true} },
---    nics = { {type = "user", forward = {host = "127.0.0.1", port = 2222, guest = 22}},
---             {type = "network", network = "default", mac = "52:54:00:..."} },
---    serial_log = "/path/console.log", agent = true, machine = "pc",
---    run_as_root = false (a static DAC label: qemu as root, no relabelling),
---    description = "...", owner = {run = "...", runbook = "...", created = "..."}}
local M = {}

--- The namespace of the ownership metadata bomarun writes into every object
--- it creates (and the only thing prune trusts).
M.OWNER_NS = "https://bomarun.invalid/xmlns/virt/1"
M.OWNER_KEY = "bomarun"

--- Escape text for an XML attribute or element.
---@param s any
---@return string
function M.escape(s)
  return (tostring(s):gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                         ['"'] = "&quot;", ["'"] = "&apos;"}))
end
local esc = M.escape

--- The ownership element (libvirt metadata), from {run=, runbook=, created=, ...}.
--- `bare`: without the namespace (libvirt's metadata API adds it from its
--- key and uri arguments).
---@param owner table<string, any>
---@param bare? boolean
---@return string
function M.owner_element(owner, bare)
  local keys = {}
  for k in pairs(owner) do keys[#keys + 1] = k end
  table.sort(keys)
  local attrs = {}
  for _, k in ipairs(keys) do attrs[#attrs + 1] = string.format('%s="%s"', k, esc(owner[k])) end
  if bare then return string.format("<owner %s/>", table.concat(attrs, " ")) end
  return string.format('<bomarun:owner xmlns:bomarun="%s" %s/>', M.OWNER_NS, table.concat(attrs, " "))
end

--- Parse the ownership element back into a table (nil if absent).  `queried`:
--- the text came from libvirt's metadata API asked for OWNER_NS (which
--- returns the element without its namespace); otherwise the namespace must
--- be declared in the text (a whole object's XML).
---@param xml string|nil
---@param queried? boolean
---@return table<string, string>|nil
function M.parse_owner(xml, queried)
  if type(xml) ~= "string" then return nil end
  local body = xml:match("<[%w_]*:?owner%s([^>]*)/?>")
  if not body or not (queried or xml:find(M.OWNER_NS, 1, true)) then return nil end
  local t = {}
  for k, v in body:gmatch('([%w_]+)="([^"]*)"') do
    if not k:match("^xmlns") then
      t[k] = v:gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&amp;", "&")
    end
  end
  return t
end

local function disk_xml(d, i)
  local device = d.device or "disk"
  local target = d.target or (device == "cdrom" and "hdc" or ("vd" .. string.char(96 + i)))
  local bus = d.bus or (target:match("^vd") and "virtio" or (target:match("^hd") and "ide" or "sata"))
  local format = d.format or (d.path:match("%.iso$") and "raw" or "qcow2")
  local out = {string.format("    <disk type='file' device='%s'>", device),
               string.format("      <driver name='qemu' type='%s'/>", format),
               string.format("      <source file='%s'/>", esc(d.path)),
               string.format("      <target dev='%s' bus='%s'/>", target, bus)}
  if d.readonly or device == "cdrom" then out[#out + 1] = "      <readonly/>" end
  out[#out + 1] = "    </disk>"
  return table.concat(out, "\n")
end

local function check_forward(f)
  local host, port, guest = f.host or "127.0.0.1", f.port, f.guest or 22
  if not tostring(host):match("^127%.") and host ~= "::1" then
    error("virt: a user-mode forward listens on loopback only (got host " .. tostring(host) .. ")", 4)
  end
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then
    error("virt: nics[].forward.port must be a TCP port (1-65535)", 4)
  end
  return host, port, guest
end

--- The domain XML for a table (see the module comment).
---@param t table
---@return string
function M.domain(t)
  if type(t.name) ~= "string" or t.name == "" then error("virt: a domain table needs a name", 3) end
  local kind = t.type or "qemu"
  if kind ~= "qemu" and kind ~= "kvm" then error("virt: type must be \"qemu\" or \"kvm\"", 3) end
  local out = {}
  local function add(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local cmdline_args = {}
  add("<domain type='%s' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>", kind)
  add("  <name>%s</name>", esc(t.name))
  if t.uuid then add("  <uuid>%s</uuid>", esc(t.uuid)) end
  if t.description then add("  <description>%s</description>", esc(t.description)) end
  if t.owner then add("  <metadata>%s</metadata>", M.owner_element(t.owner)) end
  add("  <memory unit='MiB'>%d</memory>", t.memory or 512)
  add("  <vcpu>%d</vcpu>", t.vcpus or 1)
  add("  <os>")
  add("    <type arch='%s' machine='%s'>hvm</type>", t.arch or "x86_64", t.machine or "pc")
  if t.kernel then
    add("    <kernel>%s</kernel>", esc(t.kernel))
    if t.initrd then add("    <initrd>%s</initrd>", esc(t.initrd)) end
    add("    <cmdline>%s</cmdline>", esc(t.cmdline or "root=/dev/vda rw console=ttyS0"))
  else
    add("    <boot dev='hd'/>")
  end
  add("  </os>")
  add("  <features><acpi/><apic/>%s</features>",
    (kind == "qemu" and t.tcg_cache) and string.format("<tcg><tb-cache unit='MiB'>%d</tb-cache></tcg>", t.tcg_cache) or "")
  if kind == "kvm" then add("  <cpu mode='host-passthrough'/>") end
  add("  <on_poweroff>destroy</on_poweroff>")
  add("  <on_reboot>restart</on_reboot>")
  add("  <on_crash>destroy</on_crash>")
  add("  <devices>")
  for i, d in ipairs(t.disks or {}) do
    if type(d.path) ~= "string" then error("virt: disks[" .. i .. "] needs a path", 3) end
    out[#out + 1] = disk_xml(d, i)
  end
  local nuser = 0
  for i, n in ipairs(t.nics or {}) do
    local kind_n = n.type or "network"
    if kind_n == "user" then
      -- libvirt 9 ignores <portForward> on type='user' and rejects passt:
      -- qemu's own user-mode netdev, restricted, with a loopback forward.
      local id = "bmnet" .. nuser
      nuser = nuser + 1
      local netdev = "user,id=" .. id .. ",restrict=" .. (n.restrict == false and "off" or "on")
      if n.forward then
        local host, port, guest = check_forward(n.forward)
        netdev = netdev .. string.format(",hostfwd=tcp:%s:%d-:%d", host, port, guest)
      end
      -- A PCI slot of its own, clear of the ones libvirt assigns.
      local dev = string.format("virtio-net-pci,netdev=%s,bus=pci.0,addr=0x%x", id, 0x1e - nuser + 1)
        .. (n.mac and (",mac=" .. n.mac) or "")
      cmdline_args[#cmdline_args + 1] = "-netdev"
      cmdline_args[#cmdline_args + 1] = netdev
      cmdline_args[#cmdline_args + 1] = "-device"
      cmdline_args[#cmdline_args + 1] = dev
    elseif kind_n == "network" then
      add("    <interface type='network'>")
      add("      <source network='%s'/>", esc(n.network or "default"))
      if n.mac then add("      <mac address='%s'/>", esc(n.mac)) end
      add("      <model type='virtio'/>")
      add("    </interface>")
    else
      error("virt: nics[" .. i .. "].type must be \"user\" or \"network\"", 3)
    end
  end
  if t.serial_log then
    add("    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>", esc(t.serial_log))
    add("    <console type='file'><source path='%s' append='on'/><target type='serial' port='0'/></console>",
      esc(t.serial_log))
  else
    add("    <serial type='pty'><target port='0'/></serial>")
  end
  if t.agent ~= false then
    add("    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>")
  end
  add("    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>")
  add("    <memballoon model='none'/>")
  add("  </devices>")
  if t.run_as_root then
    -- qemu as root, files not relabelled: images under /root stay readable
    -- (a test machine without AppArmor/SELinux; docs/virt.md).
    add("  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>")
  end
  if #cmdline_args > 0 then
    add("  <qemu:commandline>")
    for _, a in ipairs(cmdline_args) do add("    <qemu:arg value='%s'/>", esc(a)) end
    add("  </qemu:commandline>")
  end
  add("</domain>")
  return table.concat(out, "\n")
end

--- A NAT network's XML: {name=, bridge=, ip=, netmask=, dhcp = {start=, ["end"]=}, owner=}.
---@param t table
---@return string
function M.network(t)
  if type(t.name) ~= "string" then error("virt: a network table needs a name", 3) end
  local out = {"<network>", "  <name>" .. esc(t.name) .. "</name>"}
  if t.owner then out[#out + 1] = "  <metadata>" .. M.owner_element(t.owner) .. "</metadata>" end
  if t.forward ~= false then out[#out + 1] = "  <forward mode='" .. esc(t.forward or "nat") .. "'/>" end
  if t.bridge then out[#out + 1] = "  <bridge name='" .. esc(t.bridge) .. "'/>" end
  if t.ip then
    out[#out + 1] = string.format("  <ip address='%s' netmask='%s'>", esc(t.ip), esc(t.netmask or "255.255.255.0"))
    if t.dhcp then
      out[#out + 1] = string.format("    <dhcp><range start='%s' end='%s'/></dhcp>", esc(t.dhcp.start),
        esc(t.dhcp["end"]))
    end
    out[#out + 1] = "  </ip>"
  end
  out[#out + 1] = "</network>"
  return table.concat(out, "\n")
end

--- A directory pool's XML: {name=, path=}.
---@param t table
---@return string
function M.pool(t)
  if type(t.name) ~= "string" or type(t.path) ~= "string" then
    error("virt: a pool table needs a name and a path", 3)
  end
  return string.format("<pool type='dir'>\n  <name>%s</name>\n  <target><path>%s</path></target>\n</pool>",
    esc(t.name), esc(t.path))
end

--- A volume's XML: {name=, capacity = bytes, format = "qcow2", backing = path, backing_format=}.
---@param t table
---@return string
function M.volume(t)
  local out = {"<volume>", "  <name>" .. esc(t.name) .. "</name>",
               string.format("  <capacity unit='bytes'>%d</capacity>", t.capacity or 0),
               "  <target><format type='" .. esc(t.format or "qcow2") .. "'/></target>"}
  if t.backing then
    out[#out + 1] = string.format("  <backingStore><path>%s</path><format type='%s'/></backingStore>",
      esc(t.backing), esc(t.backing_format or "qcow2"))
  end
  out[#out + 1] = "</volume>"
  return table.concat(out, "\n")
end

--- A snapshot's XML: {name=, description=, disk_only=}.
---@param t table
---@return string
function M.snapshot(t)
  local out = {"<domainsnapshot>"}
  if t.name then out[#out + 1] = "  <name>" .. esc(t.name) .. "</name>" end
  if t.description then out[#out + 1] = "  <description>" .. esc(t.description) .. "</description>" end
  out[#out + 1] = "</domainsnapshot>"
  return table.concat(out, "\n")
end

--- The text of the first <tag>...</tag> in xml (unescaped), or nil.
---@param xml string
---@param tag string
---@return string|nil
function M.text(xml, tag)
  local v = xml:match("<" .. tag .. "[^>]*>([^<]*)</" .. tag .. ">")
  if not v then return nil end
  return (v:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&amp;", "&"))
end

--- Loopback forwards declared in a domain's qemu:commandline:
--- { {host=, port=, guest=}, ... }.
---@param xml string
---@return table[]
function M.forwards(xml)
  local out = {}
  for host, port, guest in xml:gmatch("hostfwd=tcp:([%d%.:]*):(%d+)%-[%d%.]*:(%d+)") do
    out[#out + 1] = {host = host ~= "" and host or "127.0.0.1", port = tonumber(port), guest = tonumber(guest)}
  end
  return out
end

--- Files a domain uses (disk sources, kernel, initrd, serial log).
---@param xml string
---@return string[]
function M.files(xml)
  local out, seen = {}, {}
  local function add(p)
    if p and not seen[p] then seen[p] = true; out[#out + 1] = p end
  end
  for p in xml:gmatch("<source file='([^']+)'") do add(p) end
  for p in xml:gmatch("<source file=\"([^\"]+)\"") do add(p) end
  add(M.text(xml, "kernel"))
  add(M.text(xml, "initrd"))
  for p in xml:gmatch("<source path='([^']+)'") do add(p) end
  for p in xml:gmatch("<source path=\"([^\"]+)\"") do add(p) end
  return out
end

return M

--- bomarun.virt.image: the golden-image cache, qcow2 overlays and NoCloud
--- seeds (bomarun.virt re-exports them as virt.image, virt.overlay, virt.seed).
---
--- The download streams through libcurl with the sha512 computed as it is
--- written; the file is renamed into the cache only when the digest matches
--- the SHA512SUMS line for it, so the cache never holds a bad image.
--- Overlays are made by qemu-img and seeds by xorriso (neither has a
--- library the host links; docs/virt.md).
local crypto = require "bomarun._crypto"
local host = require "bomarun._host"
local http = require "bomarun.http"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local step = require "bomarun.step"

local M = {}

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function basename(p) return (p:gsub("[?#].*$", ""):match("([^/]+)/*$")) end

local function fetch_sums(src)
  if src:match("^%a[%w+.-]*://") then
    local r, err, code = http.request{url = src, timeout = 60}
    if not r then return nil, err, code end
    if r.status ~= 200 then
      return nil, string.format("virt: GET %s: HTTP %d", src, r.status), "HTTP"
    end
    return r.body
  end
  local text, err = read_file(src)
  if not text then return nil, "virt: cannot read " .. src .. ": " .. tostring(err), "LOCAL_FILE" end
  return text
end

--- The sha512 for `name` in a SHA512SUMS text (GNU "HEX  name" or "HEX *name",
--- or BSD "SHA512 (name) = HEX"), or nil.
---@param text string
---@param name string
---@return string|nil
function M.sum_for(text, name)
  for line in text:gmatch("[^\r\n]+") do
    local hex, file = line:match("^(%x+)%s+%*?(.-)%s*$")
    if hex and #hex == 128 and (file == name or basename(file) == name) then return hex:lower() end
    local f2, hex2 = line:match("^SHA512 %((.-)%) = (%x+)$")
    if f2 and (f2 == name or basename(f2) == name) then return hex2:lower() end
  end
  return nil
end

--- A verified local copy of an image: {url=, sha512sums = URL or path,
--- cache = DIR, name = file name (default: the URL's), timeout = seconds}.
--- Reused when the cached file's sha512 matches; otherwise downloaded,
--- verified while streaming and renamed into place.  Returns the path and
--- {cached = bool, sha512 = hex, bytes = n}.
---@param opts {url: string, sha512sums: string, cache: string, name?: string, timeout?: number}
---@return string|nil path, table|string|nil info_or_err, string|nil code
function M.image(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" or type(opts.sha512sums) ~= "string"
      or type(opts.cache) ~= "string" then
    error("virt.image: expected {url = ..., sha512sums = URL or path, cache = DIR}", 2)
  end
  local name = opts.name or basename(opts.url)
  local sums, err, code = fetch_sums(opts.sha512sums)
  if not sums then return nil, err, code end
  local want = M.sum_for(sums, name)
  if not want then
    return nil, string.format("virt: %s has no sha512 line for %s", opts.sha512sums, name), "CHECKSUM"
  end
  assert(host.mkdir(opts.cache))
  local path = opts.cache .. "/" .. name
  if host.exists(path) then
    local have, derr, dcode = crypto.digest_file("sha512", path)
    if not have then return nil, "virt: " .. tostring(derr), dcode end
    if have == want then
      step.event({type = "virt", op = "image", path = path, cached = true})
      return path, {cached = true, sha512 = have}
    end
    os.remove(path) -- a stale or damaged copy: fetch it again
  end
  local part = string.format("%s/.%s.%d.%s.part", opts.cache, name, host.getpid(), host.random_hex(4))
  local r, herr, hcode = http.request{url = opts.url, output_file = part, output_digest = "sha512",
                                      timeout = opts.timeout or 1800}
  if not r then
    os.remove(part)
    return nil, "virt: image download: " .. tostring(herr), hcode
  end
  if r.status ~= 200 then
    os.remove(part)
    return nil, string.format("virt: GET %s: HTTP %d", opts.url, r.status), "HTTP"
  end
  if r.digest ~= want then
    os.remove(part)
    return nil, string.format("virt: %s: sha512 mismatch: %s says %s..., the download is %s...; not cached",
      opts.url, opts.sha512sums, want:sub(1, 16), tostring(r.digest):sub(1, 16)), "CHECKSUM"
  end
  local ok, rerr = os.rename(part, path)
  if not ok then
    os.remove(part)
    return nil, "virt: cannot move the image into " .. path .. ": " .. tostring(rerr), "LOCAL_FILE"
  end
  step.event({type = "virt", op = "image", path = path, cached = false, url = opts.url})
  return path, {cached = false, sha512 = want}
end

--- A qcow2 overlay on a backing image: {base=, path=, size = "20G"?,
--- base_format = "qcow2"}.  Refuses to overwrite an existing file.
---@param opts {base: string, path: string, size?: string, base_format?: string}
---@return string|nil path, string|nil err, string|nil code
function M.overlay(opts)
  if type(opts) ~= "table" or type(opts.base) ~= "string" or type(opts.path) ~= "string" then
    error("virt.overlay: expected {base = path, path = path}", 2)
  end
  if not host.exists(opts.base) then
    return nil, "virt: overlay " .. opts.path .. ": the backing image " .. opts.base .. " does not exist", "LOCAL_FILE"
  end
  if host.exists(opts.path) then
    return nil, "virt: overlay " .. opts.path .. " already exists", "EXISTS"
  end
  local base = host.realpath(opts.base) or opts.base
  local argv = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", opts.base_format or "qcow2", "-b", base, opts.path}
  if opts.size then argv[#argv + 1] = opts.size end
  local r, err, code = proc.run{argv = argv, timeout = 60, quiet = true}
  if not r then return nil, "virt: overlay " .. opts.path .. ": " .. tostring(err), code end
  if r.code ~= 0 then
    return nil, string.format("virt: qemu-img create %s on %s failed: %s", opts.path, base,
      (r.stderr or ""):gsub("%s+$", "")), "QEMU_IMG"
  end
  step.event({type = "virt", op = "overlay", path = opts.path, base = base})
  return opts.path
end

-- cloud-config is YAML; JSON is YAML, and keeps the encoder in one place.
local function cloud_config(t)
  return "#cloud-config\n" .. json.encode(t, {indent = 2}) .. "\n"
end

--- A NoCloud seed ISO (volume label "cidata"): {path=, user_data = table
--- or "#cloud-config" text, meta_data = table (instance-id, local-hostname),
--- network_config = table?}.
---@param opts {path: string, user_data: table|string, meta_data?: table, network_config?: table|string}
---@return string|nil path, string|nil err, string|nil code
function M.seed(opts)
  if type(opts) ~= "table" or type(opts.path) ~= "string" or opts.user_data == nil then
    error("virt.seed: expected {path = ..., user_data = {...}, meta_data = {...}}", 2)
  end
  local dir = opts.path .. ".d"
  assert(host.mkdir(dir))
  local meta = opts.meta_data or {}
  if not meta["instance-id"] then
    meta = setmetatable({["instance-id"] = "iid-" .. host.random_hex(8)}, {__index = meta})
    for k, v in pairs(opts.meta_data or {}) do meta[k] = v end
  end
  local files = {
    {"user-data", type(opts.user_data) == "string" and opts.user_data or cloud_config(opts.user_data)},
    {"meta-data", json.encode(meta, {indent = 2}) .. "\n"},
  }
  if opts.network_config then
    files[#files + 1] = {"network-config", type(opts.network_config) == "string" and opts.network_config
                                            or (json.encode(opts.network_config, {indent = 2}) .. "\n")}
  end
  local argv = {"xorriso", "-as", "mkisofs", "-quiet", "-output", opts.path, "-volid", "cidata", "-joliet", "-rock"}
  for _, f in ipairs(files) do
    local ok, err = host.write_file(dir .. "/" .. f[1], f[2], 384) -- 0600: keys, passwords
    if not ok then return nil, "virt: seed " .. opts.path .. ": " .. tostring(err), "LOCAL_FILE" end
    argv[#argv + 1] = dir .. "/" .. f[1]
  end
  local r, err, code = proc.run{argv = argv, timeout = 60, quiet = true}
  for _, f in ipairs(files) do os.remove(dir .. "/" .. f[1]) end
  os.remove(dir)
  if not r then return nil, "virt: seed " .. opts.path .. ": " .. tostring(err), code end
  if r.code ~= 0 then
    return nil, "virt: xorriso could not write the seed " .. opts.path .. ": " .. (r.stderr or ""):gsub("%s+$", ""),
      "XORRISO"
  end
  step.event({type = "virt", op = "seed", path = opts.path})
  return opts.path
end

return M

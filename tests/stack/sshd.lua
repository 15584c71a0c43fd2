-- The test stack's sshd: OpenSSH on 127.0.0.1 with its own config, host key
-- and user keys, generated per run in a fresh directory; nothing of the
-- system's ssh configuration is read or touched.  Started and stopped by
-- PID through bomarun.proc.
--
--   local sshd = require "sshd"          -- with tests/stack on package.path
--   local server = sshd.start_new()
--   server.port, server.user, server.keys.ed25519, server.known_hosts
--   server:stop() ; server:start() ; server:new_host_key()
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local ssh_core = require "bomarun._ssh"

local M = {}
M.__index = M

local function run(argv, what)
  local r, err = proc.run{argv = argv, timeout = 60}
  if not r then error(what .. ": " .. err) end
  if r.code ~= 0 then error(what .. " failed: " .. r.stderr) end
  return r
end

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then run({"chmod", mode, path}, "chmod") end
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function keygen(path, kind, passphrase)
  local argv = {"ssh-keygen", "-q", "-t", kind, "-N", passphrase or "", "-C", "bomarun-test-" .. kind, "-f", path}
  if kind == "rsa" then argv[#argv + 1] = "-b" argv[#argv + 1] = "2048" end
  run(argv, "ssh-keygen " .. kind)
end

local function whoami()
  return (run({"id", "-un"}, "id").stdout:gsub("%s+$", ""))
end

function M:config_text()
  return table.concat({
    "Port " .. self.port,
    "ListenAddress 127.0.0.1",
    "HostKey " .. self.dir .. "/host_ed25519",
    "PidFile " .. self.dir .. "/sshd.pid",
    "AuthorizedKeysFile " .. self.dir .. "/authorized_keys",
    "UsePAM no",
    "StrictModes no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "MaxStartups 500:30:600",
    "MaxSessions 500",
    "Subsystem sftp internal-sftp",
    "PrintMotd no",
    "LogLevel ERROR",
    -- bash reads ~/.bashrc for commands run by sshd unless it thinks it is
    -- nested (SHLVL); the test host's rc files are not what is tested or
    -- measured, so every client here (bomarun, ssh, ansible) skips them.
    "SetEnv SHLVL=1",
    -- Debian 12's libssh2 (1.10) signs RSA user keys with ssh-rsa (SHA-1)
    -- only; the RSA test needs the server to accept that.
    "PubkeyAcceptedAlgorithms +ssh-rsa",
    "",
  }, "\n")
end

function M:write_known_hosts()
  local pub = read(self.dir .. "/host_ed25519.pub"):match("^(%S+ %S+)")
  write(self.known_hosts, string.format("[127.0.0.1]:%d %s\n", self.port, pub))
end

--- Start (or restart) sshd; returns once it answers with an ssh banner.
function M:start()
  local h, err = proc.spawn{argv = {"/usr/sbin/sshd", "-D", "-e", "-f", self.dir .. "/sshd_config"},
                            keep = true, quiet = true}
  if not h then error("sshd: " .. err) end
  self.handle = h
  local t0 = task.now()
  while task.now() - t0 < 15 do
    local banner = ssh_core.banner{host = "127.0.0.1", port = self.port, timeout = 1}
    if banner and banner:match("^SSH%-") then return self end
    if h:done() then
      local r = h:wait()
      error("sshd exited at start (code " .. tostring(r.code) .. "): " .. r.stderr)
    end
    task.sleep(0.05)
  end
  error("sshd did not answer on port " .. self.port .. " within 15 s")
end

--- Stop sshd (by its PID) and wait until it is gone.
function M:stop()
  local h = self.handle
  self.handle = nil
  if h and not h:done() then
    h:kill("TERM")
    -- Another task may be waiting on the handle too: watch it instead.
    local t0 = task.now()
    while not h:done() and task.now() - t0 < 10 do task.sleep(0.02) end
  end
end

--- Replace the host key (a "rebuilt host"): known_hosts keeps the old one.
function M:new_host_key()
  os.remove(self.dir .. "/host_ed25519")
  os.remove(self.dir .. "/host_ed25519.pub")
  keygen(self.dir .. "/host_ed25519", "ed25519")
end

--- Remove the whole directory (after stop).
function M:remove()
  self:stop()
  proc.run{argv = {"rm", "-rf", self.dir}}
end

--- Generate keys and config in a fresh directory and start sshd.
---@param opts? {port?: integer}
function M.start_new(opts)
  opts = opts or {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(host.mkdir(dir, 448))
  host.mkdir("/run/sshd", 493)   -- sshd's privilege-separation directory
  local self = setmetatable({dir = dir, user = whoami(), host = "127.0.0.1",
                             known_hosts = dir .. "/known_hosts", keys = {},
                             passphrase = "correct horse " .. host.random_hex(4)}, M)
  keygen(dir .. "/host_ed25519", "ed25519")
  local authorized = {}
  for _, kind in ipairs({"ed25519", "rsa", "ecdsa"}) do
    keygen(dir .. "/id_" .. kind, kind)
    self.keys[kind] = dir .. "/id_" .. kind
    authorized[#authorized + 1] = read(dir .. "/id_" .. kind .. ".pub")
  end
  keygen(dir .. "/id_encrypted", "ed25519", self.passphrase)
  self.keys.encrypted = dir .. "/id_encrypted"
  authorized[#authorized + 1] = read(dir .. "/id_encrypted.pub")
  keygen(dir .. "/id_wrong", "ed25519")     -- never authorized
  self.keys.wrong = dir .. "/id_wrong"
  write(dir .. "/authorized_keys", table.concat(authorized), "600")
  for attempt = 1, 5 do
    self.port = opts.port or (20000 + (tonumber(host.random_hex(2), 16) % 40000))
    write(dir .. "/sshd_config", self:config_text())
    self:write_known_hosts()
    local ok, err = pcall(self.start, self)
    if ok then return self end
    if opts.port or attempt == 5 then error(err, 0) end
  end
end

M.start = M.start   -- method: restart with the same config
return M

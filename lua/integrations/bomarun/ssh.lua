--- ssh on the loop: sessions, commands, file transfer, and the readiness
--- gates that don't lie.
---
---   local ssh = require "bomarun.ssh"
---   local s = assert(ssh.connect{host = "10.0.0.5", user = "debian",
---                                key = "/path/id_ed25519", timeout = 10})
---   local r = s:exec("cloud-init status", {timeout = 30})
---   -- r.status, r.stdout, r.stderr, r.duration (r.signal if killed)
---   s:put("/local/file", "/remote/file") ; s:get("/remote/file", "/local/file")
---   s:close()
---
--- Operational failures return nil, "ssh: STAGE: user@host:port: why", CODE
--- with CODE one of REFUSED, TIMEOUT, RESOLVE, CONNECT, HANDSHAKE,
--- HOSTKEY_MISMATCH, HOSTKEY_UNKNOWN, HOSTKEY, AUTH, KEY_FILE, CHANNEL, EXEC,
--- SFTP, LOCAL_FILE, DISCONNECTED, CANCELLED.
local core = require "bomarun._ssh"
local log = require "bomarun.log"
local poll = require "bomarun.poll"
local secret = require "bomarun.secret"
local task = require "bomarun.task"

local M = {}

---@class bomarun.SshTarget
---@field host string
---@field port? integer            default 22
---@field user? string             default $USER
---@field key? string              private key file (ed25519, RSA, ECDSA; OpenSSH or PEM format)
---@field passphrase? string|bomarun.SecretRef  for an encrypted key
---@field agent? boolean|string    use ssh-agent ($SSH_AUTH_SOCK, or this socket path)
---@field password? string|bomarun.SecretRef    password authentication, where a runbook asks for it
---@field host_key_policy? "strict"|"accept-new"|"pinned"  default "strict" (known_hosts)
---@field known_hosts? string      default ~/.ssh/known_hosts
---@field fingerprint? string      "SHA256:..." for host_key_policy = "pinned"
---@field timeout? number          connect + handshake + auth, seconds (default 10)
---@field keepalive? integer       seconds between keepalives on an idle session (default 30; 0 = off)

---@class bomarun.SshResult
---@field status integer|nil       the remote exit status (nil if killed by a signal or timed out)
---@field signal string|nil        the signal name, e.g. "KILL"
---@field stdout string
---@field stderr string
---@field duration number          seconds
---@field timed_out boolean

--- Codes that retrying cannot fix.
M.FATAL = {HOSTKEY_MISMATCH = true, HOSTKEY_UNKNOWN = true, HOSTKEY = true, AUTH = true,
           KEY_FILE = true}

local function resolved(target)
  local t = {}
  for k, v in pairs(target) do t[k] = v end
  for _, k in ipairs({"passphrase", "password"}) do
    if secret.is_ref(t[k]) then
      local v, err = secret.resolve(t[k])
      if not v then error("ssh: " .. err, 3) end
      t[k] = v
    elseif type(t[k]) == "string" then
      secret.register(t[k])
    end
  end
  return t
end

-- A copy of target with some fields replaced.
local function with(target, changes)
  local t = {}
  for k, v in pairs(target) do t[k] = v end
  for k, v in pairs(changes) do t[k] = v end
  return t
end

local function where(t)
  return string.format("%s@%s:%d", t.user or os.getenv("USER") or "root", t.host, t.port or 22)
end

--- Open an authenticated session.
---@param target bomarun.SshTarget
---@return userdata|nil session, string|nil err, string|nil code
function M.connect(target)
  if type(target) ~= "table" or type(target.host) ~= "string" then
    error("ssh.connect: expected a table with host = \"...\"", 2)
  end
  local s, err, code = core.connect(resolved(target))
  if not s then return nil, secret.redact(err), code end
  return s
end

-- Methods added to every session, over the C core's.
local methods = core.methods

--- Run a command; streams its lines to the step log (and, with `prefix` or
--- `echo`, to the console) as they arrive.
---@param cmd string
---@param opts? {timeout?: number, stdin?: string, prefix?: string, echo?: boolean, quiet?: boolean, on_line?: fun(line: string, stream: string)}
---@return bomarun.SshResult|nil, string|nil, string|nil, bomarun.SshResult|nil
function methods:exec(cmd, opts)
  opts = opts or {}
  local sink = not opts.quiet and log.sink() or nil
  local prefix, user_on_line = opts.prefix, opts.on_line
  local copy = {timeout = opts.timeout, stdin = opts.stdin}
  if sink or prefix or opts.echo or user_on_line then
    local head = prefix and (prefix .. " ") or ""
    copy.on_line = function(line, stream)
      if sink then sink(secret.redact(head .. line)) end
      if prefix or opts.echo then
        log.console(stream == "stderr" and head .. log.paint("grey", line) or head .. line)
      end
      if user_on_line then user_on_line(line, stream) end
    end
  end
  local r, err, code, partial = self:_exec(cmd, copy)
  if not r then return nil, secret.redact(err), code, partial end
  return r
end

-- The session pool: one session per user@host:port, reused for the run.
local pool = {}

--- A connected session for target: the pooled one if it is still alive,
--- else a new one (which joins the pool).
---@param target bomarun.SshTarget
---@return userdata|nil session, string|nil err, string|nil code
function M.session(target)
  local key = where(target)
  local s = pool[key]
  if s and s:alive() then return s end
  local err, code
  s, err, code = M.connect(target)
  if not s then return nil, err, code end
  pool[key] = s
  return s
end

--- Close every pooled session.
function M.close_all()
  for k, s in pairs(pool) do
    pool[k] = nil
    s:close()
  end
end

--- Wait until host:port accepts TCP and (optionally) its first line
--- matches `banner` (a Lua pattern, e.g. "OpenSSH").  The cheap early gate:
--- it proves a listener, not a working login.
---@param opts {host: string, port?: integer, banner?: string, timeout?: number, interval?: number}
---@return string|nil banner, string|nil err, string|nil code
function M.wait_for_port(opts)
  local port = opts.port or 22
  local what = string.format("port %s:%d%s", opts.host, port, opts.banner and (" banner ~ " .. opts.banner) or "")
  local deadline = task.now() + (opts.timeout or 300)
  local v, err, code = poll.run{function()
      local left = math.max(0.1, math.min(5, deadline - task.now()))
      local b, e = core.banner{host = opts.host, port = port, timeout = left}
      if not b then return nil, e end
      if opts.banner and not b:find(opts.banner) then
        return nil, "banner '" .. b .. "' does not match '" .. opts.banner .. "'"
      end
      return b
    end,
    timeout = opts.timeout or 300, interval = opts.interval or 1, what = what}
  return v, err, code
end

--- Wait until an authenticated no-op command succeeds.  Retries through
--- refused connections, resets, timeouts and an sshd that restarts mid-
--- handshake; fails at once on a host key mismatch or an authentication
--- rejection.  Returns the working session (pooled).
---@param target bomarun.SshTarget|{timeout?: number, interval?: number, attempt_timeout?: number}
---@return userdata|nil session, string|nil err, string|nil code
function M.wait_for_connection(target)
  local total = target.timeout or 300
  local what = "ssh connection to " .. where(target)
  local deadline = task.now() + total
  local session, fatal, fatal_code
  local conn = with(target, {})
  local v, err, code = poll.run{function()
      local left = deadline - task.now()
      conn.timeout = math.max(0.2, math.min(target.attempt_timeout or 10, left))
      local s, e, c = M.connect(conn)
      if not s then
        if M.FATAL[c] then fatal, fatal_code = e, c return "REJECTED" end
        return nil, e
      end
      local r, xe = s:exec("true", {timeout = math.max(0.2, math.min(10, deadline - task.now())), quiet = true})
      if not r then s:close() return nil, xe end
      if r.status ~= 0 then s:close() return nil, "the no-op command exited " .. tostring(r.status) end
      session = s
      return "READY"
    end,
    ok = {"READY"}, fail = {"REJECTED"}, timeout = total, interval = target.interval or 1,
    what = what}
  if v then
    pool[where(target)] = session
    return session
  end
  if fatal then return nil, fatal, fatal_code end
  return nil, err, code
end

local function session_for(target)
  if type(target) == "userdata" then return target end
  return M.session(target)
end

--- Wait for cloud-init to finish: `cloud-init status --wait --long`.
--- Exit 0 passes ("done"); exit 2 (recoverable errors) passes as
--- "degraded" with the detail recorded; anything else fails.  Survives the
--- connection dropping while cloud-init restarts sshd.
---@param target bomarun.SshTarget|userdata
---@param opts? {timeout?: number, command?: string}
---@return {status: "done"|"degraded", detail: string, code: integer}|nil, string|nil err, string|nil code
function M.wait_for_cloud_init(target, opts)
  opts = opts or {}
  local total = opts.timeout or 900
  local deadline = task.now() + total
  local cmd = (opts.command or "cloud-init") .. " status --wait --long"
  while true do
    local left = deadline - task.now()
    if left <= 0 then
      return nil, "cloud-init did not finish within " .. total .. " s", "TIMEOUT"
    end
    local s, err, code = session_for(target)
    if not s then
      if M.FATAL[code] then return nil, err, code end
      if type(target) == "userdata" then return nil, err, code end
      local ws, werr, wcode = M.wait_for_connection(with(target, {timeout = left}))
      if not ws then return nil, werr, wcode end
      s = ws
    end
    local r, xerr, xcode = s:exec(cmd, {timeout = left})
    if r then
      local detail = (r.stdout .. r.stderr):gsub("%s+$", "")
      log.to_step("cloud-init: exit " .. tostring(r.status) .. ": " .. detail)
      if r.status == 0 then return {status = "done", detail = detail, code = 0} end
      if r.status == 2 then return {status = "degraded", detail = detail, code = 2} end
      return nil, string.format("cloud-init reported failure on %s (exit %s): %s",
        s:info().host, tostring(r.status or r.signal), detail), "CLOUD_INIT"
    end
    if xcode ~= "DISCONNECTED" or type(target) == "userdata" then return nil, xerr, xcode end
    log.to_step("cloud-init wait: connection dropped (" .. xerr .. "); reconnecting")
  end
end

--- Reboot a host and wait until it is back with a new boot id.
--- Records /proc/sys/kernel/random/boot_id, runs the reboot command, waits
--- for the connection to drop and return, and passes only when the boot id
--- changed.
---@param target bomarun.SshTarget
---@param opts? {timeout?: number, command?: string, boot_id_path?: string}
---@return {old_boot_id: string, new_boot_id: string, downtime: number}|nil, string|nil err, string|nil code
function M.reboot(target, opts)
  opts = opts or {}
  local total = opts.timeout or 900
  local t0 = task.now()
  local id_cmd = "cat " .. (opts.boot_id_path or "/proc/sys/kernel/random/boot_id")
  local s, err, code = M.session(target)
  if not s then return nil, err, code end
  local r, xerr, xcode = s:exec(id_cmd, {timeout = 30, quiet = true})
  if not r then return nil, xerr, xcode end
  if r.status ~= 0 then return nil, "cannot read the boot id: " .. r.stderr, "EXEC" end
  local old = r.stdout:gsub("%s+$", "")
  log.to_step("reboot: boot id before: " .. old)
  -- Detached, so the command's own connection dropping cannot fail it.
  local trigger = "nohup sh -c 'sleep 1; " .. (opts.command or "reboot") .. "' >/dev/null 2>&1 &"
  r, xerr, xcode = s:exec(trigger, {timeout = 30, quiet = true})
  if not r then return nil, "cannot trigger the reboot: " .. xerr, xcode end
  local went_down
  local deadline = t0 + total
  local new_id
  local what = "reboot of " .. where(target)
  local v, perr, pcode = poll.run{function()
      local left = deadline - task.now()
      local conn = with(target, {timeout = math.max(0.2, math.min(10, left))})
      local cs, ce, cc = M.connect(conn)
      if not cs then
        if M.FATAL[cc] then return "REJECTED" end
        went_down = went_down or task.now()
        return nil, ce
      end
      local rr = cs:exec(id_cmd, {timeout = math.max(0.2, math.min(10, deadline - task.now())), quiet = true})
      if not rr or rr.status ~= 0 then cs:close() went_down = went_down or task.now() return nil, "boot id unreadable" end
      local id = rr.stdout:gsub("%s+$", "")
      if id == old then cs:close() return "SAME_BOOT" end
      new_id = id
      pool[where(target)] = cs
      return "NEW_BOOT"
    end,
    ok = {"NEW_BOOT"}, fail = {"REJECTED"}, timeout = total, interval = opts.interval or 2,
    what = what}
  if not v then
    if pcode == "FAILED_STATE" then return nil, "reboot: the host rejected the reconnection", "AUTH" end
    return nil, perr, pcode
  end
  log.to_step("reboot: boot id after: " .. new_id)
  return {old_boot_id = old, new_boot_id = new_id,
          downtime = went_down and (task.now() - went_down) or 0}
end

return M

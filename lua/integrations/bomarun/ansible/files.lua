--- bomarun.ansible.files: a run's files: the private 0700 directory (events,
--- rendered inventory and play, secret files, Ansible's temp and control
--- paths), the 0600 secret files in it, and the evidence directory.
local host = require "bomarun._host"
local proc = require "bomarun.proc"

local M = {}

--- Write text to path (created or truncated).
---@param path string
---@param text string
---@return string|nil path
---@return string? err
function M.write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, "ansible: cannot write " .. path .. ": " .. tostring(err) end
  f:write(text)
  f:close()
  return path
end

--- A file only its owner can read, created empty and chmodded before any
--- secret is written to it (it also lives in a 0700 directory).
---@param path string
---@param text string
---@return string|nil path
---@return string? err
function M.write_private(path, text)
  local ok, err = M.write_file(path, "")
  if not ok then return nil, err end
  local r = proc.run{argv = {"chmod", "600", path}, quiet = true}
  if not r or r.code ~= 0 then return nil, "ansible: cannot chmod 600 " .. path end
  return M.write_file(path, text)
end

local evidence_seq = 0

local function slug(s)
  return (tostring(s):gsub("[^%w._-]+", "_"):sub(1, 60))
end

--- The evidence directory of this run: under the run directory inside a
--- runbook step, the one given as opts.dir, or none.
---@param opts bomarun.AnsibleOptions
---@param step table|nil  the current step
---@param name string     the run's name
---@return string|nil
function M.evidence_dir(opts, step, name)
  if opts.dir == false then return nil end
  local base
  if opts.dir then
    base = opts.dir
  elseif step then
    evidence_seq = evidence_seq + 1
    base = string.format("%s/ansible/%02d-%s-%s", step.run.dir, evidence_seq, slug(step.id), slug(name))
  else
    return nil
  end
  local ok = host.mkdir(base)
  return ok and base or nil
end

--- Create the run's private directory (mode 0700) under opts.tmp_dir,
--- $TMPDIR or /tmp.
---@param opts bomarun.AnsibleOptions
---@return string|nil dir
---@return string? err
function M.private_dir(opts)
  local base = opts.tmp_dir or os.getenv("TMPDIR") or "/tmp"
  base = host.realpath(base) or base      -- ansible may run in another cwd
  local dir = base .. "/bomarun-ansible-" .. host.random_hex(6)
  local ok, err = host.mkdir(dir, 448)   -- 0700
  if not ok then return nil, "ansible: cannot create a private directory: " .. tostring(err) end
  return dir
end

-- Ends what a run leaves behind in its private directory: ssh
-- ControlPersist masters (they daemonize out of the process group) are told
-- to exit, then the directory goes.  Called with wait = false from a
-- cancelled task, which cannot wait: the cleaner then runs detached.
local CLEAN_SCRIPT = [[
i=0
while [ -n "$2" ] && [ $i -lt 100 ] && kill -0 -- "-$2" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
for s in "$1"/cp/*; do
  [ -S "$s" ] && ssh -F /dev/null -o ControlPath="$s" -O exit bomarun-ansible >/dev/null 2>&1
done
rm -rf -- "$1"
]]

--- Remove the secret files at once, then the private directory.
---@param w table  the run's files: tmp, files, secret_files, pid
---@param can_wait boolean
function M.remove_private(w, can_wait)
  for _, f in ipairs(w.secret_files) do os.remove(f) end   -- first, always
  if not w.tmp then return end
  -- The usual case: the files are known, the directories empty.
  for _, f in ipairs(w.files) do os.remove(f) end
  for _, d in ipairs({"/local", "/remote", "/cp"}) do os.remove(w.tmp .. d) end
  if os.remove(w.tmp) then return end
  local argv = {"/bin/sh", "-c", CLEAN_SCRIPT, "bomarun-ansible-clean", w.tmp,
                can_wait and "" or tostring(w.pid or "")}
  if can_wait then
    proc.run{argv = argv, quiet = true, timeout = 30}
  else
    proc.spawn{argv = argv, quiet = true, keep = true, timeout = 30}
  end
end

return M

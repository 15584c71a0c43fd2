-- bomarun.ansible against real ansible-core (Debian): playbooks over ssh to
-- the test stack's sshd on 127.0.0.1 (tests/stack/sshd.lua), and
-- ansible_connection=local where the target does not matter.  Each
-- ansible-playbook run costs a second or more, so each test makes one or two
-- runs and asserts everything it can on them.
package.path = (os.getenv("BOMARUN_SOURCE") or ".") .. "/tests/stack/?.lua;" .. package.path
local sshd = require "sshd"
local ansible = require "bomarun.ansible"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local util = require "support.util"
local read, write, alive = util.read, util.write, util.pid_alive

local SOURCE = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SOURCE .. "/build/bomarun")
local PY = "/usr/bin/python3"

local server, base

local function sh(cmd)
  local r = assert(proc.run{shell = cmd, timeout = 60, quiet = true})
  return r
end

local function mkdir(path)
  assert(sh("mkdir -p " .. proc.quote(path)).code == 0)
  return path
end

local function entries(dir)
  local r = sh("ls -A " .. proc.quote(dir))
  local out = {}
  for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- Live (non-zombie) processes whose command line contains `needle`.
local function procs_matching(needle)
  local r = sh("ps -eo pid=,stat=,args=")
  local found = {}
  for line in r.stdout:gmatch("[^\n]+") do
    local pid, stat, args = line:match("^%s*(%d+)%s+(%S+)%s+(.*)$")
    if pid and not stat:match("^Z") and args:find(needle, 1, true) and not args:find("ps -eo", 1, true) then
      found[#found + 1] = pid .. " " .. args
    end
  end
  return found
end

local function eventually(seconds, fn)
  local t0 = task.now()
  while task.now() - t0 < seconds do
    if fn() then return true end
    task.sleep(0.1)
  end
  return fn()
end

local function ssh_inventory(extra_hosts)
  local hosts = {target = {ansible_host = "127.0.0.1"}}
  for k, v in pairs(extra_hosts or {}) do hosts[k] = v end
  return {hosts = hosts,
          connection = {user = server.user, port = server.port, key = server.keys.ed25519,
                        known_hosts = server.known_hosts, python = PY}}
end

local LOCAL = {hosts = {"localhost"}, connection = {type = "local", python = PY}}

local function by_task(res)
  local m = {}
  for _, ev in ipairs(res.events) do m[ev.task .. "@" .. ev.host] = ev end
  return m
end

describe("ansible", function()
  setup(function()
    server = sshd.start_new()
    base = sh("mktemp -d -t bomarun-ansible-spec.XXXXXX").stdout:gsub("%s+$", "")
  end)
  teardown(function()
    if server then server:remove() end
    if base then sh("rm -rf " .. proc.quote(base)) end
  end)

  it("renders plays and inventories as YAML that Ansible's parser reads back", function()
    local play = {
      name = "yes", hosts = "all", gather_facts = false,
      vars = {port = 8080, ratio = 0.5, octal = "0644", colon = "a: b", hash = "x #y", jinja = "{{ v }}",
              empty_list = json.array(), empty_map = {}, null = json.null, on = "on", multi = "a\nb\n",
              unicode = "héllo", ctrl = "bell\7", ["1"] = "numeric key"},
      tasks = {{name = "n", shell = "echo 1:2", loop = {1, "two", true, {k = "v"}, {"nested"}}, when = "x"}},
    }
    local text = ansible.to_yaml({play})
    assert.matches("^%- name: \"yes\"\n  hosts: all\n", text)
    assert.matches("multi: |\n      a\n      b\n", text, 1, true)
    -- tasks come last, a task's name first
    assert.is_true(text:find("tasks:", 1, true) > text:find("vars:", 1, true))
    local r = assert(proc.run{argv = {PY, "-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"},
                              stdin = text, timeout = 30})
    assert.equal(0, r.code, r.stderr)
    local back = assert(json.decode(r.stdout))[1]
    assert.equal("yes", back.name)
    assert.is_false(back.gather_facts)
    local v = back.vars
    assert.equal(8080, v.port)
    assert.equal(0.5, v.ratio)
    for _, k in ipairs({"octal", "colon", "hash", "jinja", "on", "multi", "unicode", "ctrl"}) do
      assert.equal(play.vars[k], v[k], k)
    end
    assert.equal("numeric key", v["1"])
    assert.is_true(json.is_array(v.empty_list) and #v.empty_list == 0)
    assert.equal(json.null, v.null)
    assert.same({1, "two", true, {k = "v"}, {"nested"}}, json.decode(json.encode(back.tasks[1].loop)))
    assert.equal("echo 1:2", back.tasks[1].shell)

    -- A table inventory: hosts as a map and a list, groups, vars, connection.
    local inv = ansible.render_inventory{
      hosts = {web1 = {ansible_host = "10.0.0.5"}, "db1"},
      groups = {web = {hosts = {"web1"}, vars = {http_port = 80}, children = {"dbs"}}, dbs = {"db1"}},
      vars = {site = "lab"},
      connection = {user = "deploy", port = 2222, key = "/k", known_hosts = "/kh", python = PY},
    }
    r = assert(proc.run{argv = {PY, "-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"},
                        stdin = inv, timeout = 30})
    local all = assert(json.decode(r.stdout)).all
    assert.equal("10.0.0.5", all.hosts.web1.ansible_host)
    assert.is_not_nil(all.hosts.db1)
    assert.equal(80, all.children.web.vars.http_port)
    assert.is_not_nil(all.children.web.children.dbs)
    assert.is_not_nil(all.children.dbs.hosts.db1)
    assert.equal("deploy", all.vars.ansible_user)
    assert.equal(2222, all.vars.ansible_port)
    assert.equal("-o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes", all.vars.ansible_ssh_common_args)
    assert.equal("lab", all.vars.site)

    assert.has_error(function() ansible.to_yaml({f = print}) end, "ansible: cannot render a function as YAML at $.f")
    local cyc = {}
    cyc.self = cyc
    assert.has_error(function() ansible.to_yaml(cyc) end, "ansible: cannot render a cycle as YAML at $.self")
    assert.has_error(function() ansible.to_yaml({1, a = 2}) end)
  end)

  it("renders awkward values so that ansible-playbook reads back exactly what was given", function()
    -- Strings YAML 1.1 would read as something else, characters a YAML
    -- reader refuses raw (C1 controls, U+FFFE) or reads as a line break
    -- (U+0085, U+2028, U+2029), floats without a dot in %g form.
    local vals = json.object{
      words = {"yes", "no", "on", "off", "y", "N", "true", "null", "~", ""},
      numbers_as_strings = {"0644", "0x1F", "1_000", "1:20", "190:20:30", "1e3", "+1", ".inf", "12.50", "007"},
      dates = {"2001-12-14", "2001-12-14 21:59:43.10 -5"},
      indicators = {"=", "<<", "- a", "? x", "@x", "`x", "%x", "!x", "&x", "*x", "|", ">", "'", '"', "#x",
                    "a #b", "a: b", "[1]", "{a: 1}", " lead", "trail "},
      multi = {"a\nb\n", "no final\nnewline", "  indented\nfirst", "\n\nleading", "two trailing\n\n",
               "crlf\r\nx", "tab\tx\n\ty\n"},
      unicode = {"héllo", "emoji 😀", "c1 a\u{80}b", "c1 a\u{9F}b", "nel a\u{85}b", "ls a\u{2028}b",
                 "ps a\u{2029}b", "fffe a\u{FFFE}b", "bom \u{FEFF}x", "bell \7x", "del \127x",
                 "block with c1\nx\u{80}y\n", "block with ls\nx\u{2028}y\n", "block with nel\nx\u{85}y\n"},
      floats = {1.5, 0.1 + 0.2, 1e20, -1e-7, 2^53, 1 / 3, 3.0},
      integers = {0, -1, math.maxinteger, math.mininteger},
      ["yes"] = "a key that YAML 1.1 reads as true", ["1"] = "a key that looks like a number",
    }
    local text = ansible.to_yaml(vals)
    -- Ansible's own loader reads the text as we meant it ...
    local r = assert(proc.run{argv = {PY, "-c", [[
import sys, json
from ansible.parsing.dataloader import DataLoader
print(json.dumps(DataLoader().load(sys.stdin.read())))]]}, stdin = text, timeout = 60, quiet = true})
    assert.equal(0, r.code, r.stderr)
    assert.same(json.decode(json.encode(vals)), json.decode(r.stdout))
    -- ... and so does a play: the values go through ansible-playbook and
    -- come back as JSON in a file.
    local out = base .. "/awkward.json"
    local res = assert(ansible.playbook{
      play = {hosts = "all", gather_facts = false, vars = {vals = vals}, tasks = {
        {name = "write the values back", copy = {dest = out, content = "{{ vals | to_json }}"}},
        {name = "empty module args stay a map", ping = {}},
        {name = "an empty loop stays a list", debug = {msg = "{{ item }}"}, loop = {}},
      }},
      inventory = LOCAL, timeout = 120, echo = false, tmp_dir = mkdir(base .. "/t-awkward"),
    })
    assert.is_true(res.ok, res.msg)
    assert.same(json.decode(json.encode(vals)), json.decode(read(out)))
    assert.same({"changed", "ok", "skipped"}, {res.events[1].status, res.events[2].status, res.events[3].status})
  end)

  it("runs a passing play over ssh: events, recap, results as data, nothing left behind", function()
    local tmp = mkdir(base .. "/t-pass")
    local seen = {}
    local res = assert(ansible.playbook{
      play = {name = "pass", hosts = "all", gather_facts = false, tasks = {
        {name = "reach it", ping = json.object()},
        {name = "write a file", copy = {dest = base .. "/pass.txt", content = "from ansible\n"}},
        {name = "read it back", command = "cat " .. base .. "/pass.txt", register = "out", changed_when = false},
        {name = "say what was read", debug = {msg = "read: {{ out.stdout }}"}},
      }},
      inventory = ssh_inventory(), timeout = 120, echo = false, tmp_dir = tmp,
      on_event = function(ev) seen[#seen + 1] = ev.task end,
    })
    assert.is_true(res.ok, res.msg)
    assert.equal(0, res.code)
    assert.equal(4, #res.events)
    local ev = res.events
    assert.same({"reach it", "write a file", "read it back", "say what was read"},
                {ev[1].task, ev[2].task, ev[3].task, ev[4].task})
    assert.same({"ok", "changed", "ok", "ok"}, {ev[1].status, ev[2].status, ev[3].status, ev[4].status})
    for _, e in ipairs(ev) do
      assert.equal("target", e.host)
      assert.is_number(e.duration)
      assert.is_true(e.duration >= 0 and e.duration < 60)
    end
    assert.equal("read: from ansible", ev[4].msg)
    assert.equal(0, ev[3].rc)
    assert.same({ok = 4, changed = 1, failed = 0, unreachable = 0, skipped = 0, rescued = 0, ignored = 0},
                res.recap.target)
    assert.same({"reach it", "write a file", "read it back", "say what was read"}, seen)
    assert.equal("from ansible\n", read(base .. "/pass.txt"))
    assert.matches("PLAY RECAP", res.stdout)
    assert.matches("no failed and no unreachable hosts", res.msg)
    assert.is_nil(res.dir)                       -- outside a runbook: no evidence directory
    -- The private directory (inventory, play, events, control sockets) is
    -- gone, and so is the ssh ControlPersist master that lived in it.
    assert.same({}, entries(tmp))
    assert.is_true(eventually(5, function() return #procs_matching(tmp) == 0 end),
                   table.concat(procs_matching(tmp), "\n"))
  end)

  it("returns a failing task and an unreachable host as data the gate names", function()
    local res = assert(ansible.playbook{
      play = {name = "fail", hosts = "all", gather_facts = false, tasks = {
        {name = "reach it", ping = json.object()},
        {name = "break things", fail = {msg = "disk is full"}, when = "inventory_hostname == 'target'"},
        {name = "never reached", debug = {msg = "unreachable code"}},
      }},
      inventory = ssh_inventory({dead = {ansible_host = "127.0.0.1", ansible_port = 1}}),
      timeout = 120, echo = false, tmp_dir = mkdir(base .. "/t-fail"),
    })
    assert.is_false(res.ok)
    assert.is_true(res.code ~= 0)
    local m = by_task(res)
    assert.equal("failed", m["break things@target"].status)
    assert.equal("disk is full", m["break things@target"].msg)
    assert.equal("unreachable", m["reach it@dead"].status)
    assert.matches("Connection refused", m["reach it@dead"].msg)
    assert.is_nil(m["never reached@target"])
    assert.equal(1, res.recap.target.failed)
    assert.equal(1, res.recap.dead.unreachable)
    assert.equal(2, #res.failures)
    assert.matches("task 'break things' failed on target: disk is full", res.msg, 1, true)
    assert.matches("host dead unreachable", res.msg, 1, true)
    -- The gate helper fails with that message (a step's gate raises).
    local step = {gate = function(_, cond, msg) if not cond then error("gate failed: " .. msg, 0) end end}
    local ok, err = pcall(ansible.gate, step, res)
    assert.is_false(ok)
    assert.matches("task 'break things' failed on target: disk is full", err, 1, true)
    ok, err = pcall(ansible.gate, step, nil, "ansible: x: timed out", "TIMEOUT")
    assert.is_false(ok)
    assert.matches("timed out", err)
  end)

  it("selects tasks with tags, skip_tags and limit", function()
    local res = assert(ansible.playbook{
      play = {hosts = "all", gather_facts = false, tasks = {
        {name = "tagged a", debug = {msg = "a"}, tags = {"a"}},
        {name = "tagged b", debug = {msg = "b"}, tags = {"b"}},
        {name = "tagged a and c", debug = {msg = "ac"}, tags = {"a", "c"}},
      }},
      inventory = {hosts = {"h1", "h2"}, connection = {type = "local", python = PY}},
      tags = {"a"}, skip_tags = "c", limit = "h1", timeout = 120, echo = false,
      tmp_dir = mkdir(base .. "/t-tags"),
    })
    assert.is_true(res.ok, res.msg)
    assert.equal(1, #res.events)
    assert.same({"tagged a", "h1", "ok"}, {res.events[1].task, res.events[1].host, res.events[1].status})
    assert.is_nil(res.recap.h2)
    assert.matches("--tags a --skip-tags c --limit h1", res.command, 1, true)
  end)

  it("changes nothing in check mode, and shows the diff", function()
    local target = base .. "/check.txt"
    local res = assert(ansible.playbook{
      play = {hosts = "all", gather_facts = false, tasks = {
        {name = "would write", copy = {dest = target, content = "would be written\n"}},
      }},
      inventory = ssh_inventory(), check = true, diff = true, timeout = 120, echo = false,
      tmp_dir = mkdir(base .. "/t-check"),
    })
    assert.is_true(res.ok, res.msg)
    assert.equal("changed", res.events[1].status)
    assert.is_nil(read(target))
    assert.matches("+would be written", res.stdout, 1, true)
  end)

  it("catches a non-idempotent task with the idempotence helper", function()
    local dir = base .. "/idem"
    local res = assert(ansible.idempotent{
      play = {hosts = "all", gather_facts = false, tasks = {
        {name = "the directory exists", file = {path = dir, state = "directory"}},
        {name = "stamp the time", shell = "date +%s%N > " .. dir .. "/stamp"},
      }},
      inventory = LOCAL, timeout = 120, echo = false, tmp_dir = mkdir(base .. "/t-idem"),
    })
    assert.is_true(res.first.ok)
    assert.equal(2, res.first.totals.changed)
    assert.is_false(res.idempotent)
    assert.is_false(res.ok)
    assert.equal(1, #res.changed_tasks)
    assert.equal("stamp the time", res.changed_tasks[1].task)
    assert.matches("not idempotent: 1 task result changed on the second run: 'stamp the time' on localhost",
                   res.msg, 1, true)
  end)

  it("runs ad-hoc modules with the same structured results", function()
    local tmp = mkdir(base .. "/t-adhoc")
    local inv = ssh_inventory({localhost = {ansible_connection = "local"}})
    local res = assert(ansible.adhoc{hosts = "all", module = "ansible.builtin.command", args = {cmd = "echo hi"},
                                     inventory = inv, timeout = 120, echo = false, tmp_dir = tmp})
    assert.is_true(res.ok, res.msg)
    local m = by_task(res)
    assert.equal("changed", m["ansible.builtin.command@target"].status)
    assert.equal("hi", m["ansible.builtin.command@target"].stdout)
    assert.equal("changed", m["ansible.builtin.command@localhost"].status)
    assert.equal(1, res.recap.target.changed)

    res = assert(ansible.adhoc{hosts = "target", module = "command", args = "false",
                               inventory = inv, timeout = 120, echo = false, tmp_dir = tmp})
    assert.is_false(res.ok)
    assert.equal(1, #res.events)
    assert.equal("failed", res.events[1].status)
    assert.equal(1, res.events[1].rc)
    assert.matches("non-zero return code 1", res.events[1].msg, 1, true)
    assert.equal(1, res.recap.target.failed)
    assert.same({}, entries(tmp))
  end)

  it("cancels a hung play over ssh: the whole group, ssh children and masters included, and its files", function()
    local tmp = mkdir(base .. "/t-cancel")
    local pidfile = base .. "/cancel.pid"
    local t = task.spawn(function()
      return ansible.playbook{
        play = {hosts = "all", gather_facts = false, tasks = {
          -- The background child keeps the module's stdout open: the task
          -- never ends.
          {name = "hang", shell = "sleep 982 & echo $! > " .. pidfile},
        }},
        inventory = ssh_inventory(), echo = false, tmp_dir = tmp,
      }
    end)
    assert.is_true(eventually(60, function() return read(pidfile) ~= nil end), "the hanging task never started")
    local pid = read(pidfile):match("%d+")
    task.sleep(0.3)
    assert.is_true(#procs_matching(tmp) > 0)          -- ansible-playbook, ssh, the mux master
    local t0 = task.now()
    t:cancel("stop it")
    local ok, err = t:wait()
    assert.is_false(ok)
    assert.equal("CANCELLED", task.cancel_code(err))
    assert.is_true(task.now() - t0 < 1, "cancel took " .. (task.now() - t0) .. " s")
    assert.is_true(eventually(10, function() return #procs_matching(tmp) == 0 end),
                   "left behind:\n" .. table.concat(procs_matching(tmp), "\n"))
    assert.is_true(eventually(5, function() return not alive(pid) end), "the remote sleep " .. pid .. " survived")
    assert.is_true(eventually(10, function() return #entries(tmp) == 0 end), table.concat(entries(tmp), " "))
  end)

  it("times out a hung play whose children hold stdout, killing the whole group within its bound", function()
    local pidfile = base .. "/timeout.pid"
    local t0 = task.now()
    local res, err, code, partial = ansible.playbook{
      play = {hosts = "all", gather_facts = false, tasks = {
        -- A child left on ansible's own output pipe (the pipe lookup's shell
        -- has the worker's stderr, bomarun's pipe) ...
        {name = "quick", debug = {msg = "{{ lookup('pipe', 'sleep 985 >&2 & echo $!') }}"}},
        -- ... and a task whose background child holds its stdout while it hangs.
        {name = "hang", shell = "sleep 987 & echo $! > " .. pidfile .. "; exec sleep 986"},
      }},
      inventory = LOCAL, timeout = 6, grace = 1, echo = false, tmp_dir = mkdir(base .. "/t-timeout"),
    }
    local took = task.now() - t0
    assert.is_nil(res)
    assert.equal("TIMEOUT", code)
    assert.matches("timed out after 6 s; its process group was killed", err, 1, true)
    assert.is_true(took < 6 + 1 + 3, "took " .. took .. " s")
    assert.is_true(partial.timed_out)
    assert.is_false(partial.ok)
    assert.equal(1, #partial.events)
    assert.same({"quick", "ok"}, {partial.events[1].task, partial.events[1].status})
    assert.equal(1, partial.recap.localhost.ok)
    assert.matches("timed out after 6 s", partial.msg)
    local on_output = partial.events[1].msg
    local holder = read(pidfile):match("%d+")
    assert.matches("^%d+$", on_output)
    for _, pid in ipairs({on_output, holder}) do
      assert.is_true(eventually(3, function() return not alive(pid) end), "child " .. pid .. " survived")
    end
    assert.same({}, procs_matching("sleep 986"))
  end)

  it("kills a grandchild still holding ansible's output after it exits, after `drain` seconds", function()
    local t0 = task.now()
    -- The pipe lookup's shell runs under the worker with the worker's
    -- stderr (bomarun's pipe): the sleep keeps it open after the play ends.
    local res = assert(ansible.playbook{
      play = {hosts = "all", gather_facts = false, tasks = {
        {name = "leave a child behind", debug = {msg = "{{ lookup('pipe', 'sleep 981 >&2 & echo $!') }}"}},
      }},
      inventory = LOCAL, drain = 1, timeout = 120, echo = false, tmp_dir = mkdir(base .. "/t-drain"),
    })
    assert.is_true(res.ok, res.msg)
    assert.is_true(res.lingering)
    assert.is_true(task.now() - t0 < 30)
    local pid = res.events[1].msg
    assert.matches("^%d+$", pid)
    assert.is_true(eventually(3, function() return not alive(pid) end), "grandchild " .. pid .. " survived")
  end)

  it("reports a missing program as ENOENT, a missing playbook as data, and raises on bad options", function()
    local tmp = mkdir(base .. "/t-enoent")
    local bad = assert(ansible.playbook{playbook = base .. "/no-such-playbook.yml", inventory = LOCAL, echo = false,
                                        tmp_dir = tmp, timeout = 120})
    assert.is_false(bad.ok)
    assert.is_true(bad.code ~= 0)
    assert.same({}, bad.events)
    assert.matches("ansible%-playbook exited %d+: ERROR! .*no%-such%-playbook%.yml", bad.msg)
    local res, err, code = ansible.playbook{play = {hosts = "all", tasks = {}}, inventory = LOCAL,
                                            program = "/nonexistent/ansible-playbook", echo = false, tmp_dir = tmp}
    assert.is_nil(res)
    assert.equal("ENOENT", code)
    assert.matches("cannot start /nonexistent/ansible%-playbook", err)
    assert.same({}, entries(tmp))
    assert.has_error(function() ansible.playbook{inventory = LOCAL, tmp_dir = tmp} end,
                     "ansible.playbook: playbook (a path) or play (a table) is required")
    assert.has_error(function() ansible.playbook{playbook = "x.yml", play = {}, tmp_dir = tmp} end)
    assert.has_error(function() ansible.playbook{playbook = "x.yml", timeout = -1} end)
    assert.has_error(function() ansible.adhoc{hosts = "all", tmp_dir = tmp} end, "ansible.adhoc: module is required")
    assert.has_error(function() ansible.playbook{playbook = "x.yml", extravars = {}} end,
                     "ansible.playbook: unknown option 'extravars'")
    assert.has_error(function() ansible.adhoc{hosts = "all", module = "ping", tags = "x"} end,
                     "ansible.adhoc: unknown option 'tags'")
    assert.same({}, entries(tmp))
  end)

  describe("in a runbook", function()
    it("prints whole prefixed lines for three parallel playbooks, keeps secrets out, gates a failure by name", function()
      local dir = mkdir(base .. "/rb")
      local tmp = mkdir(dir .. "/tmp")
      local token, db, vault_pass = "tok-" .. ("%x"):format(math.random(1 << 40)), "db-" .. ("%x"):format(math.random(1 << 40)),
        "vault-" .. ("%x"):format(math.random(1 << 40))
      -- A vault-encrypted vars file (the password file is the spec's own).
      write(dir .. "/vault.yml", "vaulted: opened-by-vault\n")
      write(dir .. "/spec-vault-pass", vault_pass .. "\n")
      local r = assert(proc.run{argv = {"ansible-vault", "encrypt", "--vault-password-file", dir .. "/spec-vault-pass",
                                        dir .. "/vault.yml"}, timeout = 60,
                                env = {ANSIBLE_LOCAL_TEMP = tmp .. "/vault-local"}})
      assert.equal(0, r.code, r.stderr)
      os.remove(dir .. "/spec-vault-pass")
      sh("rm -rf " .. proc.quote(tmp .. "/vault-local"))
      write(dir .. "/rb.lua", ([[
local ansible = require "bomarun.ansible"
local runbook = require "bomarun.runbook"
local secret = require "bomarun.secret"
local task = require "bomarun.task"
local LOCAL = {hosts = {"localhost"}, connection = {type = "local", python = "/usr/bin/python3"}}
local function play(n)
  local tasks = {}
  for k = 1, 4 do tasks[k] = {name = "p" .. n .. " task " .. k, command = "sleep 0.2"} end
  return {name = "play " .. n, hosts = "all", gather_facts = false, tasks = tasks}
end
return runbook{id = "ansible-spec", title = "ansible in a runbook",
  runbook.step{"1", "three playbooks at once", function(s)
    local fns = {}
    for n = 1, 3 do
      fns[n] = function() return ansible.playbook{play = play(n), inventory = LOCAL, prefix = "[p" .. n .. "]", timeout = 120} end
    end
    for _, res in ipairs(task.parallel(fns)) do ansible.gate(s, res) end
  end},
  runbook.step{"2", "secrets stay out of the evidence", function(s)
    local res = ansible.gate(s, ansible.playbook{
      play = {hosts = "all", gather_facts = false, vars_files = {"VAULT_FILE"}, tasks = {
        {name = "show what the play received", debug = {msg = "token={{ api_token }} db={{ db_password }} v={{ vaulted }}"}}}},
      inventory = {hosts = {localhost = {db_password = secret.env "SPEC_DB"}}, connection = LOCAL.connection},
      secret_vars = {api_token = os.getenv("SPEC_TOKEN")},
      vault_password = secret.env "SPEC_VAULT",
      prefix = "[secret]", timeout = 120})
    s:check(res.events[1].msg == "token=" .. os.getenv("SPEC_TOKEN") .. " db=" .. os.getenv("SPEC_DB") ..
            " v=opened-by-vault", "the play received the real values")
  end},
  runbook.step{"3", "a failing play fails the gate", function(s)
    ansible.gate(s, ansible.playbook{
      play = {hosts = "all", gather_facts = false, tasks = {{name = "break things", fail = {msg = "disk is full"}}}},
      inventory = LOCAL, prefix = "[fail]", timeout = 120})
  end},
}
]]):gsub("VAULT_FILE", dir .. "/vault.yml"))
      r = assert(proc.run{argv = {BIN, dir .. "/rb.lua", "--run-dir", dir .. "/runs"}, timeout = 240, quiet = true,
                          env = {TMPDIR = tmp, SPEC_TOKEN = token, SPEC_DB = db, SPEC_VAULT = vault_pass,
                                 NO_COLOR = "1", BOMARUN_VERBOSE = false}})
      assert.equal(1, r.code, r.stdout .. r.stderr)

      -- Three runs in parallel: every line is whole and carries one prefix,
      -- each run's results arrive in task order, and the runs overlapped.
      local per, first_at, last_at, n = {{}, {}, {}}, {}, {}, 0
      for line in r.stdout:gmatch("[^\n]+") do
        if line:match("%[p%d%]") then
          n = n + 1
          local p, rest = line:match("^%[p(%d)%] (.*)$")
          assert.is_not_nil(p, "not a whole prefixed line: " .. line)
          assert.is_nil(rest:match("%[p%d%]"), "two prefixes on one line: " .. line)
          p = tonumber(p)
          local task_name = rest:match("^changed%s+localhost | (p%d task %d) %(%d+%.%d+s%)$")
          if task_name then
            assert.equal("p" .. p, task_name:sub(1, 2), line)
            per[p][#per[p] + 1] = task_name
            first_at[p] = first_at[p] or n
            last_at[p] = n
          else
            assert.is_truthy(rest:match("^recap localhost: ok=4 changed=4 ") or rest:match("^ok in %d"), line)
          end
        end
      end
      for p = 1, 3 do
        assert.same({"p" .. p .. " task 1", "p" .. p .. " task 2", "p" .. p .. " task 3", "p" .. p .. " task 4"}, per[p])
      end
      local overlapped = false
      for p = 1, 3 do for q = 1, 3 do
        if p ~= q and first_at[q] < last_at[p] and first_at[p] < last_at[q] then overlapped = true end
      end end
      assert.is_true(overlapped, "the three runs did not overlap:\n" .. r.stdout)

      local run_dir = dir .. "/runs/" .. assert(entries(dir .. "/runs")[1])
      local step1 = read(run_dir .. "/steps/01-1.log")
      assert.matches("%[p2%] changed     localhost | p2 task 3 %(", step1)
      local journal = read(run_dir .. "/events.jsonl")
      local kinds = {}
      for line in journal:gmatch("[^\n]+") do
        local ev = json.decode(line)
        kinds[ev.type] = (kinds[ev.type] or 0) + 1
      end
      assert.equal(12 + 1 + 1, kinds.ansible_task)
      assert.equal(5, kinds.ansible_recap)

      -- The failing gate names the task and its message, in the reports too.
      assert.matches("task 'break things' failed on localhost: disk is full", r.stdout, 1, true)
      assert.matches("task 'break things' failed on localhost: disk is full", read(run_dir .. "/summary.txt"), 1, true)
      assert.matches("task &apos;break things&apos; failed on localhost: disk is full", read(run_dir .. "/junit.xml"), 1, true)

      -- Secrets: the play saw the values (step 2 passed its check), yet no
      -- log, report, journal or evidence file holds them, and the private
      -- files (vault password, secret vars, inventory) are gone.
      assert.matches("2 +PASS", read(run_dir .. "/summary.txt"))
      local everything = sh("cat " .. proc.quote(run_dir) .. "/*.* " .. proc.quote(run_dir) .. "/steps/* " ..
                            proc.quote(run_dir) .. "/ansible/*/*").stdout .. r.stdout .. r.stderr
      assert.matches("token=*** db=*** v=opened-by-vault", everything, 1, true)
      for _, s in ipairs({token, db, vault_pass}) do
        assert.is_nil(everything:find(s, 1, true), "a secret reached the evidence")
      end
      local inv = read(run_dir .. "/ansible/04-2-secret/inventory.yml")
      assert.matches("db_password: \"***\"", inv, 1, true)
      assert.same({}, entries(tmp))
    end)

    it("runs the example: applies a play to localhost and proves it idempotent", function()
      local dir = mkdir(base .. "/example")
      local r = assert(proc.run{argv = {BIN, SOURCE .. "/examples/ansible-apply.lua", "--set", "dir=" .. dir .. "/demo",
                                        "--run-dir", dir .. "/runs"}, timeout = 240, quiet = true,
                                env = {NO_COLOR = "1", TMPDIR = mkdir(dir .. "/tmp")}})
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("[demo] idempotent: nothing changed on the second run", r.stdout, 1, true)
      assert.matches("Managed by bomarun", read(dir .. "/demo/motd"))
      local report = assert(json.decode(read(dir .. "/runs/" .. entries(dir .. "/runs")[1] .. "/report.json")))
      assert.equal(0, report.captures.second_changed)
      assert.equal(2, report.captures.first_changed)
      assert.same({}, entries(dir .. "/tmp"))
    end)
  end)
end)

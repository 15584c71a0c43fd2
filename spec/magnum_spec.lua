-- Container infra (Magnum + Heat, for real, over the Nova fake driver) in the
-- local cloud.  The one stand-in: tests/stack/openstack/lib/
-- heat-signaller-standin.py signals Heat's software deployments for one
-- cluster, as the agent on a real cluster VM would.
local openstack = require "bomarun.openstack"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local host = require "bomarun._host"
local util = require "support.util"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local STATE = os.getenv("BOMARUN_OPENSTACK_DIR") or "/tmp/bomarun-openstack"
local CLOUDS = STATE .. "/clouds.yaml"

local admin, ci, fx = nil, nil, {}
local P = "bomarun-spec-" .. host.random_hex(3)

-- The stand-in for the agent a real cluster VM runs (see the file's head).
local function standin(cluster, fail)
  local argv = {"/usr/bin/python3", SRC .. "/tests/stack/openstack/lib/heat-signaller-standin.py",
                "--cloud", "bomarun-admin", "--cluster", cluster, "--timeout", "300", "--interval", "0.5"}
  if fail then argv[#argv + 1] = "--fail" end
  return assert(proc.spawn{argv = argv, env = {OS_CLIENT_CONFIG_FILE = CLOUDS}, quiet = true, keep = true})
end

local function must(v, err) return assert(v, err) end

describe("container infra (Magnum + Heat) in the local cloud", function()
  setup(function()
    local r = assert(proc.run{argv = {SRC .. "/scripts/openstack-stack", "start", "--layers", "all", STATE},
                              timeout = 900})
    assert(r.code == 0, "the local cloud did not start:\n" .. r.stdout .. r.stderr)
    admin = must(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS})
    ci = admin.container_infra
    -- What a template needs: an fcos image, a flavor, a keypair, an
    -- external network and a fixed network/subnet (flat, no DHCP, 127.x).
    local img = must(admin.image:create{name = P .. "-fcos", disk_format = "qcow2", container_format = "bare",
                                        visibility = "public", os_distro = "fedora-coreos"})
    fx.image = img.id
    local tmp = os.tmpname()
    proc.run{shell = "head -c 1024 /dev/zero > " .. tmp}
    must(admin.image:upload(img.id, tmp))
    os.remove(tmp)
    fx.flavor = must(admin.compute.flavors:list())[1].name
    proc.run{argv = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", STATE .. "/" .. P .. "-kp"}}
    local pub = util.read(STATE .. "/" .. P .. "-kp.pub")
    must(admin:call("POST", "compute", "/os-keypairs", {body = {keypair = {name = P .. "-kp", public_key = pub}}}))
    fx.keypair = P .. "-kp"
    local ext = must(admin.network.networks:create{name = P .. "-ext", ["router:external"] = true,
      ["provider:network_type"] = "flat", ["provider:physical_network"] = P .. "-ext"})
    fx.ext = ext.id
    must(admin.network.subnets:create{network_id = ext.id, ip_version = 4, cidr = "127.12.0.0/24", enable_dhcp = false})
    local fixed = must(admin.network.networks:create{name = P .. "-fixed", ["provider:network_type"] = "flat",
      ["provider:physical_network"] = P .. "-fixed"})
    fx.fixed = fixed.id
    fx.fixed_subnet = must(admin.network.subnets:create{network_id = fixed.id, ip_version = 4,
      cidr = "127.13.0.0/24", enable_dhcp = false}).id
  end)

  teardown(function()
    if not admin then return end
    if fx.template then ci.templates:delete(fx.template) end
    admin:call("DELETE", "compute", "/os-keypairs/" .. P .. "-kp")
    for _, id in ipairs({fx.ext, fx.fixed}) do
      for _, sn in ipairs(admin.network.subnets:list({network_id = id}) or {}) do admin.network.subnets:delete(sn.id) end
      admin.network.networks:delete(id)
    end
    if fx.image then admin.image:delete(fx.image) end
  end)

  local function template_attrs(extra)
    local t = {name = P .. "-tmpl", coe = "kubernetes", image_id = fx.image, external_network_id = fx.ext,
               fixed_network = fx.fixed, fixed_subnet = fx.fixed_subnet, flavor_id = fx.flavor,
               master_flavor_id = fx.flavor, keypair_id = fx.keypair, floating_ip_enabled = false,
               network_driver = "flannel", docker_storage_driver = "overlay2", server_type = "vm"}
    for k, v in pairs(extra or {}) do t[k] = v end
    return t
  end

  it("creates, finds and shows a cluster template; bad input is a clear error", function()
    local _, err, code = ci.templates:create(template_attrs({name = P .. "-bad", coe = "no-such-coe"}))
    assert.equal("HTTP_400", code)
    assert.matches("coe", err:lower())
    local t = must(ci.templates:create(template_attrs()))
    fx.template = t.uuid
    assert.equal(P .. "-tmpl", t.name)
    local found = must(ci.templates:find(P .. "-tmpl"))
    assert.equal(t.uuid, found.uuid)
    assert.equal("kubernetes", must(ci.templates:show(t.uuid)).coe)
  end)

  it("takes a cluster to CREATE_COMPLETE, resizes it, writes a kubeconfig and deletes it to gone", function()
    assert(fx.template, "the template test must run first")
    local created = must(ci.clusters:create{name = P .. "-c1", cluster_template_id = fx.template,
                                           master_count = 1, node_count = 1, keypair = fx.keypair})
    local id = created.uuid
    local agent = standin(id)
    finally(function()
      agent:kill("TERM")
      ci.clusters:delete(id)
    end)
    assert.equal("CREATE_COMPLETE", ci.clusters:wait(id, {timeout = 240, interval = 1}))
    local c = must(ci.clusters:find(P .. "-c1"))
    assert.equal(id, c.uuid)
    assert.equal(1, c.node_count)
    local health = must(ci:health(id))
    assert.is_true(health.status == nil or health.status == json.null or type(health.status) == "string")
    -- Deleting the template while the cluster uses it is refused.
    local _, _, tcode = ci.templates:delete(fx.template)
    assert.equal("HTTP_400", tcode)
    -- kubeconfig: the cluster's CA and a client certificate Magnum signed.
    local path = STATE .. "/" .. P .. "-kubeconfig"
    finally(function() os.remove(path) end)
    must(ci:config(id, path))
    local kc = util.read(path)
    assert.matches("server: ", kc)
    assert.matches("certificate%-authority%-data: %S+", kc)
    assert.matches("client%-certificate%-data: %S+", kc)
    assert.equal("600\n", proc.run{argv = {"stat", "-c", "%a", path}}.stdout)
    -- The client key, as the file carries it (base64), is a secret: a
    -- runbook printing the kubeconfig shows it redacted.
    local key_b64 = kc:match("client%-key%-data: (%S+)")
    assert.truthy(key_b64)
    local shown = require("bomarun.secret").redact(kc)
    assert.is_nil(shown:find(key_b64, 1, true), "the client key shows in the clear")
    assert.matches("client%-key%-data: %*%*%*", shown)
    -- Resize 1 -> 2 workers.  The stand-in stops at a final status, so a
    -- new one starts once the update is under way.
    agent:kill("TERM")
    agent:wait()
    must(ci:resize(id, 2))
    assert.equal("UPDATE_IN_PROGRESS", ci.clusters:wait(id, {ok = {"UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"},
                                                            timeout = 60, interval = 0.5}))
    agent = standin(id)
    assert.equal("UPDATE_COMPLETE", ci.clusters:wait(id, {ok = {"UPDATE_COMPLETE"}, timeout = 240, interval = 1}))
    assert.equal(2, must(ci.clusters:show(id)).node_count)
    -- Delete to 404.
    agent:kill("TERM")
    agent:wait()
    must(ci.clusters:delete(id))
    assert.equal("DELETED", ci.clusters:wait_deleted(id, {timeout = 240, interval = 1}))
  end)

  it("a cluster whose deployments fail ends CREATE_FAILED at once, with its reason", function()
    assert(fx.template, "the template test must run first")
    local created = must(ci.clusters:create{name = P .. "-c2", cluster_template_id = fx.template,
                                           master_count = 1, node_count = 1, keypair = fx.keypair})
    local id = created.uuid
    local agent = standin(id, true)
    finally(function()
      agent:kill("TERM")
      ci.clusters:delete(id)
      ci.clusters:wait_deleted(id, {timeout = 240, interval = 1})
    end)
    local v, err, code, last = ci.clusters:wait(id, {timeout = 240, interval = 1})
    assert.is_nil(v)
    assert.equal("FAILED_STATE", code)
    assert.equal("CREATE_FAILED", last)
    assert.matches("CREATE_FAILED", err)
    local c = must(ci.clusters:show(id))
    assert.is_string(c.status_reason)
    assert.is_true(#c.status_reason > 0)
  end)
end)

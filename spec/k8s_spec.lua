-- bomarun.k8s against recorded real Kubernetes API responses.
--
-- No kube-apiserver can run here (Debian ships only kubectl), so the spec
-- starts tests/stack/k8s/replay_server.py: HTTPS on 127.0.0.1 (a random
-- free port) with a CA it makes, client-certificate authentication, and the
-- recordings in tests/data/k8s-recorded (a copy of the shared recordings;
-- each file's source is in its README) served as an apiserver sends them.
-- The server is stopped by its PID when the spec ends.  Addresses inside
-- the recordings (node IPs, load-balancer IPs) are read, never contacted.
local crypto = require "bomarun._crypto"
local http = require "bomarun.http"
local json = require "bomarun.json"
local k8s = require "bomarun.k8s"
local proc = require "bomarun.proc"
local secret = require "bomarun.secret"
local task = require "bomarun.task"
local util = require "support.util"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local DATA = os.getenv("BOMARUN_K8S_RECORDED") or (SRC .. "/tests/data/k8s-recorded")
local SERVER_PY = SRC .. "/tests/stack/k8s/replay_server.py"
local TOKEN = "replay-bearer-" .. string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))

local server, port, base, certs

local function cert(name) return certs .. "/" .. name end
local function b64file(name) return crypto.b64encode(util.read(cert(name))) end
local function recording(name) return util.read(DATA .. "/" .. name) end

-- The replay server's control endpoints (with the client certificate).
local function control(method, path, body)
  local r = assert(http.request{method = method, url = base .. path, body = body, cainfo = cert("ca.crt"),
                                client_cert = cert("client.crt"), client_key = cert("client.key")})
  assert(r.status == 200, "replay server " .. path .. ": HTTP " .. r.status .. " " .. tostring(r.body))
  return json.decode(r.body)
end

-- Lay scenarios (tests/stack/k8s/routes.json) and routes over the default
-- ones; clears what clients wrote and the request log.
local function scenario(use, routes)
  control("PUT", "/_replay/scenario", {use = use or json.array(), routes = routes or {}})
  control("DELETE", "/_replay/requests")
end

local function requests(filter)
  local out = {}
  for _, r in ipairs(control("GET", "/_replay/requests")) do
    if not filter or filter(r) then out[#out + 1] = r end
  end
  return out
end

local function gets(path)
  return requests(function(r) return r.method == "GET" and r.path == path end)
end

-- A kubeconfig as Magnum returns it (bomarun.openstack's ci:config writes
-- the same layout): the CA, client certificate and key as base64 data.
local function magnum_kubeconfig(dir, opts)
  opts = opts or {}
  local lines = {"apiVersion: v1", "kind: Config", "clusters:", "- name: k8s-replay", "  cluster:",
    "    server: " .. (opts.server or base), "    certificate-authority-data: " .. b64file("ca.crt"),
    "users:", "- name: admin", "  user:",
    "    client-certificate-data: " .. b64file(opts.cert or "client.crt"),
    "    client-key-data: " .. b64file(opts.key or "client.key"),
    "contexts:", "- name: default", "  context:", "    cluster: k8s-replay", "    user: admin",
    "current-context: default", ""}
  return util.write(dir .. "/" .. (opts.name or "magnum-kubeconfig"), table.concat(lines, "\n"))
end

local function connect(extra)
  local opts = {server = base, ca = cert("ca.crt"), cert = cert("client.crt"), key = cert("client.key"), retries = 0}
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(k8s.connect(opts))
end

local FAST = {timeout = 1, interval = 0.1, quiet = true}
local function fast(extra)
  local o = {}
  for k, v in pairs(FAST) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

describe("bomarun.k8s", function()
  setup(function()
    certs = os.tmpname()
    os.remove(certs)
    assert(require("bomarun._host").mkdir(certs))
    assert(util.read(DATA .. "/README.md"), "the recordings are not at " .. DATA)
    server = assert(proc.spawn{argv = {"/usr/bin/python3", SERVER_PY, "--data", DATA, "--certs", certs,
                                       "--token", TOKEN},
                               quiet = true, keep = true, on_line = function(l) port = port or tonumber(l) end})
    local t0 = task.now()
    while not port and task.now() - t0 < 30 do task.sleep(0.02) end
    assert(port, "the replay server did not start")
    base = "https://127.0.0.1:" .. port
  end)
  teardown(function()
    if server then
      -- By its PID (the process group it leads), and waited for.
      local pid = server:pid()
      server:kill("TERM")
      server:wait()
      assert(util.wait_dead(pid, 5), "the replay server outlived the spec")
    end
    if certs then proc.run{argv = {"rm", "-rf", certs}} end
  end)
  before_each(function() scenario() end)

  describe("kubeconfig", function()
    it("reads the kubeconfig Magnum returns: server, CA, client certificate and key as base64 data", function()
      local path = magnum_kubeconfig(util.tmpdir(finally))
      local doc = assert(k8s.kubeconfig.load(path))
      local s = assert(k8s.kubeconfig.resolve(doc, {source = path}))
      assert.equal(base, s.server)
      assert.equal("default", s.context)
      assert.equal(util.read(cert("ca.crt")), s.ca_pem)
      assert.equal(util.read(cert("client.crt")), s.cert_pem)
      assert.equal(util.read(cert("client.key")), s.key_pem)
      assert.is_nil(s.ca_file)
      local kc = assert(k8s.connect{kubeconfig = path})
      assert.equal("v1.20.0", kc.server_version.gitVersion)
      assert.equal("default", kc.namespace)
      local nodes = assert(kc:list("nodes"))
      assert.equal(3, #nodes)
      assert.equal("x509:admin", gets("/api/v1/nodes")[1].user)
    end)

    it("resolves file paths against the kubeconfig's directory and picks contexts, users and namespaces", function()
      local dir = util.tmpdir(finally)
      for _, f in ipairs({"ca.crt", "client.crt", "client.key"}) do util.write(dir .. "/" .. f, util.read(cert(f))) end
      util.write(dir .. "/token", TOKEN .. "\n")
      util.write(dir .. "/config", table.concat({
        "apiVersion: v1", "kind: Config", "current-context: certs",
        "clusters:",
        "- name: replay", "  cluster:", "    server: " .. base, "    certificate-authority: ca.crt",
        "users:",
        "- name: cert-user", "  user:", "    client-certificate: client.crt", "    client-key: client.key",
        "- name: token-user", "  user:", "    tokenFile: token",
        "contexts:",
        "- name: certs", "  context:", "    cluster: replay", "    user: cert-user", "    namespace: kube-system",
        "- name: tokens", "  context:", "    cluster: replay", "    user: token-user", ""}, "\n"))
      local kc = assert(k8s.connect{kubeconfig = dir .. "/config"})
      assert.equal("kube-system", kc.namespace)
      assert.equal(16, #assert(kc:list("pods")))   -- the context's namespace
      assert.equal("x509:admin", gets("/api/v1/namespaces/kube-system/pods")[1].user)
      scenario()
      local kt = assert(k8s.connect{kubeconfig = dir .. "/config", context = "tokens"})
      assert.equal("default", kt.namespace)
      assert.equal(3, #assert(kt:list("nodes")))
      assert.equal("token", gets("/api/v1/nodes")[1].user)
      assert.equal(dir .. "/ca.crt", kt._settings.ca_file)
    end)

    it("says what is wrong with a kubeconfig it cannot use", function()
      local dir = util.tmpdir(finally)
      local _, err, code = k8s.connect{kubeconfig = dir .. "/absent"}
      assert.equal("CONFIG", code)
      assert.matches("cannot read kubeconfig", err)
      local path = magnum_kubeconfig(dir)
      _, err, code = k8s.connect{kubeconfig = path, context = "nope"}
      assert.equal("CONFIG", code)
      assert.matches("no context 'nope'", err)
      util.write(dir .. "/exec", table.concat({"apiVersion: v1", "current-context: c",
        "clusters:", "- name: x", "  cluster:", "    server: " .. base,
        "users:", "- name: u", "  user:", "    exec:", "      command: aws-iam-authenticator",
        "contexts:", "- name: c", "  context:", "    cluster: x", "    user: u", ""}, "\n"))
      _, err, code = k8s.connect{kubeconfig = dir .. "/exec"}
      assert.equal("CONFIG", code)
      assert.matches("exec plugin", err)
      assert.matches("kubectl", err)
      util.write(dir .. "/bad", util.read(path):gsub("certificate%-authority%-data: %S+",
        "certificate-authority-data: bm90IGEgcGVt"))
      _, err, code = k8s.connect{kubeconfig = dir .. "/bad"}
      assert.equal("CONFIG", code)
      assert.matches("certificate%-authority%-data", err)
      util.write(dir .. "/ctx", util.read(path):gsub("    cluster: k8s%-replay\n", "    cluster: elsewhere\n"))
      _, err, code = k8s.connect{kubeconfig = dir .. "/ctx"}
      assert.equal("CONFIG", code)
      assert.matches("names cluster 'elsewhere'", err)
    end)
  end)

  describe("over HTTPS with client-certificate authentication", function()
    it("connects with certificate and key files, PEM data, base64 data, or a bearer token", function()
      assert.equal("v1.20.0", connect().server_version.gitVersion)
      local pem = connect{ca = false, cert = false, key = false, ca_data = util.read(cert("ca.crt")),
                          cert_data = util.read(cert("client.crt")), key_data = util.read(cert("client.key"))}
      assert.equal(3, #assert(pem:list("nodes")))
      local b64 = connect{ca = false, cert = false, key = false, ca_data = b64file("ca.crt"),
                          cert_data = b64file("client.crt"), key_data = b64file("client.key")}
      assert.equal(3, #assert(b64:list("nodes")))
      local tok = connect{cert = false, key = false, token = TOKEN}
      assert.equal(3, #assert(tok:list("nodes")))
      local users = {}
      for _, r in ipairs(gets("/api/v1/nodes")) do users[#users + 1] = r.user end
      assert.same({"x509:admin", "x509:admin", "token"}, users)
    end)

    it("answers 401 Unauthorized without a client certificate, or with one from another CA", function()
      local _, err, code = k8s.connect{server = base, ca = cert("ca.crt")}
      assert.equal("Unauthorized", code)
      assert.equal("k8s: GET /version: Unauthorized (Unauthorized, HTTP 401)", err)
      local kc = assert(k8s.connect{server = base, ca = cert("ca.crt"), probe = false})
      _, err, code = kc:list("nodes")
      assert.equal("Unauthorized", code)
      assert.matches("^k8s: GET /api/v1/nodes%?limit=500: Unauthorized", err)
      _, err, code = k8s.connect{server = base, ca = cert("ca.crt"), cert = cert("rogue-client.crt"),
                                 key = cert("rogue-client.key")}
      assert.equal("Unauthorized", code)
      assert.matches("%(Unauthorized, HTTP 401%)", err)
      _, _, code = k8s.connect{server = base, ca = cert("ca.crt"), token = "not-the-token"}
      assert.equal("Unauthorized", code)
      local api = requests(function(r) return not r.path:match("^/_replay/") end)
      assert.equal(4, #api)   -- /version, /api/v1/nodes, /version, /version
      for _, r in ipairs(api) do assert.equal(json.null, r.user) end
    end)

    it("refuses a server its CA did not sign, unless insecure = true (then it warns)", function()
      local _, err, code = k8s.connect{server = base, cert = cert("client.crt"), key = cert("client.key")}
      assert.equal("TLS", code)
      assert.matches("certificate", err)
      _, _, code = k8s.connect{server = base, ca = cert("rogue-ca.crt"), cert = cert("client.crt"),
                               key = cert("client.key")}
      assert.equal("TLS", code)
      -- insecure, in a child run so its console can be read.
      local dir = util.tmpdir(finally)
      local script = util.write(dir .. "/insecure.lua", string.format([[
        local k8s = require "bomarun.k8s"
        local kc = assert(k8s.connect{server = %q, cert = %q, key = %q, insecure = true})
        print("nodes", #assert(kc:list("nodes")))
      ]], base, cert("client.crt"), cert("client.key")))
      local r = util.bomarun({script})
      assert.equal(0, r.code, r.stderr)
      assert.matches("WARNING: k8s: TLS verification of " .. base:gsub("%p", "%%%0") .. " is OFF", r.stdout)
      assert.matches("nodes\t3", r.stdout)
    end)

    it("reports a refused connection with its transport code", function()
      local _, err, code = k8s.connect{server = "https://127.0.0.1:1", ca = cert("ca.crt")}
      assert.equal("REFUSED", code)
      assert.matches("^k8s: GET https://127%.0%.0%.1:1/version: ", err)
    end)

    it("answers as the apiserver does on the wire: compact JSON ending in one newline, pretty for curl", function()
      local function raw(path, ua)
        local r = assert(http.request{url = base .. path, cainfo = cert("ca.crt"), client_cert = cert("client.crt"),
                                      client_key = cert("client.key"), headers = {["User-Agent"] = ua}})
        return r
      end
      -- A wire recording goes out byte for byte.
      scenario({"openshift-3.11"})
      local r = raw("/api/v1/nodes")
      assert.equal(200, r.status)
      assert.equal(recording("nodes-openshift3.11-single-wire.json"), r.body)
      assert.equal("application/json", r.headers["content-type"])
      assert.truthy(r.headers["audit-id"])
      -- A re-serialized one is compacted, keys in their recorded order.
      r = raw("/version")
      assert.equal('{"major":"1","minor":"20","gitVersion":"v1.20.0",', r.body:sub(1, 49))
      assert.equal("\n", r.body:sub(-1))
      assert.is_nil(r.body:sub(1, -2):find("\n", 1, true))
      -- The recorded 403 is the wire body, 307 bytes as its Content-Length said.
      r = raw("/api/v1/namespaces/default/pods")
      assert.equal(403, r.status)
      assert.equal(307, #r.body)
      assert.equal(recording("status-403-forbidden-list-pods-gke.json"), r.body)
      -- A bare item array is served as a List; items carry no kind.
      scenario({"calico-aws-v1.8"})
      local doc = assert(json.decode(raw("/api/v1/nodes").body))
      assert.equal("NodeList", doc.kind)
      assert.equal(3, #doc.items)
      assert.is_nil(doc.items[1].kind)
      -- curl gets it pretty-printed.
      r = raw("/version", "curl/7.88.1")
      assert.equal('{\n  "major": "1",', r.body:sub(1, 17))
    end)
  end)

  describe("get, list, create, patch, delete", function()
    it("lists every page, following continue, and returns a plain list with kind and apiVersion", function()
      local kc = connect()
      local nodes = assert(kc:list("nodes", {limit = 1}))
      assert.equal(3, #nodes)
      assert.same({"10.196.0.167", "10.196.0.253", "10.196.0.41"},
                  {nodes[1].metadata.name, nodes[2].metadata.name, nodes[3].metadata.name})
      assert.equal("Node", nodes[1].kind)
      assert.equal("v1", nodes[1].apiVersion)
      assert.is_nil(nodes.pages)
      local seen = gets("/api/v1/nodes")
      assert.equal(3, #seen)
      assert.is_nil(seen[1].query["continue"])
      assert.truthy(seen[2].query["continue"])
      assert.truthy(seen[3].query["continue"])
      assert.equal("1", seen[3].query.limit)
      -- Pages of 5 over the 16 kube-system pods.
      assert.equal(16, #assert(kc:list("pods", {namespace = "kube-system", limit = 5})))
      assert.equal(4, #gets("/api/v1/namespaces/kube-system/pods"))
    end)

    it("sends label and field selectors", function()
      local kc = connect()
      scenario({"calico-aws-v1.8"})
      local calico = assert(kc:list("pods", {namespace = "kube-system", label_selector = "k8s-app=calico-node"}))
      assert.equal(3, #calico)
      for _, p in ipairs(calico) do assert.matches("^calico%-node%-", p.metadata.name) end
      assert.equal("k8s-app=calico-node", gets("/api/v1/namespaces/kube-system/pods")[1].query.labelSelector)
      scenario({"kube-system-kind-pending"})
      local pending = assert(kc:list("pods", {namespace = "kube-system", field_selector = "status.phase=Pending"}))
      assert.equal(4, #pending)
      -- All namespaces, and one namespace of an all-namespaces recording.
      scenario({"openshift-3.11"})
      assert.equal(22, #assert(kc:list("pods", {all_namespaces = true})))
      local p0 = assert(kc:list("pods", {namespace = "my-project-0"}))
      assert.equal(2, #p0)
    end)

    it("gets one object; a missing one is NotFound, a forbidden list Forbidden, with the API's message", function()
      local kc = connect()
      local svc = assert(kc:get("services", "istio-ingressgateway", {namespace = "istio-system"}))
      assert.equal("Service", svc.kind)
      assert.equal("LoadBalancer", svc.spec.type)
      local _, err, code = kc:get("pods", "abc", {namespace = "kube-system"})
      assert.equal("NotFound", code)
      assert.equal('k8s: GET /api/v1/namespaces/kube-system/pods/abc: pods "abc" not found (NotFound, HTTP 404)', err)
      _, err, code = kc:list("pods", {namespace = "default"})
      assert.equal("Forbidden", code)
      assert.matches('cannot list pods in the namespace "default"', err)
      assert.matches("%(Forbidden, HTTP 403%)$", err)
      _, err, code = kc:patch("pods", "pod-labeler-c7b4fd44d-mr8qh", {metadata = {labels = {a = "b"}}},
                              {namespace = "default"})
      assert.equal("Forbidden", code)
      assert.matches('^k8s: PATCH /api/v1/namespaces/default/pods/pod%-labeler%-c7b4fd44d%-mr8qh: pods ', err)
      _, err, code = kc:request("GET", "/apis/example.com/v1/widgets")
      assert.equal("NotFound", code)
      assert.matches("the server could not find the requested resource", err)
    end)

    it("creates, patches (merge, strategic, json) and deletes, with the API's content types", function()
      local kc = connect()
      local manifest = {apiVersion = "v1", kind = "Service", metadata = {name = "rr", namespace = "default"},
                        spec = {type = "LoadBalancer", selector = {app = "rr"}, ports = {{port = 80}}}}
      local created = assert(kc:create(manifest))
      assert.truthy(created.metadata.uid)
      local _, err, code = kc:create(manifest)
      assert.equal("AlreadyExists", code)
      assert.matches('services "rr" already exists', err)
      assert.equal("b", assert(kc:patch("services", "rr", {metadata = {labels = {a = "b"}}})).metadata.labels.a)
      assert.equal("d", assert(kc:patch("services", "rr", {metadata = {labels = {c = "d"}}},
                                        {type = "strategic"})).metadata.labels.c)
      local p = assert(kc:patch("services", "rr", {{op = "replace", path = "/spec/type", value = "ClusterIP"}},
                                {type = "json"}))
      assert.equal("ClusterIP", p.spec.type)
      local types = {}
      for _, r in ipairs(requests(function(r) return r.method == "PATCH" end)) do types[#types + 1] = r.content_type end
      assert.same({"application/merge-patch+json", "application/strategic-merge-patch+json",
                   "application/json-patch+json"}, types)
      assert.equal("ClusterIP", assert(kc:get("services", "rr")).spec.type)
      local names = {}
      for _, s in ipairs(assert(kc:list("services", {all_namespaces = true}))) do names[s.metadata.name] = true end
      assert.is_true(names.rr)
      assert.truthy(kc:delete("services", "rr", {propagation_policy = "Background"}))
      _, _, code = kc:get("services", "rr")
      assert.equal("NotFound", code)
      _, _, code = kc:delete("services", "rr")
      assert.equal("NotFound", code)
      assert.is_true(kc:delete("services", "rr", {ignore_not_found = true}))
      -- A Deployment goes to its group's path.
      assert(kc:create({apiVersion = "apps/v1", kind = "Deployment", metadata = {name = "web"},
                        spec = {replicas = 1}}, {namespace = "team-a"}))
      assert.equal(1, #requests(function(r)
        return r.method == "POST" and r.path == "/apis/apps/v1/namespaces/team-a/deployments"
      end))
    end)

    it("maps resource names to API paths, core and Cluster API, by plural, Kind or explicit group/version", function()
      local kc = connect{probe = false}
      assert.equal("/api/v1/nodes", kc:path("nodes"))
      assert.equal("/api/v1/nodes/n1", kc:path("Node", {name = "n1"}))
      assert.equal("/api/v1/namespaces/default/pods", kc:path("pods"))
      assert.equal("/api/v1/pods", kc:path("pod", {all_namespaces = true}))
      assert.equal("/api/v1/namespaces/x/pods/p/log", kc:path("pods", {namespace = "x", name = "p", subresource = "log"}))
      assert.equal("/api/v1/namespaces", kc:path("namespaces"))
      assert.equal("/api/v1/namespaces/x/endpoints", kc:path("endpoints", {namespace = "x"}))
      assert.equal("/api/v1/namespaces/x/configmaps", kc:path("configmaps", {namespace = "x"}))
      assert.equal("/api/v1/namespaces/x/events", kc:path("events", {namespace = "x"}))
      assert.equal("/api/v1/namespaces/x/services", kc:path("Service", {namespace = "x"}))
      for _, r in ipairs({"deployments", "daemonsets", "replicasets"}) do
        assert.equal("/apis/apps/v1/namespaces/x/" .. r, kc:path(r, {namespace = "x"}))
      end
      assert.equal("/apis/cluster.x-k8s.io/v1beta1/namespaces/x/clusters/c", kc:path("Cluster", {namespace = "x", name = "c"}))
      assert.equal("/apis/cluster.x-k8s.io/v1beta1/machines", kc:path("machines", {all_namespaces = true}))
      assert.equal("/apis/infrastructure.cluster.x-k8s.io/v1beta1/namespaces/x/openstackclusters",
                   kc:path("OpenStackCluster", {namespace = "x"}))
      assert.equal("/apis/infrastructure.cluster.x-k8s.io/v1beta2/namespaces/x/ociclusters",
                   kc:path({group = "infrastructure.cluster.x-k8s.io", version = "v1beta2", resource = "ociclusters"},
                           {namespace = "x"}))
      local v2 = connect{probe = false, versions = {["cluster.x-k8s.io"] = "v1beta2"}}
      assert.equal("/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters", v2:path("clusters"))
      assert.has_error(function() kc:path("gizmos") end)
      -- An OpenStackCluster the server does not have: NotFound, naming the group.
      local _, err, code = kc:get("openstackclusters", "capi-c1", {namespace = "capi"})
      assert.equal("NotFound", code)
      assert.matches("/apis/infrastructure%.cluster%.x%-k8s%.io/v1beta1/namespaces/capi/openstackclusters/capi%-c1", err)
      assert.matches('openstackclusters%.infrastructure%.cluster%.x%-k8s%.io "capi%-c1" not found', err)
    end)
  end)

  describe("waits", function()
    it("wait_nodes passes on the 3 Ready nodes at their version; another version fails at once", function()
      local kc = connect()
      local nodes = assert(kc:wait_nodes(fast{count = 3, version = "v1.22"}))
      assert.equal(3, #nodes)
      assert(kc:wait_nodes(fast{count = 3, version = "1.22.5"}))
      local t0 = task.now()
      local _, err, code = kc:wait_nodes(fast{count = 3, version = "v1.23", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.is_true(task.now() - t0 < 5)
      assert.matches("10%.196%.0%.167 runs v1%.22%.5", err)
      assert.matches("expected v1%.23", err)
    end)

    it("wait_nodes times out on the NotReady node, naming it and why, re-reading every attempt", function()
      local kc = connect()
      scenario({"nodes-1-notready"})
      local _, err, code = kc:wait_nodes(fast{count = 3, version = "v1.20"})
      assert.equal("TIMEOUT", code)
      assert.matches("2 of 3 Ready", err)
      assert.matches("kind%-worker %(KubeletNotReady: runtime network not ready", err)
      assert.is_nil(err:find("kind-worker2 (", 1, true))
      assert.is_true(#gets("/api/v1/nodes") >= 3)
      -- Two Ready are enough when the NotReady one may stay.
      assert.equal(3, #assert(kc:wait_nodes(fast{count = 2, all = false})))
    end)

    it("wait_nodes waits through NotReady until the nodes are Ready", function()
      local kc = connect()
      scenario(nil, {["GET /api/v1/nodes"] = {"nodes-kind-1cp-2workers-1notready.json",
        "nodes-kind-1cp-2workers-1notready.json", "nodes-oke-3-ready-v1.22.5.json"}})
      assert.equal(3, #assert(kc:wait_nodes(fast{count = 3, timeout = 10})))
      assert.equal(3, #gets("/api/v1/nodes"))
    end)

    it("wait_pods passes when every pod runs and is ready", function()
      local kc = connect()
      assert.equal(16, #assert(kc:wait_pods(fast{namespace = "kube-system"})))
      scenario({"calico-aws-v1.8"})
      assert.equal(3, #assert(kc:wait_pods(fast{namespace = "kube-system", label_selector = "k8s-app=calico-node"})))
      assert.equal(5, #assert(kc:wait_pods(fast{namespace = "istio-system", min = 5})))
    end)

    it("wait_pods fails at once on CrashLoopBackOff, naming pod, container and reason, with the last log lines", function()
      local kc = connect()
      local t0 = task.now()
      local _, err, code, problem = kc:wait_pods(fast{namespace = "verrazzano-ingress-nginx", timeout = 60})
      assert.equal("FAILED_STATE", code)
      assert.is_true(task.now() - t0 < 5, "it waited")
      assert.equal(1, #gets("/api/v1/namespaces/verrazzano-ingress-nginx/pods"))
      assert.equal("ingress-controller-ingress-nginx-controller-7994b5645-p8m5g", problem.pod)
      assert.equal("controller", problem.container)
      assert.equal("CrashLoopBackOff", problem.reason)
      assert.equal(7, problem.restarts)
      assert.matches("pod verrazzano%-ingress%-nginx/ingress%-controller%-ingress%-nginx%-controller%-7994b5645%-p8m5g "
                     .. "container controller: CrashLoopBackOff: back%-off 5m0s", err)
      assert.matches("last log lines of", err)
      assert.matches("ssl.go:389%] unexpected error storing fake SSL Cert", err)
      assert.matches("permission denied", problem.logs)
      local logreq = gets("/api/v1/namespaces/verrazzano-ingress-nginx/pods/" .. problem.pod .. "/log")
      assert.equal(1, #logreq)
      assert.same({container = "controller", tailLines = "20"}, logreq[1].query)
    end)

    it("wait_pods fails at once on the crash-looping pods of an all-namespaces recording; no log is said so", function()
      local kc = connect()
      local _, err, code, problem = kc:wait_pods(fast{namespace = "heptio-sonobuoy", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.equal("plugin", problem.container)
      assert.equal("CrashLoopBackOff", problem.reason)
      assert.matches("^sonobuoy%-singlefileds%-daemon%-set", problem.pod)
      assert.matches("also pod heptio%-sonobuoy/sonobuoy%-tarresultsds", err)
      assert.matches("%(no log lines: k8s: GET ", err)
    end)

    it("wait_pods fails at once on ImagePullBackOff, naming the image", function()
      local kc = connect()
      local _, err, code, problem = kc:wait_pods(fast{namespace = "bobs-books", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.equal("robert-helidon-5896799bb-948hf", problem.pod)
      assert.equal("robert-helidon-stock-application", problem.container)
      assert.equal("ImagePullBackOff", problem.reason)
      assert.matches('Back%-off pulling image "container%-registry%.oracle%.com/verrazzano/example%-roberts', err)
      assert.equal(3, select(2, err:gsub("ImagePullBackOff", "")))
      -- No log is asked for a container that never started.
      assert.equal(0, #requests(function(r) return r.path:match("/log$") end))
    end)

    it("wait_pods fails at once on CreateContainerError", function()
      local kc = connect()
      scenario({"openshift-3.11"})
      local _, err, code, problem = kc:wait_pods(fast{namespace = "my-project-1", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.equal("my-pod-1", problem.pod)
      assert.equal("my-container", problem.container)
      assert.equal("CreateContainerError", problem.reason)
      assert.matches("container my%-container: CreateContainerError", err)
      -- Across every namespace, the three of them.
      _, err = kc:wait_pods(fast{all_namespaces = true, timeout = 30})
      assert.equal(3, select(2, err:gsub("CreateContainerError", "")))
    end)

    it("wait_pods fails at once on a pod Pending (Unschedulable) past the deadline", function()
      local kc = connect()
      local _, err, code, problem = kc:wait_pods(fast{namespace = "verrazzano-system", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.equal("vmi-system-es-master-0", problem.pod)
      assert.equal("Unschedulable", problem.reason)
      assert.is_nil(problem.container)
      assert.matches("Unschedulable: Pending for %d+d", err)
      assert.matches("0/1 nodes are available: 1 Insufficient memory%.", err)
      scenario({"kube-system-kind-pending"})
      _, err, code, problem = kc:wait_pods(fast{namespace = "kube-system", pending_deadline = 600, timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.equal("Unschedulable", problem.reason)
      assert.matches("had taint {node%.kubernetes%.io/not%-ready: }", err)
    end)

    it("wait_pods keeps waiting on a pod Pending within its deadline, and names it on the timeout", function()
      local kc = connect()
      scenario({"verrazzano-system-podinitializing"})
      local _, err, code = kc:wait_pods(fast{namespace = "verrazzano-system", pending_deadline = 1e12})
      assert.equal("TIMEOUT", code)
      assert.matches("0/1 ready; not ready: verrazzano%-system/vmi%-system%-prometheus%-0%-7544644cdb%-8pjwd", err)
      assert.matches("PodInitializing", err)
      assert.is_true(#gets("/api/v1/namespaces/verrazzano-system/pods") >= 3)
      -- Past the deadline it is a failure, with the reason it waits on.
      local _, err2, code2, problem = kc:wait_pods(fast{namespace = "verrazzano-system", timeout = 30})
      assert.equal("FAILED_STATE", code2)
      assert.equal("PodInitializing", problem.reason)
      assert.matches("Pending for", err2)
    end)

    it("wait_pods stops at once when the API forbids the list", function()
      local kc = connect()
      local t0 = task.now()
      local _, err, code = kc:wait_pods(fast{namespace = "default", timeout = 30})
      assert.equal("Forbidden", code)
      assert.matches("cannot list pods", err)
      assert.is_true(task.now() - t0 < 5)
    end)

    it("pod_problem: a failed init container (the real podinitializing pod, its init container made to fail)", function()
      -- No recording has a failed init container: take the real pod and
      -- change only its init container's state.
      local doc = assert(json.decode(recording("pods-verrazzano-system-pending-podinitializing.json")))
      local pod = doc.items[1]
      assert.is_nil(k8s.pod_problem(pod))
      local init = pod.status.initContainerStatuses[1]
      init.state = {terminated = {exitCode = 1, reason = "Error", message = "config invalid"}}
      local p = assert(k8s.pod_problem(pod))
      assert.equal("prometheus-init", p.container)
      assert.is_true(p.init)
      assert.equal("Error", p.reason)
      assert.equal("exit code 1: config invalid", p.message)
      init.state = {waiting = {reason = "CrashLoopBackOff", message = "back-off 10s restarting failed container"}}
      p = assert(k8s.pod_problem(pod))
      assert.is_true(p.init)
      assert.equal("CrashLoopBackOff", p.reason)
      init.state = {waiting = {reason = "ErrImagePull", message = "rpc error: code = Unknown"}}
      assert.equal("ErrImagePull", k8s.pod_problem(pod).reason)
    end)

    it("service_address gives the LoadBalancer's external IP; another type fails at once", function()
      local kc = connect()
      local addr, svc = kc:service_address("istio-ingressgateway", fast{namespace = "istio-system"})
      assert.equal("138.3.81.146", addr)
      assert.equal("istio-ingressgateway", svc.metadata.name)
      assert.equal("138.3.78.28", kc:service_address("ingress-controller-ingress-nginx-controller",
                                                     fast{namespace = "ingress-nginx"}))
      local _, err, code = kc:service_address("istiod", fast{namespace = "istio-system", timeout = 30})
      assert.equal("FAILED_STATE", code)
      assert.matches("of type ClusterIP", err)
      -- A LoadBalancer with no address yet: the wait names what it last saw.
      assert(kc:create{apiVersion = "v1", kind = "Service", metadata = {name = "rr", namespace = "default"},
                       spec = {type = "LoadBalancer"}, status = {loadBalancer = {}}})
      _, err, code = kc:service_address("rr", fast{namespace = "default"})
      assert.equal("TIMEOUT", code)
      assert.matches("external address of service default/rr: none after", err)
      assert.is_true(#requests(function(r) return r.path == "/api/v1/namespaces/default/services/rr" end) >= 3)
    end)
  end)

  describe("Cluster API conditions", function()
    it("reads v1beta1 and v1beta2 conditions, with reasons, severities and messages", function()
      local v1b2 = assert(json.decode(recording("capi-cluster-v1beta2-available-rollingout-trimmed.json")))
      local c = k8s.conditions(v1b2)
      assert.equal("True", c.Available.status)
      assert.equal("True", c.InfrastructureReady.status)
      assert.equal("Unknown", c.WorkerMachinesReady.status)
      assert.matches("Waiting for Metal3Machine", c.WorkerMachinesReady.message)
      local v1b1 = assert(json.decode(recording("capi-cluster-v1beta1-azure-scalingup.json")))
      c = k8s.conditions(v1b1)
      assert.equal("False", c.Ready.status)
      assert.equal("ScalingUp", c.Ready.reason)
      assert.equal("Warning", c.Ready.severity)
      assert.equal("Scaling up control plane to 3 replicas (actual 2)", c.Ready.message)
      local oci = assert(json.decode(recording("capi-ociclusterlist-v1beta2-not-ready-trimmed.json"))).items[1]
      assert.equal("False", k8s.conditions(oci).Ready.status)
      oci.status.conditions = nil   -- the provider's status.ready alone
      assert.equal("status.ready", k8s.conditions(oci).Ready.source)
      assert.equal("False", k8s.conditions(oci).Ready.status)
      -- A v1beta1 object carrying v1beta2 conditions, and a terminal failure
      -- (the message is CAPO's own, from kubernetes-sigs/cluster-api-provider-openstack#1197).
      local obj = {status = {conditions = {{type = "Ready", status = "False", reason = "LoadBalancerFailed"}},
                             v1beta2 = {conditions = {{type = "Available", status = "False", reason = "NotAvailable"}}},
                             failureReason = "UpdateError",
                             failureMessage = 'failed to reconcile load balancer: load balancer "b7a42f2d" is not '
                               .. "in expected state ACTIVE, current state is PENDING_UPDATE"}}
      c = k8s.conditions(obj)
      assert.equal("LoadBalancerFailed", c.Ready.reason)
      assert.equal("v1beta2.conditions", c.Available.source)
      assert.matches("^UpdateError: failed to reconcile load balancer", k8s.capi_failure(obj))
      assert.same(c, connect{probe = false}:conditions(obj))
    end)

    it("wait_condition: Ready on the ready Cluster and Machine; not-ready ones time out with reason and message", function()
      local kc = connect()
      local c, obj = kc:wait_condition("clusters", "c-nctzd", "Ready", fast{namespace = "c-nctzd"})
      assert.equal("True", c.status)
      assert.equal("Cluster", obj.kind)
      assert(kc:wait_condition("machines", "c-h78bf-control-plane-wr9n9", "InfrastructureReady",
                               fast{namespace = "c-h78bf"}))
      scenario({"capi-not-ready"})
      local _, err, code = kc:wait_condition("clusters", "c-nctzd", "Ready", fast{namespace = "c-nctzd"})
      assert.equal("TIMEOUT", code)
      assert.matches("clusters%.cluster%.x%-k8s%.io c%-nctzd/c%-nctzd: Ready not True after", err)
      assert.matches("False WaitingForOCNEInit %[Info%]", err)
      _, err, code = kc:wait_condition("machines", "pool-u52w2-7c87f895ddx9jk4d-42bj6", "Ready",
                                       fast{namespace = "c-pzd2r"})
      assert.equal("TIMEOUT", code)
      assert.matches("WaitingForBootstrapData %[Info%]: 0 of 2 completed", err)
      _, err = kc:wait_condition("machines", "pool-u52w2-7c87f895ddx9jk4d-42bj6", "InfrastructureReady",
                                 fast{namespace = "c-pzd2r"})
      assert.matches("InfrastructureReady not True after .*: False WaitingForBootstrapData", err)
      local oci = {group = "infrastructure.cluster.x-k8s.io", version = "v1beta2", resource = "ociclusters"}
      _, err, code = kc:wait_condition(oci, "c-drdlq", "Ready", fast{namespace = "c-drdlq"})
      assert.equal("TIMEOUT", code)
      assert.matches("ociclusters%.infrastructure%.cluster%.x%-k8s%.io c%-drdlq/c%-drdlq: Ready not True", err)
      scenario()
      assert.equal("True", assert(kc:wait_condition(oci, "c-drdlq", "Ready", fast{namespace = "c-drdlq"})).status)
    end)

    it("wait_condition on v1beta2 Available, v1alpha3 InfrastructureReady, and a reason that fails at once", function()
      local v2 = connect{versions = {["cluster.x-k8s.io"] = "v1beta2"}}
      local c = assert(v2:wait_condition("clusters", "cluster-foo", "Available", fast{namespace = "default"}))
      assert.equal("Available", c.reason)
      assert.equal("True", assert(v2:wait_condition("clusters", "cluster-foo", "InfrastructureReady",
                                                     fast{namespace = "default"})).status)
      local a3 = connect{versions = {["cluster.x-k8s.io"] = "v1alpha3"}}
      local _, err, code = a3:wait_condition("clusters", "testcluster2", "InfrastructureReady",
                                             fast{namespace = "default"})
      assert.equal("TIMEOUT", code)
      assert.matches("False WaitingForInfrastructure", err)
      local t0 = task.now()
      _, err, code = a3:wait_condition("clusters", "testcluster2", "InfrastructureReady",
                                       fast{namespace = "default", timeout = 30,
                                            fail_reasons = {"WaitingForInfrastructure"}})
      assert.equal("FAILED_STATE", code)
      assert.is_true(task.now() - t0 < 5)
      assert.matches("InfrastructureReady False WaitingForInfrastructure", err)
      assert(a3:wait_condition("clusters", "testcluster1", "InfrastructureReady", fast{namespace = "default"}))
    end)

    it("wait_condition re-reads until the Cluster turns Ready", function()
      local kc = connect()
      scenario(nil, {["GET /apis/cluster.x-k8s.io/v1beta1/clusters"] = {
        "capi-clusterlist-v1beta1-ocne-not-ready-trimmed.json", "capi-clusterlist-v1beta1-ocne-ready-trimmed.json"}})
      assert(kc:wait_condition("clusters", "c-nctzd", "Ready", fast{namespace = "c-nctzd", timeout = 10}))
      assert.equal(2, #gets("/apis/cluster.x-k8s.io/v1beta1/namespaces/c-nctzd/clusters/c-nctzd"))
    end)
  end)

  describe("Debian's kubectl against the replay server", function()
    -- Debian's kubernetes-client (kubectl 1.20) installs /usr/bin/kubectl;
    -- where another package owns that path, its .deb unpacked under /opt
    -- (KUBECTL names any other).  Every kubectl found is checked.
    local candidates, seen = {}, {}
    for _, k in ipairs({os.getenv("KUBECTL") or "", "/usr/bin/kubectl",
                        "/opt/debian-kubernetes-client/usr/bin/kubectl"}) do
      if k ~= "" and not seen[k] and require("bomarun._host").exists(k) then
        seen[k] = true
        candidates[#candidates + 1] = k
      end
    end

    it("finds a kubectl (scripts/deps.sh installs Debian's kubernetes-client)", function()
      assert(#candidates > 0, "no kubectl: apt-get install kubernetes-client")
    end)

    for _, kubectl in ipairs(candidates) do
      it("answers " .. kubectl .. ": discovery, get nodes, get pods -n kube-system, version, NotFound, 401",
        function()
          local dir = util.tmpdir(finally)
          local kcfg = magnum_kubeconfig(dir)
          local function run(...)
            local argv = {kubectl, "--kubeconfig", kcfg, "--cache-dir", dir .. "/cache", "--request-timeout", "20s"}
            for _, a in ipairs({...}) do argv[#argv + 1] = a end
            return assert(proc.run{argv = argv, timeout = 60, env = {HOME = dir}})
          end
          local r = run("get", "nodes")
          assert.equal(0, r.code, r.stderr)
          assert.matches("NAME", r.stdout)
          for _, n in ipairs({"10.196.0.167", "10.196.0.253", "10.196.0.41"}) do
            assert.matches(n:gsub("%.", "%%."), r.stdout)
          end
          -- Discovery (/api, /apis) came before the nodes, from the client itself.
          local order = {}
          for i, q in ipairs(requests(function(q) return (q.user_agent or ""):match("^kubectl") end)) do
            order[q.path] = order[q.path] or i
          end
          assert.truthy(order["/api"] and order["/apis"] and order["/api/v1/nodes"])
          assert.is_true(order["/api/v1/nodes"] > order["/api"])
          assert.is_true(order["/api/v1/nodes"] > order["/apis"])
          r = run("get", "pods", "-n", "kube-system")
          assert.equal(0, r.code, r.stderr)
          assert.matches("coredns%-85986d559b%-7vnvl", r.stdout)
          assert.matches("proxymux%-client%-kw9br", r.stdout)
          r = run("get", "pods", "-n", "kube-system", "-o", "json")
          assert.equal(0, r.code, r.stderr)
          assert.equal(16, #assert(json.decode(r.stdout)).items)
          r = run("version", "-o", "json")
          assert.equal(0, r.code, r.stderr)
          assert.equal("v1.20.0", assert(json.decode(r.stdout)).serverVersion.gitVersion)
          r = run("get", "node", "nope")
          assert.is_not.equal(0, r.code)
          assert.matches('nodes "nope" not found', r.stderr)
          -- Another CA's client certificate: the recorded 401, as kubectl reports it.
          local rogue = magnum_kubeconfig(dir, {cert = "rogue-client.crt", key = "rogue-client.key", name = "rogue"})
          r = assert(proc.run{argv = {kubectl, "--kubeconfig", rogue, "--cache-dir", dir .. "/cache2", "get", "nodes"},
                              timeout = 60, env = {HOME = dir}})
          assert.is_not.equal(0, r.code)
          -- kubectl 1.20 says "Unauthorized"; later ones "the server has asked for the client to provide credentials".
          assert.truthy(r.stderr:find("Unauthorized", 1, true) or r.stderr:find("provide credentials", 1, true),
                        r.stderr)
        end)
    end

    it("takes a kubeconfig written by kc:write_kubeconfig (kubectl through bomarun.proc)", function()
      assert(#candidates > 0, "no kubectl")
      local dir = util.tmpdir(finally)
      local kc = connect{namespace = "kube-system"}
      local path = assert(kc:write_kubeconfig(dir .. "/kc"))
      assert.equal("600\n", proc.run{argv = {"stat", "-c", "%a", path}}.stdout)
      local r = assert(proc.run{argv = {candidates[1], "--kubeconfig", path, "--cache-dir", dir .. "/cache",
                                        "get", "pods", "-o", "name"}, timeout = 60, env = {HOME = dir}})
      assert.equal(0, r.code, r.stderr)
      assert.matches("pod/coredns%-85986d559b%-7vnvl", r.stdout)
    end)
  end)

  describe("secrets", function()
    it("registers the client key (PEM and base64) and the token, so no output shows them", function()
      local dir = util.tmpdir(finally)
      local path = magnum_kubeconfig(dir)
      assert(k8s.connect{kubeconfig = path})
      assert(k8s.connect{server = base, ca = cert("ca.crt"), token = TOKEN})
      local text = util.read(path)
      local key_b64 = text:match("client%-key%-data: (%S+)")
      local shown = secret.redact(text)
      assert.is_nil(shown:find(key_b64, 1, true))
      assert.matches("client%-key%-data: %*%*%*", shown)
      -- The certificate and CA are public: they stay.
      assert.truthy(shown:find(text:match("client%-certificate%-data: (%S+)"), 1, true))
      local key_line = util.read(cert("client.key")):match("\n([^\n]+)\n")
      assert.equal("***", secret.redact(key_line))
      assert.is_nil(secret.redact("Authorization: Bearer " .. TOKEN):find(TOKEN, 1, true))
    end)

    it("keeps them out of a run's console and errors", function()
      local dir = util.tmpdir(finally)
      local path = magnum_kubeconfig(dir)
      local script = util.write(dir .. "/leak.lua", string.format([[
        local k8s = require "bomarun.k8s"
        local log = require "bomarun.log"
        local kc = assert(k8s.connect{kubeconfig = %q})
        assert(k8s.connect{server = kc.server, ca_data = kc._settings.ca_pem, token = %q})
        local f = io.open(%q) ; local text = f:read("a") ; f:close()
        log.info("kubeconfig:\n" .. text)
        log.info("token: " .. %q)
        local _, err = kc:wait_pods{namespace = "verrazzano-ingress-nginx", timeout = 5, interval = 0.1}
        log.info(err)
        error("giving up with " .. %q .. " and " .. text:match("client%%-key%%-data: (%%S+)"))
      ]], path, TOKEN, path, TOKEN, TOKEN))
      local r = util.bomarun({script})
      assert.is_not.equal(0, r.code)
      local out = r.stdout .. r.stderr
      assert.matches("CrashLoopBackOff", out)
      assert.matches("giving up with %*%*%*", out)
      assert.is_nil(out:find(TOKEN, 1, true), "the token shows")
      local key_b64 = util.read(path):match("client%-key%-data: (%S+)")
      assert.is_nil(out:find(key_b64, 1, true), "the key shows")
      assert.is_nil(out:find(key_b64:sub(1, 64), 1, true), "part of the key shows")
    end)
  end)
end)

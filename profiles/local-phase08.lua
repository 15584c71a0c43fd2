-- runbooks/phase-08.lua on this machine: the project's local cloud
-- (`scripts/openstack-stack start --layers all`: real Keystone, Glance, Nova
-- with the fake driver, Neutron, Octavia with the noop amphora drivers,
-- Heat and Magnum), and for what cannot run here recorded real outputs:
-- the Kubernetes API (tests/stack/k8s/replay_server.py over HTTPS with a
-- client certificate), `juju status --format=json` and Vault's
-- seal-status.  docs/phase-08.md says, step by step, which is which.
--
-- The loopback addresses, ports, keys and per-run names below are
-- placeholders the caller replaces (spec/phase08_spec.lua passes --set for
-- each): the test sshd, the replay server and the loopback HTTP server that
-- serves the image file and the seal-status recording are started by the
-- spec on free ports.  A profile is data: no io, os or require here.
return {
  clouds_file = "/tmp/bomarun-openstack/clouds.yaml",
  cloud = "bomarun-admin",                -- admin-openrc: the admin project
  admin_project = "admin",
  admin_domain = "Default",
  -- The local admin holds no role in capi-mgmt: capi-member narrows to it
  -- (the project is still resolved by name while admin-scoped, and the
  -- token's project id must equal the resolved one).
  project_cloud = "bomarun-member",
  project = "capi-mgmt",
  project_domain = "capi",

  template = "p08-k8s-calico",
  image = "p08-fcos-kube",
  -- The local Magnum drives its k8s_fedora_coreos_v1 Heat driver, which
  -- wants os_distro fedora-coreos; kube_version is the recorded cluster's
  -- (the k8s checks run against recordings of a 3-node v1.8.4 Calico cluster).
  kube_version = "v1.8.4",
  os_distro = "fedora-coreos",
  ext_net = "p08-provider-ext",
  keypair = "p08-key",
  cluster = "p08-test-1",
  workload_cidr = "10.20.16.0/24",
  flavors = {master = "m1.small", worker = "m1.small"},
  master_count = 1, node_count = 2, node_total = 3,

  image_source = {
    url = "http://127.0.0.1:1/p08-image.qcow2",     -- the spec's loopback HTTP server
    sha512 = "0",                                   -- the spec passes the served file's
    manifest = "the spec's served file",
    staging = "/tmp/p08-image.qcow2",
    import_method = "glance-direct",
    disk_format = "qcow2", container_format = "bare", visibility = "public", poll_interval = 1,
  },
  image_timeout = 120,

  template_attrs = {
    coe = "kubernetes", server_type = "vm", master_lb_enabled = false, floating_ip_enabled = false,
    docker_storage_driver = "overlay2", fixed_network = "p08-fixed", fixed_subnet = "p08-fixed-subnet",
  },
  create_timeout = 300, poll_interval = 2,
  expect_health = false,                  -- the Heat driver over the fake driver reports no health
  -- The Heat driver makes no API LB without master_lb; the spec creates a
  -- real Octavia LB named "<cluster>-kubeapi" in capi-mgmt in its place.
  api_lb_match = "%{cluster}-kubeapi",
  -- Octavia's noop amphora driver sends no health heartbeats, so no LB here
  -- is ever marked ONLINE: ACTIVE/OFFLINE is what a healthy one shows.
  api_lb_operating_status = "OFFLINE",

  -- D-040 over ssh (the test sshd on loopback), reading the local nova's
  -- effective value through nova's own config options (default 512).
  reserved_memory = {via = "ssh", host = "127.0.0.1", port = 22, user = "root", key = "/nonexistent",
                     known_hosts = "/nonexistent", host_key_policy = "strict", expect = 512, timeout = 60,
                     command = "/usr/bin/python3 -c \"import nova.conf; C = nova.conf.CONF; "
                       .. "C(['--config-file', '/tmp/bomarun-openstack/etc/nova/nova.conf'], project='nova'); "
                       .. "print('reserved_host_memory_mb =', C.reserved_host_memory_mb)\""},

  kubeconfig_dir = "/tmp/p08-kube/%{run}/%{cluster}",
  -- Magnum's kubeconfig is written for real; the connection goes to the
  -- replay server with its CA and client certificate (no apiserver here).
  k8s_connect = {server = "https://127.0.0.1:1", ca = "/nonexistent", cert = "/nonexistent", key = "/nonexistent"},
  addons = {
    {name = "Calico (calico-node)", namespace = "kube-system", label_selector = "k8s-app=calico-node", min = 3},
    {name = "Calico (kube-controllers)", namespace = "kube-system", label_selector = "k8s-app=calico-kube-controllers", min = 1},
    {name = "cluster DNS (kube-dns)", namespace = "kube-system", label_selector = "k8s-app=kube-dns", min = 1},
  },
  k8s_timeout = 20,

  charms_status = {argv = {"cat", "tests/data/k8s-recorded/juju-status-microk8s-snappass-active.json"}},
  core_services = {"identity", "image", "compute", "network", "load-balancer", "placement", "orchestration",
                   "container-infra"},
  tenant_vm = {host = "127.0.0.1", port = 22, user = "root", key = "/nonexistent", known_hosts = "/nonexistent",
               host_key_policy = "strict", vip_service = "identity"},
  round_robin = {enabled = false,
                 why = "no recording of a LoadBalancer Service created by a client and then given an address"},
  failover_timeout = 120,
  vault = {url = "http://127.0.0.1:1"},
  snapshot = {uri = "test:///default", name = "Snapshot 1", domains = {"test"}},
  clean_delete = true,
  delete_timeout = 300,
}

-- The openstack-caracal-ipv4 site, for runbooks/phase-08.lua: the seed's
-- "Constants and env-literals" (TAG: confirm per site / run on rebuild).
-- Names are the contract; ids regenerate per rebuild, so the runbook
-- resolves every one by name at run time and only compares it with
-- `rebuild_ids` below (a difference is logged, the name wins).
-- A profile is data: no io, os or require here.  "~/" is the user's home.
return {
  -- Scope: one clouds.yaml entry (the admin-openrc credentials); the
  -- runbook makes the admin and capi-mgmt handles from it.
  cloud = "caracal-admin",
  admin_project = "admin",                -- ENV(admin-project)
  admin_domain = "admin_domain",
  project = "capi-mgmt",                  -- ENV(project), domain capi
  project_domain = "capi",
  rebuild_ids = {                         -- PER-REBUILD: informational only, never used as ids
    project = "d5bc125c7c1841d389b76cd0a7b0a915",
    admin_project = "65ce73e6798e4d1e8dd066609b7033ef",
    ext_net = "0d00ddc1-d2bf-4849-a087-14c07d77f167",
  },

  template = "capi-k8s-v1-34",            -- ENV(template) (D1; uuid per rebuild)
  image = "ubuntu-jammy-kube-v1.34.8",    -- ENV(image) (D1; id per rebuild)
  kube_version = "v1.34.8",               -- the driver reads it from the IMAGE
  os_distro = "ubuntu",
  ext_net = "provider-ext",               -- ENV(ext-net)
  keypair = "capi-mgmt-key",              -- ENV(keypair)
  cluster = "capi-test-1",                -- ENV(cluster)
  workload_cidr = "10.20.16.0/24",        -- ENV(workload-cidr)
  flavors = {master = "gp.mid", worker = "capi.node"},   -- ENV(flavors): 8192/2 ; 4096/2
  master_count = 1, node_count = 2, node_total = 3,

  -- 8.0 stage-and-verify (FINDING-3): azimuth-images 0.28.0 manifest, build 260518-1604.
  image_source = {
    url = "https://azimuth-images.stackhpc.cloud/ubuntu-jammy-kube-v1.34.8-260518-1604.qcow2",
    sha512 = "7efde4857c9f9da045a98d71def30e229b3d7fffd8a5680e8aee0c5a8b13ba73fca3cf758a927230a1fbe3c451d8d21cfaeded96091e2a4f313c6a404760bdb3",
    manifest = "azimuth-images 0.28.0",
    staging = "~/ubuntu-jammy-kube-v1.34.8-260518-1604.qcow2",   -- $HOME: snap-readable, NOT /tmp (L7)
    import_method = "glance-direct",      -- CORRECTION-1: --import (image-conversion lands it raw)
    disk_format = "qcow2", container_format = "bare", poll_interval = 15,
  },
  image_timeout = 600,

  -- The template's other attributes (network_driver calico is pinned by the runbook).
  template_attrs = {
    coe = "kubernetes", server_type = "vm", master_lb_enabled = true, floating_ip_enabled = true,
    dns_nameserver = "8.8.8.8", docker_storage_driver = "overlay2",
    labels = {fixed_subnet_cidr = "10.20.16.0/24", octavia_provider = "amphora"},
  },
  create_timeout = 1200, poll_interval = 30,      -- the seed's 40 x 30 s
  expect_health = "HEALTHY",                      -- D-042 after phase-07's 1.4.0 driver
  -- The API LB the capi-helm driver makes carries the CAPI cluster name (stack_id).
  api_lb_match = "%{stack_id}",

  -- D-040, run on the jumphost: `juju ssh` into nova-compute/0.
  reserved_memory = {argv = {"juju", "ssh", "nova-compute/0", "sudo grep -i reserved_host_memory /etc/nova/nova.conf"},
                     expect = 8192, timeout = 60},

  kubeconfig_dir = "~/%{cluster}",                -- mkdir -p ~/capi-test-1 (DOCFIX-037)
  addons = {
    {name = "Calico", namespace = "calico-system", label_selector = "k8s-app=calico-node", min = 3},
    {name = "CCM (openstack-cloud-controller-manager)", namespace = "kube-system",
     label_selector = "app.kubernetes.io/name=openstack-cloud-controller-manager", min = 1},
    {name = "Cinder CSI", namespace = "kube-system", label_selector = "app.kubernetes.io/name=openstack-cinder-csi", min = 1},
    {name = "CoreDNS", namespace = "kube-system", label_selector = "k8s-app=kube-dns", min = 1},
  },
  k8s_timeout = 600,

  -- D-011.1
  charms_status = {argv = {"juju", "status", "--format=json"}},
  -- D-011.2: core public VIPs (.50-.60) from the catalog; gss (product-streams) is out of scope (DOCFIX-039).
  core_services = {"identity", "key-manager", "volumev3", "image", "container-infra", "network", "compute",
                   "load-balancer", "placement"},
  extra_vips = {{name = "horizon", url = "https://10.12.4.58/"}},
  vip_insecure = true,                            -- the seed's curl -k
  -- D-011.3: the mgmt VM's FIP is per-rebuild: resolved from the server (DOCFIX-038).
  tenant_vm = {server = "capi-mgmt-v2", user = "ubuntu", key = "~/.ssh/capi-mgmt-key", host_key_policy = "accept-new",
               known_hosts = "~/.ssh/known_hosts", vip_service = "identity"},
  -- D-011.4
  round_robin = {name = "rr", namespace = "default", image = "registry.k8s.io/e2e-test-images/agnhost:2.40", timeout = 600},
  failover_timeout = 600,
  -- D-011.6
  vault = {url = "https://10.12.4.61:8200", insecure = true},   -- TAG: confirm the vault VIP per site
  -- D-011.7 (D-012): on the jumphost hypervisor.
  snapshot = {uri = "qemu:///system", name = "Snapshot 1",
              domains = {"juju-controller", "infra-1", "infra-2", "infra-3"}},   -- TAG: confirm per site
  -- 8.5
  clean_delete = false,
  delete_timeout = 1200,
}

# (e) Heat + Magnum for start.sh (sourced when the magnum layer is asked
# for): heat-api + heat-engine (convergence off, one worker each),
# magnum-api + magnum-conductor, and a loopback stand-in for etcd's public
# discovery service.  The same cfg/db/up/ready steps as the other layers.

cfg_magnum() {
  local hetc="$STATE/etc/heat" metc="$STATE/etc/magnum"
  mkdir -p "$hetc" "$metc" "$STATE/data/heat/locks" "$STATE/data/magnum/locks"
  cp "$OS_HERE/lib/etc/heat-api-paste.ini" "$hetc/api-paste.ini"
  cp "$OS_HERE/lib/etc/magnum-api-paste.ini" "$metc/api-paste.ini"
  cat >"$hetc/heat.conf" <<EOF2
[DEFAULT]
host = bomarun
use_stderr = true
graceful_shutdown_timeout = 3
transport_url = $TRANSPORT_URL
num_engine_workers = 1
convergence_engine = false
auth_encryption_key = $HEAT_AUTH_ENCRYPTION_KEY
region_name_for_services = RegionOne
heat_metadata_server_url = http://127.0.0.1:$HEAT_PORT
heat_waitcondition_server_url = http://127.0.0.1:$HEAT_PORT/v1/waitcondition
stack_domain_admin = heat_domain_admin
stack_domain_admin_password = $HEAT_DOMAIN_ADMIN_PASSWORD
stack_user_domain_name = heat
deferred_auth_method = trusts
trusts_delegated_roles =
max_stacks_per_tenant = 1000
[heat_api]
bind_host = 127.0.0.1
bind_port = $HEAT_PORT
workers = 1
[paste_deploy]
api_paste_config = $hetc/api-paste.ini
[database]
connection = $(db_url heat)
[oslo_concurrency]
lock_path = $STATE/data/heat/locks
[oslo_messaging_notifications]
driver = noop
[clients]
endpoint_type = public
[clients_keystone]
auth_uri = $KS_URL
$(authtoken keystone_authtoken heat "$HEAT_PASSWORD")
[trustee]
# No project here: Heat scopes the trustee's auth to the trust, and a
# project as well makes keystoneauth refuse ("cannot be scoped to multiple
# targets"), which fails every stack update (cluster resize).
auth_type = password
auth_url = $KS_URL
username = heat
password = $HEAT_PASSWORD
user_domain_name = Default
EOF2
  cat >"$metc/magnum.conf" <<EOF2
[DEFAULT]
host = bomarun
use_stderr = true
graceful_shutdown_timeout = 3
transport_url = $TRANSPORT_URL
state_path = $STATE/data/magnum
[api]
host = 127.0.0.1
port = $MAGNUM_PORT
workers = 1
api_paste_config = $metc/api-paste.ini
[conductor]
workers = 1
[database]
connection = $(db_url magnum)
[certificates]
cert_manager_type = x509keypair
[trust]
trustee_domain_name = magnum
trustee_domain_admin_name = magnum_domain_admin
trustee_domain_admin_password = $MAGNUM_DOMAIN_ADMIN_PASSWORD
trustee_keystone_interface = public
cluster_user_trust = false
[cluster]
etcd_discovery_service_endpoint_format = http://127.0.0.1:$ETCD_DISCOVERY_PORT/new?size=%(size)d
[kubernetes]
keystone_auth_default_policy = $metc/keystone_auth_default_policy.json
[oslo_concurrency]
lock_path = $STATE/data/magnum/locks
[oslo_messaging_notifications]
driver = noop
[heat_client]
endpoint_type = publicURL
region_name = RegionOne
[nova_client]
endpoint_type = publicURL
region_name = RegionOne
[glance_client]
endpoint_type = publicURL
region_name = RegionOne
[neutron_client]
endpoint_type = publicURL
region_name = RegionOne
[octavia_client]
endpoint_type = publicURL
region_name = RegionOne
[cinder_client]
region_name = RegionOne
$(authtoken keystone_authtoken magnum "$MAGNUM_PASSWORD")
$(authtoken keystone_auth magnum "$MAGNUM_PASSWORD")
EOF2
  # Magnum reads this for the k8s keystone-auth webhook policy.
  echo '[]' >"$metc/keystone_auth_default_policy.json"
}

db_magnum() {
  manage heat-manage "$PY" "$OS_HERE/lib/run-entry.py" heat-manage heat.cmd.manage:main \
    --config-file "$STATE/etc/heat/heat.conf" db_sync
  manage magnum-db-manage magnum-db-manage --config-file "$STATE/etc/magnum/magnum.conf" upgrade
}

up_magnum() {
  spawn etcd-discovery "$PY" "$OS_HERE/lib/etcd-discovery-standin.py" "$ETCD_DISCOVERY_PORT"
  run_entry heat-engine heat.cmd.engine:main --config-file "$STATE/etc/heat/heat.conf"
  run_entry heat-api heat.cmd.api:main --config-file "$STATE/etc/heat/heat.conf"
  run_entry magnum-conductor magnum.cmd.conductor:main --config-file "$STATE/etc/magnum/magnum.conf"
  run_entry magnum-api magnum.cmd.api:main --config-file "$STATE/etc/magnum/magnum.conf"
}

ready_magnum() {
  wait_http heat-api "http://127.0.0.1:$HEAT_PORT/"
  wait_http magnum-api "http://127.0.0.1:$MAGNUM_PORT/"
  wait_consumer engine 90 || fail_with heat-engine "heat-engine never consumed its queue"
  wait_consumer magnum-conductor 90 || fail_with magnum-conductor "magnum-conductor never consumed its queue"
  mark magnum
}

#!/usr/bin/env bash
# Starts bomarun's local OpenStack test stack on 127.0.0.1, from Debian 12's
# packages (OpenStack Zed; tests/stack/openstack/install.sh installs them),
# fresh each run:
#
#   database  MariaDB on a unix socket in STATE_DIR/run, one database and
#             user per service, schemas by each service's own migrations
#             (lib/mariadb.sh; the migrated data directory is cached)
#   keystone  Keystone (fernet) under uwsgi; admin, a second domain
#             `capi` with project `capi-mgmt` and user `capi-member`
#             (member + load-balancer_member), an application credential for
#             it, service users and the catalog
#   glance    Glance API (file store, workers=0, glance-direct + web-download)
#   compute   RabbitMQ (own epmd), placement + nova-api under uwsgi,
#             nova-conductor, nova-scheduler, nova-compute (fake driver),
#             neutron-server (ML2, no agents, a bind-every-port driver)
#   octavia   Octavia API + worker (amphora provider, noop drivers, a
#             throwaway CA)
#   magnum    Heat API + engine, Magnum API + conductor, a loopback stand-in
#             for etcd discovery (opt-in: lib/magnum.sh; the Heat signaller
#             stand-in is lib/heat-signaller-standin.py, run per cluster)
#
# Usage:  start.sh [--layers LIST] [STATE_DIR]
#   STATE_DIR  default $BOMARUN_OPENSTACK_DIR or /tmp/bomarun-openstack
#   LIST       comma-separated; default $BOMARUN_OS_LAYERS or
#              keystone,glance,compute,octavia; "all" adds magnum.  Each layer
#              pulls in what it needs (compute: glance and rabbit; octavia:
#              rabbit; magnum: all the others).
# Environment:
#   BOMARUN_OS_TOKEN_EXPIRATION  Keystone [token] expiration, seconds (3600)
#
# Idempotent: when a healthy stack with (at least) these layers is already
# running from STATE_DIR it is reused.  Anything else in STATE_DIR from an
# earlier run is stopped (by PID) and wiped first.  Every process runs in its
# own process group (setsid); stop.sh stops them by PID.  Writes, in
# STATE_DIR: ports.env, secrets.env (0600), clouds.yaml, admin-openrc,
# member-openrc, appcred-openrc, appcred.json, etc/, db/, log/, run/.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"

layers_arg=${BOMARUN_OS_LAYERS:-keystone,glance,compute,octavia}
state_arg=""
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers_arg=$2; shift 2 ;;
    --layers=*) layers_arg=${1#--layers=}; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) state_arg=$1; shift ;;
  esac
done
STATE=$(os_state_dir "$state_arg")
TOKEN_EXPIRATION=${BOMARUN_OS_TOKEN_EXPIRATION:-3600}

# Resolve the layer list with dependencies, in start order.
want=",${layers_arg},"
[ "$layers_arg" = all ] && want=",keystone,glance,compute,octavia,magnum,"
has() { case "$want" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if has magnum; then want="$want,glance,compute,octavia,"; fi
if has compute; then want="$want,glance,"; fi
if has compute || has octavia; then want="$want,rabbit,"; fi
want="$want,keystone,"
LAYERS=""
for l in keystone glance rabbit compute octavia magnum; do has "$l" && LAYERS="$LAYERS${LAYERS:+,}$l"; done
for l in ${layers_arg//,/ }; do
  case "$l" in keystone|glance|rabbit|compute|octavia|magnum|all) ;; *) die "unknown layer '$l'" ;; esac
done
export BOMARUN_OS_LAYERS_ACTIVE=$LAYERS

# --- reuse, or wipe -------------------------------------------------------
if [ -f "$STATE/$MARKER" ] && [ -f "$STATE/run/started" ]; then
  running=$(cat "$STATE/run/layers" 2>/dev/null || true)
  missing=""
  for l in ${LAYERS//,/ }; do case ",$running," in *",$l,"*) ;; *) missing="$missing $l" ;; esac; done
  if [ -z "$missing" ] && "$OS_HERE/status.sh" "$STATE" >/dev/null 2>&1; then
    log "reusing the healthy stack already running from $STATE (layers: $running)"
    exit 0
  fi
  log "the stack in $STATE is not healthy or lacks layers ($missing): restarting it"
fi
if [ -e "$STATE" ] && [ ! -f "$STATE/$MARKER" ] && [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
  die "$STATE exists, is not empty and was not made by this script: refusing to wipe it"
fi
if [ -d "$STATE/run" ]; then "$OS_HERE/stop.sh" "$STATE" >&2 || true; fi
rm -rf "$STATE"
umask 077
mkdir -p "$STATE"/{etc,db,log,run,data}
: >"$STATE/$MARKER"
export BOMARUN_OPENSTACK_STACK=$STATE
T_ALL=$(now)

# --- processes --------------------------------------------------------------
# spawn NAME CMD...: start CMD in its own session/process group (setsid),
# output to log/NAME.log, PID (= PGID) to run/NAME.pid.  Without job control
# the background child is not a group leader, so setsid(1) calls setsid()
# itself instead of forking: $! is the leader's PID.
spawn() {
  local name=$1; shift
  setsid "$@" >>"$STATE/log/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$STATE/run/$name.pid"
  starttime "$pid" >"$STATE/run/$name.start" || die "$name exited at once (log: $STATE/log/$name.log)"
  echo "$name" >>"$STATE/run/order"
}

pid_of() { cat "$STATE/run/$1.pid"; }

# wait_http NAME URL [SECONDS]: until URL answers, or fail with the log tail.
wait_http() {
  local name=$1 url=$2 secs=${3:-90}
  if ! "$PY" "$HELPER" wait-http "$url" "$secs" "$(pid_of "$name")"; then
    tail -25 "$STATE/log/$name.log" >&2 || true
    die "$name did not come up (log: $STATE/log/$name.log)"
  fi
}

# fail_with NAME MESSAGE: print NAME's log tail and die.
fail_with() {
  tail -25 "$STATE/log/$1.log" >&2 || true
  die "$2 (log: $STATE/log/$1.log)"
}

# uwsgi_app NAME PORT WSGI_FILE PROCESSES THREADS [uwsgi options...]: one
# WSGI app on 127.0.0.1:PORT.  uwsgi's --http-socket closes kept-alive
# connections silently, so every response says Connection: close.
uwsgi_app() {
  local name=$1 port=$2 file=$3 procs=$4 threads=$5; shift 5
  spawn "$name" uwsgi --plugin python3 --master --die-on-term --need-app \
    --http-socket "127.0.0.1:$port" --add-header "Connection: close" \
    --processes "$procs" --threads "$threads" --enable-threads --lazy-apps \
    --buffer-size 65535 --wsgi-file "$file" \
    --disable-logging --log-4xx --log-5xx "$@"
}

# run_entry NAME MODULE:FUNC ARGS...: a console script Debian's library
# package does not ship (nova-conductor, neutron-server, ...).
run_entry() {
  local name=$1; shift
  spawn "$name" "$PY" "$OS_HERE/lib/run-entry.py" "$name" "$@"
}

# manage LOGNAME CMD...: a one-shot setup command, output to log/LOGNAME.log.
manage() {
  local name=$1; shift
  if ! "$@" >>"$STATE/log/$name.log" 2>&1; then
    tail -25 "$STATE/log/$name.log" >&2
    die "setup step failed: $* (log: $STATE/log/$name.log)"
  fi
}

# --- ports and secrets ---------------------------------------------------------
taken=""
port_for() { # KEY DEFAULT
  local p
  p=$("$PY" "$HELPER" free-port "$2" $taken)
  taken="$taken $p"
  echo "$1=$p" >>"$STATE/ports.env"
  printf -v "$1" '%s' "$p"
}
: >"$STATE/ports.env"
port_for KEYSTONE_PORT 5000
has glance && port_for GLANCE_PORT 9292
if has rabbit; then port_for RABBIT_PORT 5672; port_for EPMD_PORT 4369; port_for RABBIT_DIST_PORT 25672; fi
if has compute; then port_for PLACEMENT_PORT 8778; port_for NOVA_PORT 8774; port_for NEUTRON_PORT 9696; fi
has octavia && port_for OCTAVIA_PORT 9876
if has magnum; then port_for HEAT_PORT 8004; port_for MAGNUM_PORT 9511; port_for ETCD_DISCOVERY_PORT 8087; fi
echo "STATE_DIR=$STATE" >>"$STATE/ports.env"
echo "TOKEN_EXPIRATION=$TOKEN_EXPIRATION" >>"$STATE/ports.env"

gen() { openssl rand -hex 16; }
{
  echo "ADMIN_PASSWORD=$(gen)"
  echo "MEMBER_PASSWORD=$(gen)"
  for s in GLANCE PLACEMENT NOVA NEUTRON OCTAVIA MAGNUM HEAT HEAT_DOMAIN_ADMIN MAGNUM_DOMAIN_ADMIN; do
    echo "${s}_PASSWORD=$(gen)"
  done
  echo "RABBIT_USER=bomarun"
  echo "RABBIT_PASSWORD=$(gen)"
  echo "OCTAVIA_CA_PASSPHRASE=$(gen)"
  echo "OCTAVIA_CERTS_PASSPHRASE=$(gen)"     # exactly 32 characters
  echo "HEAT_AUTH_ENCRYPTION_KEY=$(gen)"
  for s in KEYSTONE GLANCE PLACEMENT NOVA NEUTRON OCTAVIA HEAT MAGNUM; do
    echo "DB_${s}_PASSWORD=$(gen)"
  done
} >"$STATE/secrets.env"
chmod 600 "$STATE/secrets.env"
. "$STATE/secrets.env"

KS_URL="http://127.0.0.1:$KEYSTONE_PORT"
AUTH_URL="$KS_URL/v3"
TRANSPORT_URL=""
has rabbit && TRANSPORT_URL="rabbit://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_PORT/"

# [keystone_authtoken] and the like for service USER with PASSWORD.
authtoken() { # SECTION USER PASSWORD
  cat <<EOF
[$1]
www_authenticate_uri = $KS_URL
auth_url = $KS_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $3
region_name = RegionOne
EOF
  if [ "$1" = keystone_authtoken ]; then
    # Validated tokens are cached in-process for 5 min by default; keep the
    # cache shorter than the shortest token expiry tests configure.
    echo "token_cache_time = $(( TOKEN_EXPIRATION < 300 ? (TOKEN_EXPIRATION > 10 ? TOKEN_EXPIRATION / 2 : 5) : 300 ))"
    echo "service_token_roles_required = true"
  fi
}

# The database server and db_url: lib/mariadb.sh.
. "$OS_HERE/lib/mariadb.sh"

# Each layer has four steps, run in this order across all layers so that the
# slow parts overlap (2 cores; most of the time is Python importing):
#   cfg_L    write its config files (needs only ports and secrets)
#   db_L     build its databases (in the background, while Keystone starts)
#   up_L     start its processes (after Keystone is set up)
#   ready_L  wait until it answers and is wired up
BG_PIDS=()
bg() { # NAME FUNCTION: run a setup function in the background
  "$2" & BG_PIDS+=("$!:$1")
}
wait_bg() {
  local e
  for e in "${BG_PIDS[@]}"; do
    wait "${e%%:*}" || die "setup of ${e#*:} failed (see $STATE/log/)"
  done
  BG_PIDS=()
}
mark() { # LAYER: record when LAYER became ready
  T_LAYER[$1]=$(elapsed "$T_ALL")
  log "$1: ready at +${T_LAYER[$1]} s"
}
declare -A T_LAYER

# ============================================================================
# (a) Keystone
# ============================================================================
# A fernet (or credential) key repository: key 0 staged, key 1 primary, each
# 32 random bytes, URL-safe base64, as keystone-manage fernet_setup writes
# them (without its 2.5 s of Python start-up).
fernet_repo() {
  mkdir -p "$1"
  local k
  for k in 0 1; do openssl rand 32 | base64 | tr '+/' '-_' >"$1/$k"; done
  chmod 700 "$1"; chmod 600 "$1"/*
}

cfg_keystone() {
  local etc="$STATE/etc/keystone"
  mkdir -p "$etc"
  fernet_repo "$STATE/data/keystone/fernet-keys"
  fernet_repo "$STATE/data/keystone/credential-keys"
  cat >"$etc/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = $(db_url keystone)
[token]
provider = fernet
expiration = $TOKEN_EXPIRATION
[fernet_tokens]
key_repository = $STATE/data/keystone/fernet-keys
[fernet_receipts]
key_repository = $STATE/data/keystone/fernet-keys
[credential]
key_repository = $STATE/data/keystone/credential-keys
[identity]
password_hash_rounds = 4
[cache]
# Without a cache every authenticated call re-reads role assignments a few
# hundred times from the database; in-process memory is right for one uwsgi
# process (several would each keep a stale copy).
enabled = true
backend = dogpile.cache.memory
EOF
}
KM=(keystone-manage --config-file "$STATE/etc/keystone/keystone.conf")
db_keystone() {
  manage keystone-manage "${KM[@]}" db_sync
}
up_keystone() {
  # uwsgi imports keystone (~3 s) while bootstrap writes the admin user.
  uwsgi_app keystone "$KEYSTONE_PORT" /usr/bin/keystone-wsgi-public 1 4 \
    --env "OS_KEYSTONE_CONFIG_FILES=$STATE/etc/keystone/keystone.conf"
  manage keystone-manage "${KM[@]}" bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
    --bootstrap-admin-url "$AUTH_URL" --bootstrap-internal-url "$AUTH_URL" \
    --bootstrap-public-url "$AUTH_URL" --bootstrap-region-id RegionOne
}
ready_keystone() {
  wait_http keystone "$AUTH_URL"
  # Users, projects, roles, service users and the catalog: before any
  # service that authenticates starts.
  manage keystone-setup "$PY" "$HELPER" keystone-setup "$STATE"
  mark keystone
}

# ============================================================================
# (b) Glance
# ============================================================================
cfg_glance() {
  local etc="$STATE/etc/glance"
  mkdir -p "$etc" "$STATE/data/glance/images" "$STATE/data/glance/staging" "$STATE/data/glance/tasks"
  cp "$OS_HERE/lib/etc/glance-api-paste.ini" "$etc/glance-api-paste.ini"
  cat >"$etc/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
workers = 0
use_stderr = true
graceful_shutdown_timeout = 3
enabled_import_methods = [glance-direct,web-download]
node_staging_uri = file://$STATE/data/glance/staging
image_cache_dir = $STATE/data/glance/cache
[database]
connection = $(db_url glance)
[paste_deploy]
flavor = keystone
config_file = $etc/glance-api-paste.ini
[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = $STATE/data/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $STATE/data/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $STATE/data/glance/tasks
[import_filtering_opts]
# web-download from any port (tests serve images from a loopback server).
allowed_ports =
[oslo_concurrency]
lock_path = $STATE/data/glance/locks
$(authtoken keystone_authtoken glance "$GLANCE_PASSWORD")
EOF
}
db_glance() {
  manage glance-manage "$PY" "$OS_HERE/lib/run-entry.py" glance-manage glance.cmd.manage:main \
    --config-file "$STATE/etc/glance/glance-api.conf" db_sync
}
up_glance() {
  run_entry glance-api glance.cmd.api:main --config-file "$STATE/etc/glance/glance-api.conf"
}
ready_glance() {
  wait_http glance-api "http://127.0.0.1:$GLANCE_PORT/"
  mark glance
}

# ============================================================================
# RabbitMQ (for compute, octavia, magnum)
# ============================================================================
rabbit_env_init() {
  RABBIT_ENV=(env HOME="$STATE/data/rabbit" \
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT" \
    RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_USE_LONGNAME=false \
    RABBITMQ_CONF_ENV_FILE="$STATE/etc/rabbitmq/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$STATE/etc/rabbitmq/rabbitmq" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$STATE/etc/rabbitmq/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/etc/rabbitmq/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$STATE/data/rabbit/mnesia" \
    RABBITMQ_LOG_BASE="$STATE/log/rabbitmq" \
    RABBITMQ_PID_FILE="$STATE/data/rabbit/beam.pid" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RABBIT_PORT" \
    RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
  RABBITMQCTL=("${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -n rabbit@localhost)
}

cfg_rabbit() {
  rabbit_env_init
  local etc="$STATE/etc/rabbitmq"
  mkdir -p "$etc" "$STATE/data/rabbit/mnesia" "$STATE/log/rabbitmq"
  : >"$etc/rabbitmq-env.conf"
  echo "[]." >"$etc/enabled_plugins"
  echo "[]." >"$etc/advanced.config"
  cat >"$etc/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$RABBIT_PORT
default_user = $RABBIT_USER
default_pass = $RABBIT_PASSWORD
loopback_users = none
log.console = true
log.console.level = warning
log.file = false
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.2
EOF
}
db_rabbit() { :; }
up_rabbit() {
  # Our own epmd, in the foreground, so it is ours to stop by PID (the
  # Erlang VM would otherwise start a daemonised one that outlives us).
  spawn epmd "${RABBIT_ENV[@]}" epmd -address 127.0.0.1 -port "$EPMD_PORT"
  local i
  for i in $(seq 1 50); do "$PY" "$HELPER" port-open "$EPMD_PORT" && break; sleep 0.1; done
  "$PY" "$HELPER" port-open "$EPMD_PORT" || fail_with epmd "epmd did not listen on $EPMD_PORT"
  spawn rabbitmq "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
}
ready_rabbit() {
  local i
  for i in $(seq 1 300); do
    "$PY" "$HELPER" port-open "$RABBIT_PORT" && break
    ours rabbitmq || fail_with rabbitmq "rabbitmq-server exited"
    sleep 0.2
  done
  "$PY" "$HELPER" port-open "$RABBIT_PORT" || fail_with rabbitmq "rabbitmq did not listen on $RABBIT_PORT"
  mark rabbit
}

# wait_consumer QUEUE SECONDS: until the queue QUEUE has a consumer (a
# message sent before then is lost).
wait_consumer() {
  local q=$1 secs=$2 deadline n
  deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    n=$("${RABBITMQCTL[@]}" -q list_queues name consumers 2>/dev/null | awk -v q="$q" '$1 == q { print $2 }')
    [ -n "$n" ] && [ "$n" -gt 0 ] && return 0
    sleep 1
  done
  return 1
}

# ============================================================================
# (c) placement, nova, neutron
# ============================================================================
cfg_compute() {
  # --- placement
  local etc="$STATE/etc/placement"
  mkdir -p "$etc"
  cat >"$etc/placement.conf" <<EOF
[DEFAULT]
use_stderr = true
[placement_database]
connection = $(db_url placement)
[api]
auth_strategy = keystone
$(authtoken keystone_authtoken placement "$PLACEMENT_PASSWORD")
EOF
  # --- neutron
  local netc="$STATE/etc/neutron"
  mkdir -p "$netc" "$STATE/data/neutron/locks"
  cp "$OS_HERE/lib/etc/neutron-api-paste.ini" "$netc/api-paste.ini"
  cat >"$netc/neutron.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $NEUTRON_PORT
host = bomarun
use_stderr = true
graceful_shutdown_timeout = 3
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $TRANSPORT_URL
api_paste_config = $netc/api-paste.ini
state_path = $STATE/data/neutron
api_workers = 0
rpc_workers = 0
rpc_state_report_workers = 0
allow_overlapping_ips = true
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
[database]
connection = $(db_url neutron)
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = bomarun_bindall
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
[ml2_type_vxlan]
vni_ranges = 1:10000
[securitygroup]
enable_security_group = true
[quotas]
quota_network = -1
quota_subnet = -1
quota_port = -1
quota_router = -1
quota_floatingip = -1
quota_security_group = -1
quota_security_group_rule = -1
[oslo_concurrency]
lock_path = $STATE/data/neutron/locks
[agent]
report_interval = 0
$(authtoken keystone_authtoken neutron "$NEUTRON_PASSWORD")
$(authtoken nova neutron "$NEUTRON_PASSWORD")
EOF
  # --- nova
  local nenc="$STATE/etc/nova"
  mkdir -p "$nenc" "$STATE/data/nova/instances" "$STATE/data/nova/locks"
  cp "$OS_HERE/lib/etc/nova-api-paste.ini" "$nenc/api-paste.ini"
  cat >"$nenc/nova.conf" <<EOF
[DEFAULT]
host = bomarun
my_ip = 127.0.0.1
use_stderr = true
graceful_shutdown_timeout = 3
transport_url = $TRANSPORT_URL
compute_driver = fake.FakeDriver
state_path = $STATE/data/nova
instances_path = $STATE/data/nova/instances
heal_instance_info_cache_interval = -1
instance_usage_audit = false
# The fake driver keeps servers in memory: nothing to reconcile at start.
resume_guests_state_on_host_boot = false
[wsgi]
api_paste_config = $nenc/api-paste.ini
[api]
auth_strategy = keystone
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1
[oslo_concurrency]
lock_path = $STATE/data/nova/locks
[oslo_messaging_notifications]
driver = noop
[notifications]
notification_format = unversioned
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
[quota]
driver = nova.quota.NoopQuotaDriver
$(authtoken keystone_authtoken nova "$NOVA_PASSWORD")
$(authtoken placement nova "$NOVA_PASSWORD")
$(authtoken neutron nova "$NOVA_PASSWORD")
$(authtoken service_user nova "$NOVA_PASSWORD")
send_service_user_token = false
EOF
  # The databases in a file of their own: nova-compute must not have them
  # (it talks to the conductor; with them it logs "No DB access allowed").
  cat >"$nenc/nova-db.conf" <<EOF
[api_database]
connection = $(db_url nova nova_api)
[database]
connection = $(db_url nova nova)
EOF
}
NC=(--config-file "$STATE/etc/nova/nova.conf" --config-file "$STATE/etc/nova/nova-db.conf")
NM=("$PY" "$OS_HERE/lib/run-entry.py" nova-manage nova.cmd.manage:main "${NC[@]}")

db_compute() {
  # Each service's own migrations; the three run side by side.
  (
    manage placement-manage "$PY" "$OS_HERE/lib/run-entry.py" placement-manage placement.cmd.manage:main \
      --config-file "$STATE/etc/placement/placement.conf" db sync
  ) & local p_pl=$!
  (
    manage neutron-db-manage "$PY" "$OS_HERE/lib/run-entry.py" neutron-db-manage neutron.db.migration.cli:main \
      --config-file "$STATE/etc/neutron/neutron.conf" upgrade heads
  ) & local p_ne=$!
  (
    manage nova-manage "${NM[@]}" api_db sync
    manage nova-manage "${NM[@]}" cell_v2 map_cell0 --database_connection "$(db_url nova nova_cell0)"
    manage nova-manage "${NM[@]}" db sync
    manage nova-manage "${NM[@]}" cell_v2 create_cell --name cell1 \
      --database_connection "$(db_url nova nova)" --transport-url "$TRANSPORT_URL"
  ) & local p_no=$!
  wait "$p_pl" || die "placement schema failed"
  wait "$p_ne" || die "neutron schema failed"
  wait "$p_no" || die "nova schema failed"
}
up_compute() {
  uwsgi_app placement "$PLACEMENT_PORT" /usr/bin/placement-api 1 2 \
    --env "OS_PLACEMENT_CONFIG_DIR=$STATE/etc/placement"
  PYTHONPATH="$OS_HERE/pylib" run_entry neutron-server neutron.cmd.eventlet.server:main \
    --config-file "$STATE/etc/neutron/neutron.conf"
  uwsgi_app nova-api "$NOVA_PORT" "$OS_HERE/lib/wsgi/nova-api.py" 1 1 \
    --env "OS_NOVA_CONFIG_DIR=$STATE/etc/nova" --env "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;nova-db.conf"
  run_entry nova-conductor nova.cmd.conductor:main "${NC[@]}"
  run_entry nova-scheduler nova.cmd.scheduler:main "${NC[@]}"
}
ready_compute() {
  # nova-compute reports its resources to placement as it starts.
  wait_http placement "http://127.0.0.1:$PLACEMENT_PORT/"
  run_entry nova-compute nova.cmd.compute:main --config-file "$STATE/etc/nova/nova.conf"
  wait_http neutron-server "http://127.0.0.1:$NEUTRON_PORT/"
  wait_http nova-api "http://127.0.0.1:$NOVA_PORT/"
  # The compute host registers itself in the cell; then map it.
  local i ok=0
  for i in $(seq 1 240); do
    if [ "$(echo "select count(*) from compute_nodes where deleted = 0" | sql nova 2>/dev/null || echo 0)" -gt 0 ]; then
      ok=1; break
    fi
    ours nova-compute || fail_with nova-compute "nova-compute exited"
    sleep 0.25
  done
  [ "$ok" -eq 1 ] || fail_with nova-compute "nova-compute did not register a compute node"
  manage nova-manage "${NM[@]}" cell_v2 discover_hosts
  wait_consumer conductor 60 || fail_with nova-conductor "nova-conductor never consumed its queue"
  wait_consumer scheduler 60 || fail_with nova-scheduler "nova-scheduler never consumed its queue"
  wait_consumer compute.bomarun 60 || fail_with nova-compute "nova-compute never consumed its queue"
  manage compute-setup "$PY" "$HELPER" compute-setup "$STATE"
  mark compute
}

# ============================================================================
# (d) Octavia
# ============================================================================
cfg_octavia() {
  local etc="$STATE/etc/octavia" ca="$STATE/data/octavia/ca"
  mkdir -p "$etc" "$ca" "$STATE/data/octavia/locks" "$STATE/data/octavia/certificates"
  # A throwaway CA for [certificates]: the controller worker signs an
  # amphora certificate with it even when the amphora is a noop.
  openssl req -x509 -newkey rsa:2048 -days 2 -subj "/CN=bomarun-test-octavia-ca" \
    -keyout "$ca/ca.key" -out "$ca/ca.pem" -passout "pass:$OCTAVIA_CA_PASSPHRASE" >/dev/null 2>&1 \
    || die "octavia: CA generation failed"
  cat >"$etc/octavia.conf" <<EOF
[DEFAULT]
host = bomarun
use_stderr = true
graceful_shutdown_timeout = 3
transport_url = $TRANSPORT_URL
[api_settings]
bind_host = 127.0.0.1
bind_port = $OCTAVIA_PORT
auth_strategy = keystone
api_base_uri = http://127.0.0.1:$OCTAVIA_PORT
enabled_provider_drivers = amphora:Amphora provider with noop drivers (bomarun test stack)
default_provider_driver = amphora
[database]
connection = $(db_url octavia)
[controller_worker]
workers = 1
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
network_driver = network_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
amp_boot_network_list = 00000000-0000-0000-0000-000000000001
amp_flavor_id = 1
amp_image_tag = amphora
amp_secgroup_list = 00000000-0000-0000-0000-000000000002
client_ca = $ca/ca.pem
[task_flow]
jobboard_enabled = false
[certificates]
cert_generator = local_cert_generator
ca_certificate = $ca/ca.pem
ca_private_key = $ca/ca.key
ca_private_key_passphrase = $OCTAVIA_CA_PASSPHRASE
server_certs_key_passphrase = $OCTAVIA_CERTS_PASSPHRASE
storage_path = $STATE/data/octavia/certificates
[haproxy_amphora]
server_ca = $ca/ca.pem
client_cert = $ca/ca.pem
base_path = $STATE/data/octavia
base_cert_dir = $STATE/data/octavia/certs
[driver_agent]
status_socket_path = $STATE/run/octavia-status.sock
stats_socket_path = $STATE/run/octavia-stats.sock
get_socket_path = $STATE/run/octavia-get.sock
[oslo_messaging]
topic = octavia_prov
[oslo_concurrency]
lock_path = $STATE/data/octavia/locks
[oslo_messaging_notifications]
driver = noop
$(authtoken keystone_authtoken octavia "$OCTAVIA_PASSWORD")
$(authtoken service_auth octavia "$OCTAVIA_PASSWORD")
EOF
}
db_octavia() {
  manage octavia-db-manage octavia-db-manage --config-file "$STATE/etc/octavia/octavia.conf" upgrade head
}
up_octavia() {
  spawn octavia-api octavia-api --config-file "$STATE/etc/octavia/octavia.conf"
  spawn octavia-worker octavia-worker --config-file "$STATE/etc/octavia/octavia.conf"
}
ready_octavia() {
  wait_http octavia-api "http://127.0.0.1:$OCTAVIA_PORT/"
  # The API casts to the worker over RabbitMQ; a cast before the worker's
  # queue has a consumer is lost and the LB stays PENDING_CREATE.
  wait_consumer octavia_prov 90 || fail_with octavia-worker "octavia-worker never consumed octavia_prov"
  mark octavia
}

# ============================================================================
# (e) Heat + Magnum (opt-in): lib/magnum.sh
# ============================================================================
if has magnum; then . "$OS_HERE/lib/magnum.sh"; fi

# ============================================================================
L=(${LAYERS//,/ })
for l in "${L[@]}"; do "cfg_$l"; done
log "configs written to $STATE/etc (+$(elapsed "$T_ALL") s)"
# RabbitMQ boots while the database comes up (restored from the cache, or
# built and migrated: lib/mariadb.sh).
has rabbit && up_rabbit
up_db
mark database
up_keystone
ready_keystone
has rabbit && ready_rabbit
for l in "${L[@]}"; do case "$l" in keystone|rabbit) ;; *) "up_$l" ;; esac; done
for l in "${L[@]}"; do case "$l" in keystone|rabbit) ;; *) "ready_$l" ;; esac; done

echo "$LAYERS" >"$STATE/run/layers"
date -u +%FT%TZ >"$STATE/run/started"
total=$(elapsed "$T_ALL")
{
  echo "START_SECONDS=$total"
  echo "READY_AT_DATABASE=${T_LAYER[database]:-0}"
  for l in "${L[@]}"; do echo "READY_AT_${l^^}=${T_LAYER[$l]:-0}"; done
} >"$STATE/run/timing.env"
log "stack up in $total s (layers: $LAYERS); state in $STATE"
log "  clouds.yaml: $STATE/clouds.yaml (bomarun-admin, bomarun-member, bomarun-appcred, bomarun-system)"
log "  ports: $STATE/ports.env; stop with: $OS_HERE/stop.sh $STATE"

#!/usr/bin/env bash
# Smoke test of the local OpenStack test stack with the `openstack` CLI
# (python3-openstackclient), one check per line, each layer proven:
#
#   keystone  token issue as admin, member and application credential; the
#             member gets 403 on admin-only calls; the two never mix
#   glance    image create + upload -> active, checksum and sha512 verified,
#             custom properties, pagination (limit=1 and the next link)
#   compute   server create ("networks": "none", microversion 2.79) ->
#             ACTIVE -> stop -> SHUTOFF -> start -> ACTIVE -> reboot ->
#             ACTIVE -> delete; network/subnet/router + interface, deleted
#             in dependency order
#   octavia   loadbalancer create -> ACTIVE -> failover -> ACTIVE (admin);
#             the member gets 403 on failover
#
# Layers that are not running are skipped (and say so).  Everything created
# is named check-<pid>-* and deleted again.  Exits non-zero naming what
# failed; ends with "N passed, N failed".
#
# Usage:  check.sh [STATE_DIR]
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
STATE=$(os_state_dir "${1:-}")
[ -f "$STATE/run/started" ] || die "no stack running from $STATE (start.sh first)"
. "$STATE/ports.env"
LAYERS=$(cat "$STATE/run/layers")
layer() { case ",$LAYERS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

export OS_CLIENT_CONFIG_FILE="$STATE/clouds.yaml"
unset OS_CLOUD OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_PROJECT_NAME OS_TOKEN
OSC=/usr/bin/openstack
ADMIN=("$OSC" --os-cloud bomarun-admin)
MEMBER=("$OSC" --os-cloud bomarun-member)
APPCRED=("$OSC" --os-cloud bomarun-appcred)
P="check-$$"
WORK=$(mktemp -d /tmp/bomarun-os-check.XXXXXX)
pass=0; fail=0; failed=()
OUT=""

ok()  { pass=$((pass + 1)); printf 'ok   %-58s %s\n' "$1" "${2:-}"; }
bad() { fail=$((fail + 1)); failed+=("$1"); printf 'FAIL %-58s %s\n' "$1" "${2:-}"; }

# run CMD...: run, keep stdout in $OUT and stderr in $ERR; return its status.
run() {
  OUT=$("$@" 2>"$WORK/err"); local rc=$?
  ERR=$(tail -c 400 "$WORK/err" | tr '\n' ' ')
  return $rc
}

# expect_ok NAME CMD...: CMD must succeed.
expect_ok() {
  local name=$1; shift
  local t0; t0=$(now)
  if run "$@"; then ok "$name" "($(elapsed "$t0") s)"; return 0; fi
  bad "$name" "$ERR"; return 1
}

# expect_403 NAME CMD...: CMD must fail with HTTP 403.
expect_403() {
  local name=$1; shift
  if run "$@"; then bad "$name" "succeeded, expected 403"; return 1; fi
  case "$ERR" in *"HTTP 403"*|*"403 Forbidden"*|*"Forbidden"*|*"403: Client Error"*) ok "$name" "(403)"; return 0 ;; esac
  bad "$name" "expected 403, got: $ERR"; return 1
}

# wait_field NAME SECONDS WANT FAILSTATES CMD...: poll CMD (prints one
# value) until it prints WANT; fail at once on any of FAILSTATES (a|b).
wait_field() {
  local name=$1 secs=$2 want=$3 failre=$4; shift 4
  local t0 deadline v=""
  t0=$(now); deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if run "$@"; then
      v=$OUT
      [ "$v" = "$want" ] && { ok "$name" "($(elapsed "$t0") s)"; return 0; }
      if [ -n "$failre" ] && [[ "$v" =~ ^($failre)$ ]]; then bad "$name" "reached $v"; return 1; fi
    fi
    sleep 0.5
  done
  bad "$name" "still '${v}' after ${secs} s ${ERR}"; return 1
}

# wait_gone NAME SECONDS CMD...: poll CMD until it fails (resource deleted).
wait_gone() {
  local name=$1 secs=$2; shift 2
  local t0 deadline
  t0=$(now); deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    run "$@" || { ok "$name" "($(elapsed "$t0") s)"; return 0; }
    sleep 0.5
  done
  bad "$name" "still there after ${secs} s"; return 1
}

cleanup_cmds=()
at_exit() {
  local i
  for (( i=${#cleanup_cmds[@]}-1; i>=0; i-- )); do eval "${cleanup_cmds[$i]}" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap at_exit EXIT
defer() { cleanup_cmds+=("$1"); }

echo "== check.sh against $STATE (layers: $LAYERS)"
T0=$(now)

# ---------------------------------------------------------------- keystone
echo "-- keystone"
admin_proj="" member_proj="" appcred_proj=""
expect_ok "keystone: token issue (admin, password)" "${ADMIN[@]}" token issue -f value -c project_id && admin_proj=$OUT
expect_ok "keystone: token issue (member, password)" "${MEMBER[@]}" token issue -f value -c project_id && member_proj=$OUT
expect_ok "keystone: token issue (application credential)" "${APPCRED[@]}" token issue -f value -c project_id && appcred_proj=$OUT
if [ -n "$member_proj" ] && [ "$member_proj" = "$appcred_proj" ] && [ "$admin_proj" != "$member_proj" ]; then
  ok "keystone: appcred scoped to capi-mgmt, admin to another project"
else
  bad "keystone: token scopes" "admin=$admin_proj member=$member_proj appcred=$appcred_proj"
fi
# OS_* loading (admin-openrc) instead of clouds.yaml.
if run env -u OS_CLIENT_CONFIG_FILE bash -c ". '$STATE/admin-openrc' && $OSC token issue -f value -c project_id" && [ "$OUT" = "$admin_proj" ]; then
  ok "keystone: token issue from admin-openrc (OS_* variables)"
else
  bad "keystone: token issue from admin-openrc (OS_* variables)" "$ERR"
fi
expect_403 "keystone: member 403 on user list (admin-only)" "${MEMBER[@]}" user list
expect_403 "keystone: appcred 403 on project create (admin-only)" "${APPCRED[@]}" project create "$P-nope"
expect_ok "keystone: admin lists users" "${ADMIN[@]}" user list -f value -c Name
case " $(echo $OUT) " in *" capi-member "*) ok "keystone: capi-member exists (domain capi)" ;; *) bad "keystone: capi-member exists" "$OUT" ;; esac

# Token expiry, when the stack was started with a short expiration
# (BOMARUN_OS_TOKEN_EXPIRATION=20 start.sh ...).
if [ "${TOKEN_EXPIRATION:-3600}" -le 60 ]; then
  ktok=$("${MEMBER[@]}" token issue -f value -c id 2>/dev/null)
  kurl="http://127.0.0.1:$KEYSTONE_PORT/v3/auth/tokens"
  c1=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $ktok" -H "X-Subject-Token: $ktok" "$kurl")
  sleep $(( TOKEN_EXPIRATION + 2 ))
  c2=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $ktok" -H "X-Subject-Token: $ktok" "$kurl")
  [ "$c1" = 200 ] && [ "$c2" = 401 ] && ok "keystone: token valid, then 401 after ${TOKEN_EXPIRATION} s expiry" \
    || bad "keystone: token expiry" "before=$c1 after=$c2"
  if layer glance; then
    c3=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $ktok" "http://127.0.0.1:$GLANCE_PORT/v2/images")
    [ "$c3" = 401 ] && ok "glance: 401 for the expired token" || bad "glance: 401 for the expired token" "got $c3"
  fi
  expect_ok "keystone: a fresh token after expiry" "${MEMBER[@]}" token issue -f value -c id
else
  echo "   (token expiry: $TOKEN_EXPIRATION s; start with BOMARUN_OS_TOKEN_EXPIRATION<=60 to test it)"
fi

# ------------------------------------------------------------- fault proxy
echo "-- fault-proxy (in front of keystone)"
"$PY" "$OS_HERE/fault-proxy.py" --quiet --target "http://127.0.0.1:$KEYSTONE_PORT" \
  --port-file "$WORK/fp.port" --initial 503:2 >"$WORK/fp.log" 2>&1 &
fp_pid=$!
defer "kill $fp_pid"
for i in $(seq 1 50); do [ -s "$WORK/fp.port" ] && break; sleep 0.1; done
if [ -s "$WORK/fp.port" ]; then
  fp="http://127.0.0.1:$(cat "$WORK/fp.port")"
  codes=$(for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' "$fp/v3"; done)
  [ "$codes" = "503 503 200 " ] && ok "fault-proxy: 503 for the first 2 requests, then through" || bad "fault-proxy: 503 x2" "$codes"
  curl -s -o /dev/null -X POST "$fp/_fault/reset?count=1"
  curl -s -o /dev/null "$fp/v3"; rc=$?
  [ "$rc" = 56 ] && ok "fault-proxy: connection reset (curl exit 56)" || bad "fault-proxy: reset" "curl exit $rc"
  curl -s -o /dev/null -X POST "$fp/_fault/delay?seconds=1&count=1"
  t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$fp/v3")
  awk -v t="${t#* }" 'BEGIN { exit !(t >= 1.0) }' && [ "${t% *}" = 200 ] \
    && ok "fault-proxy: response delayed 1 s" "(${t#* } s)" || bad "fault-proxy: delay" "$t"
  body='{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"'"$(. "$STATE/secrets.env"; echo "$ADMIN_PASSWORD")"'"}}}}}'
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$fp/v3/auth/tokens")
  [ "$code" = 201 ] && ok "fault-proxy: POST with a body passes through (token 201)" || bad "fault-proxy: POST passes" "$code"
else
  bad "fault-proxy: started" "$(cat "$WORK/fp.log")"
fi

# ------------------------------------------------------------------ glance
if layer glance; then
  echo "-- glance"
  head -c 3145728 /dev/urandom >"$WORK/image.raw"
  md5=$(md5sum "$WORK/image.raw" | cut -d' ' -f1)
  sha512=$(sha512sum "$WORK/image.raw" | cut -d' ' -f1)
  img=""
  if expect_ok "glance: image create + upload (member)" "${MEMBER[@]}" image create --disk-format raw \
       --container-format bare --file "$WORK/image.raw" --property os_distro=fedora-coreos \
       --property kube_version=v1.27.4 "$P-image" -f value -c id; then
    img=$OUT; defer "${MEMBER[*]} image delete $img"
    wait_field "glance: image becomes active" 60 active "killed|deleted" "${MEMBER[@]}" image show "$img" -f value -c status
    if run "${MEMBER[@]}" image show "$img" -f json; then
      echo "$OUT" >"$WORK/image.json"
      got=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d.get("properties") or {}
print(d.get("checksum"), d.get("os_hash_algo") or p.get("os_hash_algo"), d.get("os_hash_value") or p.get("os_hash_value"), p.get("os_distro", d.get("os_distro")), p.get("kube_version", d.get("kube_version")), d.get("size"))' "$WORK/image.json")
      set -- $got
      [ "$1" = "$md5" ] && ok "glance: md5 checksum matches the upload" || bad "glance: md5 checksum" "$1 != $md5"
      [ "$2" = sha512 ] && [ "$3" = "$sha512" ] && ok "glance: sha512 os_hash_value matches" || bad "glance: sha512 os_hash_value" "$2 $3"
      [ "$4" = fedora-coreos ] && [ "$5" = v1.27.4 ] && ok "glance: custom properties kept" || bad "glance: custom properties" "$4 $5"
      [ "$6" = 3145728 ] && ok "glance: size 3145728" || bad "glance: size" "$6"
    else
      bad "glance: image show" "$ERR"
    fi
    if expect_ok "glance: image save (download)" "${MEMBER[@]}" image save --file "$WORK/down.raw" "$img"; then
      [ "$(md5sum <"$WORK/down.raw" | cut -d' ' -f1)" = "$md5" ] && ok "glance: download matches upload" || bad "glance: download matches upload"
    fi
    expect_403 "glance: member 403 on publicizing an image (admin-only)" "${MEMBER[@]}" image set --public "$img"
    # Another project's private image: admin's image is invisible (404).
    if run "${ADMIN[@]}" image create --disk-format raw --container-format bare --private "$P-admin-private" -f value -c id; then
      aimg=$OUT; defer "${ADMIN[*]} image delete $aimg"
      if run "${MEMBER[@]}" image show "$aimg"; then bad "glance: member cannot see admin's private image" "visible"
      else case "$ERR" in *"No Image found"*|*"404"*|*"Could not find"*) ok "glance: member 404 on admin's private image" ;;
        *) bad "glance: member 404 on admin's private image" "$ERR" ;; esac; fi
    fi
  fi
  # Pagination: three more images, page size 1.
  for i in 1 2; do
    run "${MEMBER[@]}" image create --disk-format raw --container-format bare "$P-page-$i" -f value -c id \
      && defer "${MEMBER[*]} image delete $OUT"
  done
  if expect_ok "glance: image list --limit 1" "${MEMBER[@]}" image list --limit 1 -f value -c ID; then
    n=$(printf '%s\n' "$OUT" | grep -c .)
    [ "$n" -eq 1 ] && ok "glance: --limit 1 gives one row" || bad "glance: --limit 1 gives one row" "$n rows"
  fi
  tok=$("${MEMBER[@]}" token issue -f value -c id 2>/dev/null)
  g="http://127.0.0.1:$GLANCE_PORT"
  page1=$(curl -s -m 10 -H "X-Auth-Token: $tok" "$g/v2/images?limit=1")
  next=$(printf '%s' "$page1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("next",""))' 2>/dev/null)
  id1=$(printf '%s' "$page1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["id"])' 2>/dev/null)
  if [ -n "$next" ]; then
    id2=$(curl -s -m 10 -H "X-Auth-Token: $tok" "$g$next" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["id"])' 2>/dev/null)
    [ -n "$id2" ] && [ "$id2" != "$id1" ] && ok "glance: REST limit=1 page + next link gives the next image" \
      || bad "glance: pagination next page" "id1=$id1 id2=$id2"
  else
    bad "glance: pagination next link" "no next in: $(printf '%s' "$page1" | head -c 200)"
  fi
else
  echo "-- glance: not running, skipped"
fi

# ----------------------------------------------------------------- compute
if layer compute; then
  echo "-- compute (nova fake driver, placement, neutron)"
  expect_ok "nova: compute service list (admin)" "${ADMIN[@]}" compute service list -f value -c Binary -c State
  case "$OUT" in *"nova-compute up"*) ok "nova: nova-compute is up" ;; *) bad "nova: nova-compute is up" "$OUT" ;; esac
  expect_403 "nova: member 403 on compute service list (admin-only)" "${MEMBER[@]}" compute service list
  # No osc-placement plugin in Debian's client set: placement over REST.
  atok=$("${ADMIN[@]}" token issue -f value -c id 2>/dev/null)
  rps=$(curl -s -m 10 -H "X-Auth-Token: $atok" -H "OpenStack-API-Version: placement 1.10" \
        "http://127.0.0.1:$PLACEMENT_PORT/resource_providers" \
        | "$PY" -c 'import json,sys; print(" ".join(r["name"] for r in json.load(sys.stdin)["resource_providers"]))' 2>/dev/null)
  [ -n "$rps" ] && ok "placement: compute resource provider registered" "($rps)" || bad "placement: resource providers" "none"
  srv_img=""
  run "${ADMIN[@]}" image create --disk-format raw --container-format bare --file /dev/null --public "$P-boot" -f value -c id \
    && srv_img=$OUT && defer "${ADMIN[*]} image delete $srv_img"
  srv=""
  if [ -n "$srv_img" ] && expect_ok "nova: server create (networks none, 2.79)" "${MEMBER[@]}" --os-compute-api-version 2.79 \
       server create --flavor m1.tiny --image "$srv_img" --nic none "$P-server" -f value -c id; then
    srv=$OUT; defer "${MEMBER[*]} server delete $srv"
    wait_field "nova: server ACTIVE" 120 ACTIVE "ERROR" "${MEMBER[@]}" server show "$srv" -f value -c status
    expect_ok "nova: server stop" "${MEMBER[@]}" server stop "$srv"
    wait_field "nova: server SHUTOFF" 60 SHUTOFF "ERROR" "${MEMBER[@]}" server show "$srv" -f value -c status
    expect_ok "nova: server start" "${MEMBER[@]}" server start "$srv"
    wait_field "nova: server ACTIVE again" 60 ACTIVE "ERROR" "${MEMBER[@]}" server show "$srv" -f value -c status
    expect_ok "nova: server reboot" "${MEMBER[@]}" server reboot "$srv"
    wait_field "nova: server ACTIVE after reboot" 60 ACTIVE "ERROR" "${MEMBER[@]}" server show "$srv" -f value -c status
    expect_ok "nova: server list (member) shows it" "${MEMBER[@]}" server list -f value -c ID
    case "$OUT" in *"$srv"*) ok "nova: server in member's list" ;; *) bad "nova: server in member's list" "$OUT" ;; esac
    expect_ok "nova: server delete" "${MEMBER[@]}" server delete "$srv"
    wait_gone "nova: server gone" 60 "${MEMBER[@]}" server show "$srv"
  fi
  # Networking, deleted in dependency order: interface, router, subnet, network.
  net="" sub="" rtr=""
  expect_ok "neutron: network create" "${MEMBER[@]}" network create "$P-net" -f value -c id && net=$OUT && defer "${MEMBER[*]} network delete $net"
  [ -n "$net" ] && expect_ok "neutron: subnet create" "${MEMBER[@]}" subnet create --network "$net" \
    --subnet-range 10.250.0.0/24 "$P-subnet" -f value -c id && sub=$OUT && defer "${MEMBER[*]} subnet delete $sub"
  expect_ok "neutron: router create" "${MEMBER[@]}" router create "$P-router" -f value -c id && rtr=$OUT && defer "${MEMBER[*]} router delete $rtr"
  if [ -n "$sub" ] && [ -n "$rtr" ]; then
    defer "${MEMBER[*]} router remove subnet $rtr $sub"
    expect_ok "neutron: router add subnet (interface)" "${MEMBER[@]}" router add subnet "$rtr" "$sub"
    # A network with a router interface must refuse to go (409).
    if run "${MEMBER[@]}" subnet delete "$sub"; then bad "neutron: subnet delete refused while in use"
    else ok "neutron: subnet delete refused while the router uses it"; fi
    # A server on that network: the port gets bound (bind-all ML2 driver).
    if [ -n "$srv_img" ] && run "${MEMBER[@]}" server create --flavor m1.tiny --image "$srv_img" --network "$net" "$P-server-net" -f value -c id; then
      srv2=$OUT; defer "${MEMBER[*]} server delete $srv2"
      wait_field "nova+neutron: server with a port ACTIVE (port bound)" 120 ACTIVE "ERROR" "${MEMBER[@]}" server show "$srv2" -f value -c status
      expect_ok "nova: server with a port deleted" "${MEMBER[@]}" server delete --wait "$srv2"
    else
      bad "nova+neutron: server with a port create" "$ERR"
    fi
    expect_ok "neutron: router remove subnet" "${MEMBER[@]}" router remove subnet "$rtr" "$sub"
    expect_ok "neutron: router delete" "${MEMBER[@]}" router delete "$rtr"
    expect_ok "neutron: subnet delete" "${MEMBER[@]}" subnet delete "$sub"
    expect_ok "neutron: network delete" "${MEMBER[@]}" network delete "$net"
  fi
else
  echo "-- compute: not running, skipped"
fi

# ----------------------------------------------------------------- octavia
if layer octavia; then
  echo "-- octavia (amphora provider, noop drivers)"
  lnet="" lsub=""
  if layer compute; then
    run "${MEMBER[@]}" network create "$P-lbnet" -f value -c id && lnet=$OUT && defer "${MEMBER[*]} network delete $lnet"
    run "${MEMBER[@]}" subnet create --network "$lnet" --subnet-range 10.251.0.0/24 "$P-lbsub" -f value -c id \
      && lsub=$OUT && defer "${MEMBER[*]} subnet delete $lsub"
  fi
  vip=(--vip-subnet-id "${lsub:-00000000-0000-0000-0000-0000000000aa}")
  lb=""
  if expect_ok "octavia: loadbalancer create (member)" "${MEMBER[@]}" loadbalancer create --name "$P-lb" "${vip[@]}" -f value -c id; then
    lb=$OUT; defer "${ADMIN[*]} loadbalancer delete --cascade $lb"
    wait_field "octavia: loadbalancer ACTIVE" 120 ACTIVE "ERROR" "${MEMBER[@]}" loadbalancer show "$lb" -f value -c provisioning_status
    expect_403 "octavia: member 403 on failover (admin-only)" "${MEMBER[@]}" loadbalancer failover "$lb"
    expect_403 "octavia: member 403 on amphora list (admin-only)" "${MEMBER[@]}" loadbalancer amphora list
    expect_ok "octavia: admin failover" "${ADMIN[@]}" loadbalancer failover "$lb"
    wait_field "octavia: ACTIVE after failover" 120 ACTIVE "ERROR" "${ADMIN[@]}" loadbalancer show "$lb" -f value -c provisioning_status
    expect_ok "octavia: member lists its load balancers" "${MEMBER[@]}" loadbalancer list -f value -c id
    case "$OUT" in *"$lb"*) ok "octavia: lb in member's list" ;; *) bad "octavia: lb in member's list" "$OUT" ;; esac
    expect_ok "octavia: loadbalancer delete" "${MEMBER[@]}" loadbalancer delete "$lb"
    wait_gone "octavia: loadbalancer gone" 120 "${MEMBER[@]}" loadbalancer show "$lb"
  fi
else
  echo "-- octavia: not running, skipped"
fi

# ------------------------------------------------------------ heat + magnum
if layer magnum; then
  echo "-- heat + magnum (k8s_fedora_coreos_v1 over the fake driver; the stand-in signaller)"
  cat >"$WORK/t.yaml" <<'EOF'
heat_template_version: 2018-08-31
resources:
  r:
    type: OS::Heat::RandomString
outputs:
  v:
    value: {get_attr: [r, value]}
EOF
  if expect_ok "heat: stack create (member)" "${MEMBER[@]}" stack create -t "$WORK/t.yaml" "$P-stack" -f value -c id; then
    hs=$OUT; defer "${MEMBER[*]} stack delete -y $hs"
    wait_field "heat: stack CREATE_COMPLETE" 60 CREATE_COMPLETE "CREATE_FAILED" "${MEMBER[@]}" stack show "$hs" -f value -c stack_status
    expect_ok "heat: stack delete" "${MEMBER[@]}" stack delete -y --wait "$hs"
  fi
  run "${ADMIN[@]}" image create --disk-format qcow2 --container-format bare --file /dev/null --public \
    --property os_distro=fedora-coreos "$P-fcos" -f value -c id && defer "${ADMIN[*]} image delete $OUT"
  run "${ADMIN[@]}" network create --external --provider-network-type flat --provider-physical-network "$P-ext" "$P-ext" -f value -c id \
    && defer "${ADMIN[*]} network delete $OUT"
  run "${ADMIN[@]}" subnet create --network "$P-ext" --subnet-range 127.10.0.0/24 --no-dhcp "$P-ext-sub" -f value -c id
  run "${ADMIN[@]}" network create --provider-network-type flat --provider-physical-network "$P-fixed" "$P-fixed" -f value -c id \
    && defer "${ADMIN[*]} network delete $OUT"
  run "${ADMIN[@]}" subnet create --network "$P-fixed" --subnet-range 127.11.0.0/24 --no-dhcp "$P-fixed-sub" -f value -c id
  ssh-keygen -q -t ed25519 -N '' -C bomarun-check -f "$WORK/kp" >/dev/null 2>&1
  run "${ADMIN[@]}" keypair create --public-key "$WORK/kp.pub" "$P-kp" -f value -c name && defer "${ADMIN[*]} keypair delete $P-kp"
  if expect_ok "magnum: cluster template create" "${ADMIN[@]}" coe cluster template create --coe kubernetes \
       --image "$P-fcos" --external-network "$P-ext" --fixed-network "$P-fixed" --fixed-subnet "$P-fixed-sub" \
       --flavor m1.small --master-flavor m1.small --keypair "$P-kp" --floating-ip-disabled \
       --network-driver flannel --docker-storage-driver overlay2 "$P-tmpl"; then
    defer "${ADMIN[*]} coe cluster template delete $P-tmpl"
    if expect_ok "magnum: cluster create (202)" "${ADMIN[@]}" coe cluster create --cluster-template "$P-tmpl" \
         --master-count 1 --node-count 1 --keypair "$P-kp" "$P-cluster"; then
      defer "${ADMIN[*]} coe cluster delete $P-cluster"
      "$PY" "$OS_HERE/lib/heat-signaller-standin.py" --cloud bomarun-admin --cluster "$P-cluster" --timeout 300 \
        >"$WORK/standin.log" 2>&1 &
      sig=$!; defer "kill $sig"
      wait_field "magnum: cluster CREATE_COMPLETE (stand-in signals Heat)" 300 CREATE_COMPLETE "CREATE_FAILED" \
        "${ADMIN[@]}" coe cluster show "$P-cluster" -f value -c status
      expect_ok "magnum: cluster delete" "${ADMIN[@]}" coe cluster delete "$P-cluster"
      wait_gone "magnum: cluster gone (404)" 240 "${ADMIN[@]}" coe cluster show "$P-cluster"
    fi
  fi
else
  echo "-- heat + magnum: not running (start with --layers all), skipped"
fi

echo "== check.sh took $(elapsed "$T0") s"
if [ "$fail" -gt 0 ]; then
  echo "FAILED:"; for f in "${failed[@]}"; do echo "  - $f"; done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# Installs what the local OpenStack test stack needs, from Debian 12's own
# packages (OpenStack Zed): the python3-<service> library packages (not the
# daemon packages, whose maintainer scripts configure databases, Apache and
# init scripts), uwsgi, RabbitMQ and the CLI clients used by check.sh and the
# side-by-side benchmarks, and MariaDB (the cloud's database).
#
# Idempotent: nothing is fetched when everything is installed.  No package's
# maintainer script may leave a daemon running: a policy-rc.d that answers
# 101 ("action forbidden") is in place for the duration of the install (an
# existing one is kept as it is; ours is removed afterwards), and any process
# a postinst still started (epmd, beam) is stopped by the PID it has, never
# by name.
#
#   tests/stack/openstack/install.sh            # core: keystone..octavia
#   tests/stack/openstack/install.sh --no-magnum   # skip Magnum + Heat
set -euo pipefail

PKGS=(
  python3-keystone python3-glance python3-nova python3-neutron
  python3-octavia python3-placement
  uwsgi uwsgi-plugin-python3 rabbitmq-server
  python3-openstackclient python3-octaviaclient
  mariadb-server mariadb-client python3-pymysql
  openssl curl procps
)
MAGNUM_PKGS=(python3-magnum python3-heat python3-heatclient python3-magnumclient)

with_magnum=1
for a in "$@"; do
  case "$a" in
    --no-magnum) with_magnum=0 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $a" >&2; exit 2 ;;
  esac
done
[ "$with_magnum" -eq 1 ] && PKGS+=("${MAGNUM_PKGS[@]}")

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "openstack-stack install: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# Debian's lists may be missing on a fresh machine: apt-cache policy must
# know every package before we ask for it.
need_update=0
for p in "${missing[@]}"; do
  cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
done
if [ "$need_update" -eq 1 ]; then $SUDO apt-get update -qq; fi
for p in "${missing[@]}"; do
  cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
    echo "openstack-stack install: no candidate for $p in the configured apt sources" >&2
    exit 1
  fi
done

# Forbid service starts for the duration of the install.
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# written by bomarun tests/stack/openstack/install.sh; removed when it ends\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  ours=1
fi
cleanup() { if [ "$ours" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

# Processes that exist before the install: anything new afterwards that a
# postinst started (epmd is the usual one) is stopped by its PID.
before=$(ps -e -o pid= | tr -d ' ' | sort)

echo "openstack-stack install: installing ${missing[*]}"
t0=$(date +%s)
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/bomarun-openstack-install.log 2>&1 || {
  tail -30 /tmp/bomarun-openstack-install.log >&2
  echo "openstack-stack install: apt-get install failed (log: /tmp/bomarun-openstack-install.log)" >&2
  exit 1
}
echo "openstack-stack install: done in $(( $(date +%s) - t0 )) s"

after=$(ps -e -o pid= | tr -d ' ' | sort)
for pid in $(comm -13 <(echo "$before") <(echo "$after")); do
  [ -d "/proc/$pid" ] || continue
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  # Daemons a postinst leaves behind are re-parented to PID 1 (or a
  # subreaper); our own pipeline's children are not.
  case "$exe" in
    */epmd|*/beam.smp|*/erl_child_setup|*/inet_gethost|*/rabbitmq*|*/uwsgi|*/python3*|*/mariadbd|*/mysqld)
      if [ "$ppid" = "1" ] || [ "$(ps -o comm= -p "$ppid" 2>/dev/null)" != "bash" ]; then
        echo "openstack-stack install: a package left $exe running as PID $pid: stopping it"
        $SUDO kill "$pid" 2>/dev/null || true
      fi ;;
  esac
done

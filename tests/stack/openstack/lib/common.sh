# Shared by start.sh, stop.sh, status and check.sh.  Source it; it sets
# STATE (the state directory) from $1 / $BOMARUN_OPENSTACK_DIR and the helpers.

OS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3            # Debian's: the OpenStack libraries live there
HELPER="$OS_HERE/lib/stackhelper.py"
# The services must not find another Python (a pyenv shim comes first on
# PATH on these machines) when they spawn helpers.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MARKER=.bomarun-openstack      # present in every state directory we made

os_state_dir() {
  local d=${1:-${BOMARUN_OPENSTACK_DIR:-/tmp/bomarun-openstack}}
  case "$d" in /*) ;; *) d="$PWD/$d" ;; esac
  printf '%s\n' "${d%/}"
}

log() { printf '[openstack-stack] %s\n' "$*" >&2; }
die() { printf '[openstack-stack] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Is PID alive and one of ours (started from this STATE)?  Guards against a
# recycled PID: every process we start carries BOMARUN_OPENSTACK_STACK=STATE.
ours() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "BOMARUN_OPENSTACK_STACK=$STATE"
}

# PIDs whose process group or session is PGID.
group_members() {
  local pgid=$1 f stat rest
  for f in /proc/[0-9]*/stat; do
    stat=$(cat "$f" 2>/dev/null) || continue
    rest=${stat##*) }            # fields after "pid (comm) "
    set -- $rest                 # $1 state, $2 ppid, $3 pgrp, $4 session
    if [ "$3" = "$pgid" ] || [ "$4" = "$pgid" ]; then
      f=${f#/proc/}; printf '%s\n' "${f%/stat}"
    fi
  done
}

# Stop one recorded process group by its leader's PID: TERM, wait, KILL.
stop_group() {
  local name=$1 pid=$2 i
  if ! ours "$pid" && [ -z "$(group_members "$pid")" ]; then
    return 0
  fi
  if ! ours "$pid"; then
    # The leader is gone but its group lives on: only kill members that
    # carry our marker.
    local m
    for m in $(group_members "$pid"); do ours "$m" && kill -KILL "$m" 2>/dev/null || true; done
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [ -z "$(group_members "$pid")" ] && return 0
    sleep 0.2
  done
  log "$name (pgid $pid) still running after 10 s: SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  for m in $(group_members "$pid"); do kill -KILL "$m" 2>/dev/null || true; done
}

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

# starttime PID: the process's start time in clock ticks since boot (field 22
# of /proc/PID/stat); with the PID it names one process for good.
starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  set -- ${stat##*) }
  printf '%s\n' "${20}"
}

# Has PID our marker in its environment?  (uwsgi overwrites its own.)
has_marker() {
  [ -r "/proc/$1/environ" ] || return 1
  tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "BOMARUN_OPENSTACK_STACK=$STATE"
}

# ours NAME: is the process recorded as NAME in STATE/run still alive and
# still the one we started?  A recycled PID has another start time.
ours() {
  local name=$1 pid want
  pid=$(cat "$STATE/run/$name.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  want=$(cat "$STATE/run/$name.start" 2>/dev/null || true)
  if [ -n "$want" ]; then
    [ "$(starttime "$pid")" = "$want" ]
  else
    has_marker "$pid"
  fi
}

# The database server's socket in STATE, and `sql [DB] < statements` (or
# `sql -e ...`): the MariaDB client as root over it.  --no-defaults first:
# Debian's /etc/mysql/my.cnf would point the client at /run/mysqld.
db_sock() { printf '%s\n' "$STATE/run/mysqld.sock"; }
sql() {
  mariadb --no-defaults --socket="$(db_sock)" -uroot --batch --skip-column-names "$@"
}

# PIDs whose process group or session is PGID.
group_members() {
  ps -e -o pid=,pgid=,sid= | awk -v g="$1" '$2 == g || $3 == g { print $1 }'
}

# stop_groups NAME...: stop the process groups recorded under these names,
# by their leaders' PIDs: SIGTERM to every group at once, up to 15 s for all
# of them to go, then SIGKILL to what is left.  A leader that is gone (or
# whose PID now names another process) is not signalled; members of its old
# group that still carry our marker are killed.
stop_groups() {
  local name pid m i live pids=""
  for name in "$@"; do
    pid=$(cat "$STATE/run/$name.pid" 2>/dev/null) || continue
    if ours "$name"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids="$pids $pid"
    else
      for m in $(group_members "$pid"); do has_marker "$m" && kill -KILL "$m" 2>/dev/null || true; done
    fi
  done
  for i in $(seq 1 75); do
    live=""
    for pid in $pids; do [ -n "$(group_members "$pid")" ] && live="$live $pid"; done
    [ -z "$live" ] && return 0
    sleep 0.2
  done
  for pid in $live; do
    log "process group $pid still running after 15 s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
    for m in $(group_members "$pid"); do kill -KILL "$m" 2>/dev/null || true; done
  done
}

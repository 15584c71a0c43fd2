#!/usr/bin/env bash
# Is the local OpenStack test stack in STATE_DIR up?  Every recorded process
# alive (and ours) with its resident memory (its whole process group), the
# database answering on its socket, and every API answering.  Prints one line
# per process, the database and each endpoint, then the total memory; exits 0
# when all are healthy.
#
# Usage:  status.sh [STATE_DIR]
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
STATE=$(os_state_dir "${1:-}")
[ -f "$STATE/run/order" ] || { echo "not running ($STATE)"; exit 1; }
rc=0
total_kb=0
for name in $(cat "$STATE/run/order"); do
  pid=$(cat "$STATE/run/$name.pid" 2>/dev/null || true)
  if ours "$name"; then
    kb=$(ps -e -o pgid=,sid=,rss= | awk -v g="$pid" '$1 == g || $2 == g { s += $3 } END { print s + 0 }')
    total_kb=$((total_kb + kb))
    printf '%-16s pid %-7s running  %5d MiB\n' "$name" "$pid" $((kb / 1024))
  else
    printf '%-16s pid %-7s NOT RUNNING\n' "$name" "${pid:-?}"; rc=1
  fi
done
. "$STATE/ports.env"
sock=$(db_sock)
if [ -S "$sock" ]; then
  if conns=$(sql -e "select variable_value from information_schema.global_status where variable_name = 'THREADS_CONNECTED'" 2>&1); then
    printf '%-16s %-34s up, %s connections\n' database "$sock" "$conns"
  else
    printf '%-16s %-34s DOWN: %s\n' database "$sock" "$(echo "$conns" | head -1)"; rc=1
  fi
else
  printf '%-16s %-34s DOWN: no socket\n' database "$sock"; rc=1
fi
check() { # NAME URL
  local code
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$2" || true)
  case "$code" in 2??|3??|401) printf '%-16s %-34s HTTP %s\n' "$1" "$2" "$code" ;;
    *) printf '%-16s %-34s HTTP %s DOWN\n' "$1" "$2" "${code:-none}"; rc=1 ;; esac
}
check keystone "http://127.0.0.1:$KEYSTONE_PORT/v3"
[ -n "${GLANCE_PORT:-}" ] && check glance "http://127.0.0.1:$GLANCE_PORT/"
[ -n "${PLACEMENT_PORT:-}" ] && check placement "http://127.0.0.1:$PLACEMENT_PORT/"
[ -n "${NOVA_PORT:-}" ] && check nova "http://127.0.0.1:$NOVA_PORT/"
[ -n "${NEUTRON_PORT:-}" ] && check neutron "http://127.0.0.1:$NEUTRON_PORT/"
[ -n "${OCTAVIA_PORT:-}" ] && check octavia "http://127.0.0.1:$OCTAVIA_PORT/"
[ -n "${HEAT_PORT:-}" ] && check heat "http://127.0.0.1:$HEAT_PORT/"
[ -n "${MAGNUM_PORT:-}" ] && check magnum "http://127.0.0.1:$MAGNUM_PORT/"
printf '%-16s %d MiB resident in all\n' total $((total_kb / 1024))
exit $rc

#!/usr/bin/env bash
# Prints, for every log of the local cloud in STATE_DIR, the last lines that
# report an error (an oslo.log ERROR or CRITICAL line, a Python traceback, an
# HTTP 5xx that uwsgi logged, MariaDB's [ERROR]), so a failure on a machine
# nobody can log into can be diagnosed from the CI output alone.  Also counts
# database errors per log (lock waits, deadlocks, lost connections, integrity
# errors).  Exit 0 always: it is a report.
#
# Usage:  errors.sh [--lines N] [STATE_DIR]     (default 8 lines per log)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
n=8
state_arg=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lines) n=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) state_arg=$1; shift ;;
  esac
done
STATE=$(os_state_dir "$state_arg")
[ -d "$STATE/log" ] || { echo "no logs in $STATE/log"; exit 0; }
ERR_RE=' [0-9]+ (ERROR|CRITICAL) |^Traceback |\[ERROR\]|HTTP/1\.[01] 5[0-9][0-9]\)'
DB_RE='database is locked|OperationalError|DBDeadlock|Deadlock found|DBConnectionError|Lost connection to|IntegrityError|DBError|pymysql\.err'
found=0
for f in "$STATE"/log/*.log; do
  [ -f "$f" ] || continue
  lines=$(grep -aE "$ERR_RE" "$f" | tail -n "$n")
  [ -n "$lines" ] || continue
  found=1
  echo "--- $(basename "$f"): last error lines ($(grep -acE "$ERR_RE" "$f") in all)"
  printf '%s\n' "$lines" | cut -c1-400
done
[ "$found" -eq 1 ] || echo "no error lines in $STATE/log/*.log"
echo "--- database errors per log:"
dbf=0
for f in "$STATE"/log/*.log; do
  [ -f "$f" ] || continue
  c=$(grep -acE "$DB_RE" "$f")
  [ "$c" -gt 0 ] || continue
  dbf=1
  printf '%-28s %s\n' "$(basename "$f")" "$c"
done
[ "$dbf" -eq 1 ] || echo "none"
exit 0

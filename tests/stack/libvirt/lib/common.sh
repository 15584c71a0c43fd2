# Shared by start.sh, stop.sh, status.sh and smoke.sh.  Source it; it sets
# STATE (the state directory) from $1 / $BOMARUN_LIBVIRT_DIR and the helpers.

LV_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Debian's tools only (a pyenv shim comes first on PATH on these machines).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MARKER=.bomarun-libvirt        # present in every state directory we made
URI=qemu:///system

lv_state_dir() {
  local d=${1:-${BOMARUN_LIBVIRT_DIR:-/tmp/bomarun-libvirt}}
  case "$d" in /*) ;; *) d="$PWD/$d" ;; esac
  printf '%s\n' "${d%/}"
}

log() { printf '[virt-stack] %s\n' "$*" >&2; }
die() { printf '[virt-stack] ERROR: %s\n' "$*" >&2; exit 1; }

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

# pid_of NAME: the PID recorded for NAME (virtlogd, libvirtd), or nothing.
pid_of() { cat "$STATE/run/$1.pid" 2>/dev/null | tr -d ' \n' || true; }

# ours NAME: is the process recorded as NAME still alive and still the one we
# started (same PID and start time: a recycled PID has another)?
ours() {
  local pid want
  pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  want=$(cat "$STATE/run/$1.start" 2>/dev/null || true)
  [ -n "$want" ] && [ "$(starttime "$pid")" = "$want" ]
}

# answers: does qemu:///system answer (within 10 s)?
answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

# rss_kb PID: resident memory of one process, KiB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# The qemu processes libvirt runs for its domains: libvirt double-forks them
# (their parent is PID 1, not libvirtd) and writes each one's PID to
# /run/libvirt/qemu/DOMAIN.pid.  Prints "DOMAIN PID" for the live ones.
qemu_pids() {
  local f pid
  for f in /run/libvirt/qemu/*.pid; do
    [ -f "$f" ] || continue
    pid=$(tr -d ' \n' <"$f")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in *qemu-system-*) ;; *) continue ;; esac
    printf '%s %s\n' "$(basename "$f" .pid)" "$pid"
  done
}

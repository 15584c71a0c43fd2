#!/usr/bin/env bash
# cmake --install lays out bin/ and share/bomarun/VERSION/{lua,runbooks,
# profiles,examples}; the installed binary must find its own Lua library
# (not the source tree's) and run the shipped example.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
share=$(echo "$prefix"/share/bomarun/*)
for d in lua/core/bomarun lua/integrations/bomarun lua/engine/bomarun runbooks profiles examples; do
  [ -d "$share/$d" ] || { echo "not installed: $share/$d"; exit 1; }
done
# Hide the source tree: the installed copy must be self-sufficient.
where=$(cd /tmp && "$prefix/bin/bomarun" -e 'print(package.searchpath("bomarun.runner", package.path))')
case "$where" in
  "$share"/lua/engine/bomarun/runner/init.lua) ;;
  *) echo "installed binary loaded its library from $where"; exit 1 ;;
esac
# The libvirt module is installed beside the library and loads on demand.
virt=$(cd /tmp && "$prefix/bin/bomarun" -e 'local v = require "bomarun.virt"; local c = assert(v.connect()); print(c.uri); c:close()')
[ "$virt" = "test:///default" ] || { echo "the installed bomarun_virt.so did not load: $virt"; exit 1; }
[ -f "$prefix/lib/bomarun/"*/bomarun_virt.so ] || { echo "bomarun_virt.so not installed under lib/bomarun/"; exit 1; }
cd "$prefix"
"$prefix/bin/bomarun" "$share/examples/first-run.lua" --run-dir "$prefix/runs" > out.txt
grep -q "profile local" out.txt || { echo "the installed profile was not found"; cat out.txt; exit 1; }
grep -q "=> ACCEPTED" out.txt
echo "ok - installed layout runs the example from $share"

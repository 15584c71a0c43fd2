#!/usr/bin/env bash
# Fuzzing in the suite: builds build-fuzz (clang, libFuzzer + ASan + UBSan;
# -DBOMARUN_FUZZ=ON) and runs each harness for a bounded time on a copy of
# its seed corpus (tests/fuzz/corpus/NAME).  Fails if any harness crashes,
# times out or runs out of memory; the inputs that did are kept in
# build-fuzz/fuzz-artifacts/NAME/ (add them to the corpus once fixed).
#
#   tests/fuzz/run.sh [SECONDS] [NAME...]   default 20 s each, every harness
#   BOMARUN_FUZZ_STRICT=1 tests/fuzz/run.sh  Lua errors from bad input are
#                                            bugs too (see tests/fuzz/common.lua)
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-${FUZZ_SECONDS:-20}}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(json journal profile runbook)
build=${BOMARUN_FUZZ_BUILD:-$src/build-fuzz}

if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  "$src/scripts/deps.sh" || { echo "fuzz: cannot install clang and libclang-rt"; exit 1; }
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang cmake -S "$src" -B "$build" -DBOMARUN_FUZZ=ON >/dev/null || exit 1
fi
targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
cmake --build "$build" -j2 --target "${targets[@]}" >"$build/fuzz-build.log" 2>&1 ||
  { tail -30 "$build/fuzz-build.log"; echo "fuzz: the harnesses do not build"; exit 1; }

work=$(mktemp -d /tmp/bomarun-fuzz-run-XXXXXX)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$src/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
rc=0
for n in "${names[@]}"; do
  mkdir -p "$work/$n" "$work/$n.art"
  cp "$src/tests/fuzz/corpus/$n"/* "$work/$n"/
  # The shipped runbooks and examples seed the runbook harness as they are
  # (not copied into the repository's corpus).
  if [ "$n" = runbook ]; then cp "$src"/runbooks/*.lua "$src"/examples/*.lua "$work/$n"/; fi
  dict=$src/tests/fuzz/lua.dict
  case $n in json|journal) dict=$src/tests/fuzz/json.dict ;; esac
  log=$work/$n.log
  "$build/tests/fuzz/fuzz_$n" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
    -max_len=16384 -dict="$dict" -print_final_stats=1 -artifact_prefix="$work/$n.art/" \
    "$work/$n" >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1, ft \2/p')
  if [ $status -ne 0 ] || ls "$work/$n.art"/* >/dev/null 2>&1; then
    rc=1
    mkdir -p "$build/fuzz-artifacts/$n"
    cp "$work/$n.art"/* "$build/fuzz-artifacts/$n"/ 2>/dev/null
    echo "fuzz_$n: FAILED (status $status) after ${execs:-?} runs; inputs kept in $build/fuzz-artifacts/$n/"
    grep -aE 'ERROR|BUG|fuzz:' "$log" | head -10
    grep -aE '^ +#[0-9]+ ' "$log" | head -25
  else
    echo "fuzz_$n: ok, ${execs:-?} runs in ${secs} s (${cov:-?}), corpus $(ls "$work/$n" | wc -l) inputs"
    sed -n '/^fuzz: [0-9]* expected errors/,$p' "$log" | grep -aE '^(fuzz:|  )' | head -8
  fi
done
exit $rc

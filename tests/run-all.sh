#!/usr/bin/env bash
# `make test`: unit + protocol suites, end-to-end through a real dockerd, then the
# unit + protocol suites again built with ASan/UBSan, the racing protocol suites
# against a ThreadSanitizer build of the plugin, then a short run of the fuzz
# harnesses. Ends with "N passed, N failed, N skipped"; every skip prints its reason.
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
PGD_COUNTS=$(mktemp)
export PGD_COUNTS
rc=0

echo "== formatting (the committed .clang-format)"
if make -C "$top" -s format-check; then
  echo "ok   format-check"; echo "1 0 0" >>"$PGD_COUNTS"
else
  echo "FAIL format-check (make format)"; echo "0 1 0" >>"$PGD_COUNTS"; rc=1
fi

echo "== unit and protocol suites ($build)"
"$here/run-unit.sh" "$build" || rc=1

echo "== end-to-end through dockerd"
if [ -x "$here/e2e/run.sh" ]; then
  elog=$(mktemp)
  "$here/e2e/run.sh" "$build" 2>&1 | tee "$elog"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$elog" | tail -1)
  if [ -n "$line" ]; then
    sed -E 's/^([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/' <<<"$line" >>"$PGD_COUNTS"
  else
    echo "0 1 0" >>"$PGD_COUNTS"; rc=1
  fi
  rm -f "$elog"
else
  echo "no end-to-end runner"; echo "0 1" >>"$PGD_COUNTS"; rc=1
fi

if [ "${PGD_SKIP_ASAN:-0}" != 1 ]; then
  echo "== unit and protocol suites under ASan/UBSan"
  if make -C "$top" -s -j2 asan >/dev/null; then
    # test_stress loops for PGD_STRESS_SECONDS: a shorter run here, the full one above
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      PGD_STRESS_SECONDS="${PGD_ASAN_STRESS_SECONDS:-15}" \
      "$here/run-unit.sh" "$top/build-asan" || rc=1
  else
    echo "ASan build failed"; echo "0 1" >>"$PGD_COUNTS"; rc=1
  fi
fi

if [ "${PGD_SKIP_TSAN:-0}" != 1 ]; then
  # the plugin built with ThreadSanitizer under the protocol suites that race requests
  echo "== protocol suites against the ThreadSanitizer build"
  before=$(wc -l <"$PGD_COUNTS")
  if ! make -C "$top" -s -j2 tsan BUILD="$build"; then
    rc=1
    [ "$(wc -l <"$PGD_COUNTS")" -gt "$before" ] || { echo "TSan build failed"; echo "0 1 0" >>"$PGD_COUNTS"; }
  fi
fi

if [ "${PGD_SKIP_FUZZ:-0}" != 1 ]; then
  # short bounded run of each libFuzzer harness on its seed corpus (make fuzz runs longer)
  echo "== fuzz harnesses (${PGD_FUZZ_SECONDS:-15} s each)"
  before=$(wc -l <"$PGD_COUNTS")
  if ! make -C "$top" -s -j2 fuzz FUZZ_SECONDS="${PGD_FUZZ_SECONDS:-15}"; then
    rc=1
    # a build failure ran no harness: count it
    [ "$(wc -l <"$PGD_COUNTS")" -gt "$before" ] || { echo "fuzz build failed"; echo "0 1" >>"$PGD_COUNTS"; }
  fi
fi

read -r passed failed skipped < <(awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}' "$PGD_COUNTS")
rm -f "$PGD_COUNTS"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || rc=1
exit $rc

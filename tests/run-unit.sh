#!/usr/bin/env bash
# Run every Criterion suite (unit and protocol) built in BUILD; print per-suite
# results and add the counts to $PGD_COUNTS (a file: "passed failed" lines).
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
build=${1:-build}
counts=${PGD_COUNTS:-/dev/null}
export PGD_BUILD=$build
rc=0
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  log=$(mktemp)
  # --jobs 1: the engine suites mount real loop devices; keep them apart
  "$t" --jobs 1 --timeout 600 >"$log" 2>&1
  status=$?
  synth=$(grep -a 'Synthesis:' "$log" | tail -1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
  passing=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
  tested=${tested:-0}; passing=${passing:-0}
  failed=$((tested - passing))
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  echo "$passing $failed" >>"$counts"
  if [ "$status" -ne 0 ]; then
    rc=1
    echo "FAIL $name ($synth)"
    grep -a -E '\[(FAIL|----)\]|Assertion|CRASH|ERROR|Sanitizer|runtime error' "$log" | head -40
  else
    echo "ok   $name ($synth)"
  fi
  rm -f "$log"
done
exit $rc

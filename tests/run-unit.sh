#!/usr/bin/env bash
# Run every Criterion suite (unit and protocol) built in BUILD; print per-suite
# results, every skip with its reason, and add the counts to $PGD_COUNTS (a file:
# "passed failed skipped" lines).
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
build=${1:-build}
counts=${PGD_COUNTS:-/dev/null}
export PGD_BUILD=$build
rc=0

# Suites that need nothing of the host; every other one mounts images (root, FUSE,
# loop devices) and is skipped, with the reason, where those are missing.
HOST_FREE=" test_json test_util "
missing=""
[ "$(id -u)" = 0 ] || missing="$missing root"
[ -c /dev/fuse ] || missing="$missing /dev/fuse"
[ -c /dev/loop-control ] || missing="$missing /dev/loop-control"

for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if [ -n "$missing" ] && [[ $HOST_FREE != *" $name "* ]]; then
    echo "skip $name: needs$missing"
    echo "0 0 1" >>"$counts"
    continue
  fi
  log=$(mktemp)
  # --jobs 1: the engine suites mount real loop devices; keep them apart.
  # --verbose: Criterion names each skipped test and its reason only then.
  "$t" --jobs 1 --timeout 600 --verbose >"$log" 2>&1
  status=$?
  synth=$(grep -a 'Synthesis:' "$log" | tail -1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
  passing=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
  tested=${tested:-0}; passing=${passing:-0}
  skipped=$(grep -a -c '^\[SKIP\]' "$log")
  failed=$((tested - passing))
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  echo "$passing $failed $skipped" >>"$counts"
  if [ "$status" -ne 0 ]; then
    rc=1
    echo "FAIL $name ($synth)"
    grep -a -E '\[(FAIL|----)\]|Assertion|CRASH|ERROR|Sanitizer|runtime error' "$log" | head -40
  else
    echo "ok   $name ($synth$([ "$skipped" -gt 0 ] && echo ", skipped $skipped"))"
  fi
  grep -a '^\[SKIP\]' "$log" | sed 's/^\[SKIP\] /     skip /'
  rm -f "$log"
done
exit $rc

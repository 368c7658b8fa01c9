#!/usr/bin/env bash
# `make tsan`: run protocol SUITES (Criterion binaries of BUILD, not instrumented)
# against the plugin built with ThreadSanitizer in TSAN_BUILD. A race report makes the
# server exit non-zero at SIGTERM, which the suites' teardown checks; the reports are
# also collected from the servers' logs. Adds "passed failed skipped" to $PGD_COUNTS.
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
build=${1:?build dir}
tsan=${2:?tsan build dir}
shift 2
counts=${PGD_COUNTS:-/dev/null}
reports=$(mktemp -d)
# exitcode: a report makes the server's exit status non-zero; log_path keeps them
export TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1:log_path=$reports/tsan"
export PGD_BUILD=$tsan
# the stress suite's loop, shorter: TSan slows the server several times
export PGD_STRESS_SECONDS=${PGD_TSAN_STRESS_SECONDS:-15}
rc=0
missing=""
[ "$(id -u)" = 0 ] || missing="$missing root"
[ -c /dev/fuse ] || missing="$missing /dev/fuse"
[ -c /dev/loop-control ] || missing="$missing /dev/loop-control"
for name in "$@"; do
  t=$build/tests/$name
  if [ -n "$missing" ]; then
    echo "skip $name under TSan: needs$missing"; echo "0 0 1" >>"$counts"; continue
  fi
  [ -x "$t" ] || { echo "FAIL $name (not built)"; echo "0 1 0" >>"$counts"; rc=1; continue; }
  log=$(mktemp)
  "$t" --jobs 1 --timeout 900 >"$log" 2>&1
  status=$?
  synth=$(grep -a 'Synthesis:' "$log" | tail -1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
  passing=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
  failed=$((${tested:-0} - ${passing:-0}))
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  echo "${passing:-0} $failed 0" >>"$counts"
  if [ "$status" -ne 0 ]; then
    rc=1
    echo "FAIL $name under TSan ($synth)"
    grep -a -E '\[(FAIL|----)\]|Assertion|CRASH' "$log" | head -20
  else
    echo "ok   $name under TSan ($synth)"
  fi
  rm -f "$log"
done
if compgen -G "$reports/tsan*" >/dev/null; then
  echo "ThreadSanitizer reports:"
  cat "$reports"/tsan* | head -200
  echo "0 1 0" >>"$counts"
  rc=1
fi
rm -rf "$reports"
exit $rc

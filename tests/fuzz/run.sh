#!/usr/bin/env bash
# Run every libFuzzer harness built in BUILD (make fuzz) for SECONDS each on its seed
# corpus tests/fuzz/corpus/<name>/ (read only: new inputs go to a temporary directory).
# A crash, leak, sanitizer report or hang is a failure; its input is kept in
# BUILD/fuzz-artifacts/. Appends one "passed failed" line per harness to $PGD_COUNTS.
# SPDX-License-Identifier: GPL-2.0-or-later
set -u
build=${1:-build-fuzz}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
counts=${PGD_COUNTS:-/dev/null}
rc=0
mkdir -p "$build/fuzz-artifacts"
for h in "$build"/fuzz_*; do
  [ -x "$h" ] || continue
  name=$(basename "$h"); name=${name#fuzz_}
  work=$(mktemp -d)
  mkdir -p "$work/corpus"
  log=$(mktemp)
  seeds=()
  [ -d "$here/corpus/$name" ] && seeds=("$here/corpus/$name")
  # -timeout: an input that runs this long is a hang (a finding), not a slow test
  # the harnesses' scratch trees live in WORK/tmp: gone even after a crash
  mkdir -p "$work/tmp"
  TMPDIR="$work/tmp" "$h" -max_total_time="$seconds" -max_len=65536 -timeout=300 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/$name-" "$work/corpus" "${seeds[@]}" >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    echo "ok   fuzz_$name (${runs:-?} runs in ${seconds}s)"
    echo "1 0" >>"$counts"
  else
    rc=1
    echo "FAIL fuzz_$name (exit $status; artifacts in $build/fuzz-artifacts/)"
    grep -a -E 'ERROR|SUMMARY|fuzz_(apply|proto):|runtime error|Test unit written' "$log" | head -20
    echo "0 1" >>"$counts"
  fi
  rm -rf "$work" "$log"
done
exit $rc

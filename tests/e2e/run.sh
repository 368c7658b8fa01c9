#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/e2e/run.sh BUILD_DIR [TEST...]: run the end-to-end tests t_*.sh (or the
# named ones) one after another (one dockerd at a time: /run/docker/plugins is
# global) and print "N passed, N failed, N skipped". Exit 1 when any failed.
# Each test's output goes to BUILD_DIR/e2e-logs/<test>.log; failures are shown.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
[ -d "$build" ] || {
	echo "e2e: no build directory $build" >&2
	exit 2
}
BUILD=$(cd "$build" && pwd)
export BUILD
# Every Changes/Diff/DiffSize the change tracker answers is also computed in full and
# compared (store/layerdiff.c): a difference fails the docker command, so the test.
export PGD_TRACK_VERIFY=${PGD_TRACK_VERIFY-1}

if [ "$(id -u)" != 0 ]; then
	echo "SKIP every e2e test: needs root (dockerd, mounts, loop devices)"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi

if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=()
	for t in "$here"/t_*.sh; do tests+=("$(basename "$t")"); done
fi

logs=$BUILD/e2e-logs
mkdir -p "$logs"
passed=0 failed=0 skipped=0
failed_names=()
start=$(date +%s)
for t in "${tests[@]}"; do
	name=${t%.sh}
	t0=$(date +%s)
	bash "$here/$name.sh" >"$logs/$name.log" 2>&1 </dev/null
	rc=$?
	secs=$(($(date +%s) - t0))
	case $rc in
	0)
		passed=$((passed + 1))
		echo "PASS $name (${secs}s)"
		;;
	77)
		skipped=$((skipped + 1))
		echo "SKIP $name: $(grep -m1 'SKIP:' "$logs/$name.log" | sed 's/.*SKIP: //')"
		;;
	*)
		failed=$((failed + 1))
		failed_names+=("$name")
		echo "FAIL $name (exit $rc, ${secs}s); log: $logs/$name.log"
		grep -v '^time=' "$logs/$name.log" | grep -E 'FAIL|LEAK|warning|error' | head -15 | sed 's/^/    /'
		;;
	esac
done

echo "e2e: $(($(date +%s) - start))s${failed_names[*]:+; failed: ${failed_names[*]}}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

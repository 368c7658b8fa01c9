#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Concurrency: parallel `docker run`s, and two commits at the same time (each a Diff
# streamed into an ApplyDiff on another connection).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null

# four runs at once, each writing and reading its own file
t0=$(now_ms)
pids=()
for i in 1 2 3 4; do
	dk run --rm --network none busybox:local sh -c "echo run$i >/f; cat /f" >"$D/par$i.out" 2>&1 &
	pids+=($!)
done
for i in 1 2 3 4; do
	wait "${pids[i - 1]}" || fail "parallel run $i failed: $(cat "$D/par$i.out")"
	assert_eq "run$i" "$(cat "$D/par$i.out")" "parallel run $i"
done
log "4 parallel runs took $(($(now_ms) - t0)) ms"

# two containers with different changes, committed at the same time
run_ok "prepare p1" dk run --name p1 --network none busybox:local \
	sh -c 'dd if=/dev/urandom of=/blob bs=1M count=8 2>/dev/null; md5sum /blob >/sum; rm /bin/ls' >/dev/null
run_ok "prepare p2" dk run --name p2 --network none busybox:local \
	sh -c 'mkdir -p /x/y; dd if=/dev/urandom of=/x/y/blob bs=1M count=8 2>/dev/null; md5sum /x/y/blob >/sum' >/dev/null
t0=$(now_ms)
dk commit p1 img:p1 >"$D/c1.out" 2>&1 &
c1=$!
dk commit p2 img:p2 >"$D/c2.out" 2>&1 &
c2=$!
wait "$c1" || fail "commit p1 failed: $(cat "$D/c1.out")"
wait "$c2" || fail "commit p2 failed: $(cat "$D/c2.out")"
log "ok: two parallel commits in $(($(now_ms) - t0)) ms"
out=$(run_ok "check img:p1" dk run --rm --network none img:p1 sh -c 'md5sum -c /sum && if [ -e /bin/ls ]; then echo ls-present; fi')
assert_eq "/blob: OK" "$out" "img:p1 holds its blob and lacks /bin/ls"
out=$(run_ok "check img:p2" dk run --rm --network none img:p2 sh -c 'md5sum -c /sum && ls /bin/ls')
assert_eq "$(printf '/x/y/blob: OK\n/bin/ls')" "$out" "img:p2 holds its blob and keeps /bin/ls"
run_ok "rm p1 p2" dk rm p1 p2 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The containerd face across restarts: kill -9 of ploop-snapshotter while a task runs
# (the task keeps its root: mounts and image servers outlive the snapshotter), the
# restarted snapshotter adopts the mount and serves again (same Mounts, new
# containers); then a restart of containerd with the task still running; the task's
# snapshot is removed through the new processes and nothing is left.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_snapshotter.sh"
e2e_setup

e2e_start_snapshotter
e2e_start_containerd_ploop
snap() { ctr_ snapshots --snapshotter ploop "$@"; }

e2e_layers_image "$D/layers.tar" pgd/layers:1
img=docker.io/pgd/layers:1
run_ok "import" ctr_ images import --snapshotter ploop "$D/layers.tar" >/dev/null
run_ok "start task bg" ctr_ run -d --snapshotter ploop "$img" bg sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
run_ok "write in bg" ctr_ task exec --exec-id w1 bg sh -c 'echo before >/data/state'
before=$(snap mounts /t bg)
servers=$(dir_binary_pids "$D" | grep -vx "$(e2e_snapshotter_pid)" | sort)
[ -n "$servers" ] || fail "no image server runs for bg"

kill -KILL "$(e2e_snapshotter_pid)"
wait_pid_gone "$(e2e_snapshotter_pid)" 30 || fail "the snapshotter did not die"
log "killed the snapshotter (SIGKILL) with bg running"
assert_eq "before" "$(ctr_ task exec --exec-id r1 bg cat /data/state)" "bg reads its root with the snapshotter dead"
run_ok "bg writes with the snapshotter dead" ctr_ task exec --exec-id w2 bg sh -c 'echo during >>/data/state'
assert_eq "$servers" "$(dir_binary_pids "$D" | sort)" "the image servers outlive the snapshotter"

e2e_start_snapshotter
e2e_wait_ctrd_reconnect
assert_contains "$(log_since "$D/snapshotter.log" 0)" "adopted mounted layer" "the new snapshotter adopts the live mount"
assert_eq "$before" "$(snap mounts /t bg)" "Mounts of bg is the same after the restart"
assert_eq "$(printf 'before\nduring')" "$(ctr_ task exec --exec-id r2 bg cat /data/state)" "bg still reads and writes its root"
out=$(ctr_ run --rm --snapshotter ploop "$img" c-after sh -c 'cat /data/b')
assert_eq b "$out" "a new container runs on the restarted snapshotter"

pid=$(cat "$D/ctrd/containerd.pid")
stop_pid "$pid" 15 containerd || fail "containerd ignored SIGTERM"
log "stopped containerd with bg running"
e2e_start_containerd_ploop
assert_match "$(ctr_ task ls | awk '$1 == "bg" {print $3}')" "^RUNNING$" "bg runs on after the containerd restart"
assert_eq "$(printf 'before\nduring')" "$(ctr_ task exec --exec-id r3 bg cat /data/state)" "bg reads its root after both restarts"

run_ok "kill bg" ctr_ task kill bg
for ((n = 0; n < 100; n++)); do
	[ "$(ctr_ task ls | awk '$1 == "bg" {print $3}')" = STOPPED ] && break
	sleep 0.1
done
run_ok "delete task bg" ctr_ task delete bg
run_ok "delete container bg (and its snapshot)" ctr_ containers delete bg
run_ok "images rm --sync" ctr_ images rm --sync "$img" >/dev/null
assert_eq "" "$(snap ls | awk 'NR > 1')" "no snapshot is left"
e2e_wait_snapshots_gone
assert_eq "" "$(mounts_under "$D/snap")" "no mount under the snapshotter root"
assert_eq "" "$(ls -A "$D/snap/store/layers")" "no layer is left in the store"
assert_eq "" "$(loops_under "$D")" "no loop device backed under $D"
assert_eq "$(e2e_snapshotter_pid)" "$(dir_binary_pids "$D")" "no image server is left"

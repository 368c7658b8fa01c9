#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Online snapshots through dockerd (issue #13 item 3; on with PGD_ONLINE_SNAPSHOT=1): a
# container layer is created on its -init layer while that is still mounted (idle,
# --linger), so the plugin snapshots
# the served -init image and hands its mount to the container layer instead of
# unmounting, cloning and mounting again (plugin log). The container sees the -init
# files and its own writes; docker diff (run.sh sets PGD_TRACK_VERIFY=1: the tracked
# answer is checked against the full one) and commit are right.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup
is_ploop || {
	log "online snapshots are ploop's"
	exit 0
}

# off by default (it costs more than it saves here: README); the plugin inherits it
export PGD_ONLINE_SNAPSHOT=1
e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null

mark=$(log_mark "$D/plugin.log")
out=$(run_ok "docker run --rm" dk run --rm --network none busybox:local \
	sh -c 'test -e /.dockerenv && test -s /etc/hostname && echo hi >/x && cat /x')
assert_eq hi "$out" "docker run --rm on a handed-over mount"
log_since "$D/plugin.log" "$mark" | grep -q 'by an online snapshot, mount handed over' ||
	fail "the container layer was not created by an online snapshot"
log "ok: docker run --rm created its layer by an online snapshot"

run_ok "create" dk create --name c1 --network none busybox:local \
	sh -c 'echo data >/f; mkdir /etc/new; rm /bin/ls' >/dev/null
run_ok "start" dk start -a c1 >/dev/null
expect='A /etc/new
A /f
C /bin
C /etc
D /bin/ls'
out=$(run_ok "docker diff" dk diff c1 | sort)
assert_eq "$expect" "$out" "docker diff of a layer made by an online snapshot"
run_ok "commit" dk commit c1 online:1 >/dev/null
out=$(run_ok "run the commit" dk run --rm --network none online:1 \
	sh -c 'cat /f; test ! -e /bin/ls && echo gone')
assert_eq $'data\ngone' "$out" "the committed image"

run_ok "rm" dk rm c1 >/dev/null
run_ok "rmi" dk rmi online:1 >/dev/null
log "ok: create, start, diff, commit and rm of a container made by an online snapshot"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The change tracker through dockerd (run.sh sets PGD_TRACK_VERIFY=1: every tracked
# answer is also computed in full and a difference fails the docker command). On an
# image of busybox + 2,000 files: docker diff and docker commit of a container that
# appended, created, deleted, chmodded and renamed are answered on the hint (plugin
# log) and right; after a kill -9 of the plugin while the container runs, the next
# docker diff uses the full comparison (the mount was adopted) and is still right.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup
is_ploop || {
	log "the change tracker is ploop's"
	exit 0
}

e2e_start_plugin
e2e_start_dockerd
tree=$D/tree
e2e_busybox_tree "$tree"
for d in $(seq -w 0 19); do
	mkdir -p "$tree/data/d$d/sub"
	for f in $(seq -w 0 99); do echo "$d$f" >"$tree/data/d$d/f$f"; done
done
tar -C "$tree" --owner=0 --group=0 --numeric-owner -cf "$D/big.tar" .
rm -rf "$tree"
run_ok "import" dk import "$D/big.tar" big:local >/dev/null

work='echo more >>/data/d00/f00 && echo new >/data/d01/new && rm /data/d02/f02 &&
chmod 600 /data/d03/f03 && mv /data/d04/sub /data/d05/moved && sleep 3600'
run_ok "run" dk run -d --name tk --network none big:local sh -c "$work" >/dev/null
expect='A /data/d01/new
A /data/d05/moved
C /data
C /data/d00
C /data/d00/f00
C /data/d01
C /data/d02
C /data/d03
C /data/d03/f03
C /data/d04
C /data/d05
D /data/d02/f02
D /data/d04/sub'
for _ in $(seq 50); do
	[ "$(dk diff tk | sort)" = "$expect" ] && break
	sleep 0.2
done
mark=$(log_mark "$D/plugin.log")
out=$(run_ok "docker diff" dk diff tk | sort)
assert_eq "$expect" "$out" "docker diff on the hint"
log_since "$D/plugin.log" "$mark" | grep -q 'tracked, ' || fail "docker diff did not use the tracker"
run_ok "docker commit" dk commit tk snap:1 >/dev/null
out=$(run_ok "run the commit" dk run --rm --network none snap:1 sh -c \
	'cat /data/d00/f00 /data/d01/new; test ! -e /data/d02/f02 && test -d /data/d05/moved && echo ok')
assert_eq $'0000\nmore\nnew\nok' "$out" "the committed image"

e2e_kill_plugin KILL
e2e_start_plugin
mark=$(log_mark "$D/plugin.log")
out=$(run_ok "docker diff after kill -9" dk diff tk | sort)
assert_eq "$expect" "$out" "docker diff after the plugin was killed"
log_since "$D/plugin.log" "$mark" | grep -q 'full comparison (layer not tracked' ||
	fail "an adopted mount must be compared in full"
run_ok "rm" dk rm -f tk >/dev/null
run_ok "rmi" dk rmi snap:1 big:local >/dev/null
log "ok: tracked diff and commit, full comparison after kill -9"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `docker rm` and `docker rmi` leave nothing of the driver behind: no layer
# directories (no -init leftovers), no mounts, no loop devices, no image servers.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null
home=$D/root/$(e2e_driver_flag)

run_ok "run a (exited, kept)" dk run --name ca --network none busybox:local sh -c 'echo a >/a' >/dev/null
run_ok "create b (never started)" dk create --name cb --network none busybox:local true >/dev/null
run_ok "commit ca" dk commit ca img:a >/dev/null
run_ok "run --rm from the commit" dk run --rm --network none img:a cat /a >/dev/null
run_ok "run c (running)" dk run -d --name cc --network none img:a \
	sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
run_ok "exec in cc" dk exec cc sh -c 'echo c >/c' >/dev/null

ids=$(e2e_layer_ids | grep . || true)
n_ids=$(grep -c . <<<"$ids" || true)
log "layer IDs known to dockerd: $n_ids"
# 1 busybox + 1 commit + 3 containers x 2 (layer and -init)
[ "$n_ids" -eq 8 ] || fail "expected 8 layer IDs in dockerd's layer store, found $n_ids"
found=0
while read -r id; do
	[ -n "$(find "$home" -xdev -name "*$id*" -print -quit 2>/dev/null)" ] && found=$((found + 1))
done <<<"$ids"
log "layer IDs with a path under $home: $found of $n_ids"
[ "$found" -gt 0 ] || fail "no layer ID appears under $home: the removal check below would prove nothing"
if is_ploop; then
	m=$(mounts_under "$home" | grep -c . || true)
	log "mounts under Home while c runs: $m; loop devices: $(loops_under "$D" | tr '\n' ' ')"
	log "image servers while c runs: $(e2e_image_server_pids | tr '\n' ' ')"
	[ "$m" -gt 0 ] || fail "a running container but no mount under $home"
fi

t0=$(now_ms)
run_ok "docker rm -f ca cb cc" dk rm -f ca cb cc >/dev/null
log "rm -f of 3 containers took $(($(now_ms) - t0)) ms"
run_ok "docker rmi img:a busybox:local" dk rmi img:a busybox:local >/dev/null
left=$(dk ps -aq; dk images -q)
assert_eq "" "$left" "no containers or images remain"

# nothing of any layer remains under Home
while read -r id; do
	hit=$(find "$home" -xdev -name "*$id*" 2>/dev/null | head -5)
	[ -z "$hit" ] || fail "layer $id still has files after rm/rmi: $hit"
done <<<"$ids"
log "ok: no file named after any removed layer under $home"
hit=$(find "$home" -xdev -name '*-init*' 2>/dev/null | head -5)
assert_eq "" "$hit" "no -init leftovers under Home"
assert_eq "" "$(mounts_under "$home")" "no mounts under Home"
assert_eq "" "$(loops_under "$D")" "no loop devices backed under $D"
if is_ploop; then
	assert_eq "" "$(e2e_image_server_pids)" "no image-server processes"
	log "Home after removal: $(find "$home" -mindepth 1 -maxdepth 2 | sed "s|^$home/||" | tr '\n' ' ')"
fi
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

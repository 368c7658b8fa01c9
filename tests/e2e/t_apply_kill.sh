#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Kill the plugin during an import's ApplyDiff and bring it back within dockerd's
# retry window: dockerd re-sends the POST with the rest of the body, which the
# plugin must refuse (ApplyDiff once per layer). The import fails, no image claims
# success, the half-applied layer is removed, and the next import works.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "kills the ploop plugin"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null

# a 300 MiB layer: long enough to be cut mid-stream
mkdir -p "$D/big/data"
for i in $(seq 1 75); do head -c 4194304 /dev/urandom >"$D/big/data/f$i"; done
tar -C "$D/big" -cf "$D/big.tar" .
rm -rf "$D/big"

mark=$(log_mark "$D/plugin.log")
dmark=$(log_mark "$D/dockerd.log")
dk import "$D/big.tar" big:local >"$D/import.out" 2>&1 &
imp=$!
# wait until the new layer is mounted for its ApplyDiff, then kill the plugin
for ((n = 0; n < 600; n++)); do
	log_since "$D/plugin.log" "$mark" | grep -q 'debug mounted' && break
	pid_alive "$imp" || break
	sleep 0.05
done
pid_alive "$imp" || fail "the import ended before the plugin could be killed: $(cat "$D/import.out")"
e2e_kill_plugin KILL
log "killed the plugin during ApplyDiff"
# back only once dockerd has seen it gone (it logs its first retry), so the restart
# falls inside its retry window whatever the machine's speed
until log_since "$D/dockerd.log" "$dmark" | grep -q 'retrying in'; do
	pid_alive "$imp" || break
	sleep 0.05
done
log "dockerd: $(log_since "$D/dockerd.log" "$dmark" | grep -m1 -o 'retrying in [0-9a-z.]*' || echo 'no retry logged before the import ended')"
e2e_start_plugin
rc=0
wait "$imp" || rc=$?
log "import exit $rc: $(cat "$D/import.out")"
[ "$rc" != 0 ] || fail "the import claimed success after the plugin was killed mid-ApplyDiff"
log "ok: the import failed"
assert_eq "" "$(dk images -q big:local)" "no image big:local"
# dockerd either re-sends the rest of the body to the restarted plugin (PROTOCOL.md
# section 9.2), which must refuse it, or gives up on the closed pipe; say which
calls=$(log_since "$D/plugin.log" "$mark")
resent=$(grep -c 'ApplyDiff' <<<"$calls" || true)
assert_not_contains "$(grep 'ApplyDiff' <<<"$calls" || true)" "ApplyDiff: 200" \
	"no ApplyDiff succeeded after the kill"
log "ApplyDiff calls the restarted plugin answered: $resent"
log "plugin answers after the restart: $(log_since "$D/plugin.log" "$mark" | grep -E 'GraphDriver\.[A-Za-z]+[^ ]*: [0-9]{3}' | sed -E 's/^[0-9:.]+ [a-z]+ //' | cut -c1-160 | tr '\n' ';')"
run_ok "import busybox again" dk import "$D/busybox.tar" bb2:local >/dev/null
run_ok "run it" dk run --rm --network none bb2:local true
# bb2:local is the same layer as busybox:local: only that one remains
n=$(e2e_layer_ids | grep -c . || true)
assert_eq 1 "$n" "dockerd knows one layer"
# the cut layer's ID: from dockerd's error, or from its log of the failed call
cut_id=$( (cat "$D/import.out"; log_since "$D/dockerd.log" "$dmark") |
	grep -oE 'ApplyDiff\?id=[0-9a-f]+' | head -1 | cut -d= -f2 || true)
[ -n "$cut_id" ] || fail "the cut layer's ID is neither in the import's error nor in dockerd's log"
[ -d "$D/root/$E2E_PLUGIN_NAME/layers" ] || fail "no Home under $D/root/$E2E_PLUGIN_NAME: nothing to search"
assert_eq "" "$(find "$D/root/$E2E_PLUGIN_NAME" -name "*$cut_id*" | head -3)" "the cut layer $cut_id left no files"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

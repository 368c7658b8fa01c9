#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Restarts: dockerd restarted while a container runs (dockerd stops it: Put, then
# Cleanup; the plugin process lives on and gets Init again), the container starts
# again with its data. Then, for the plugin, kill -9 it while dockerd runs and a
# container runs, start it again: the next `docker run` works from persisted state
# without a new Init, and the running container's filesystem survived.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

loop_cmd='trap "exit 0" TERM; while :; do sleep 1; done'

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null
run_ok "start live" dk run -d --name live --network none busybox:local sh -c "$loop_cmd" >/dev/null
run_ok "write in live" dk exec live sh -c 'echo persisted >/data' >/dev/null
plugin_pid=""
is_ploop && plugin_pid=$(e2e_plugin_pid)

# --- dockerd restart with a running container
e2e_restart_dockerd
if is_ploop; then
	pid_alive "$plugin_pid" || fail "the plugin died across the dockerd restart"
	log "ok: the same plugin process ($plugin_pid) served the restarted dockerd"
fi
state=$(dk inspect -f '{{.State.Status}}' live)
assert_eq exited "$state" "live was stopped by the dockerd shutdown"
run_ok "start live again" dk start live >/dev/null
out=$(dk exec live cat /data)
assert_eq persisted "$out" "live's data survived the dockerd restart"
run_ok "run --rm after the restart" dk run --rm --network none busybox:local true

if ! is_ploop; then
	run_ok "rm -f live" dk rm -f live >/dev/null
	e2e_stop_dockerd || fail "dockerd needed SIGKILL"
	log "plugin kill/restart part only applies to the ploop plugin"
	exit 0
fi

# --- kill -9 the plugin while dockerd runs and live runs
servers=$(e2e_image_server_pids | tr '\n' ' ')
log "image servers before the kill: ${servers:-none}"
mark=$(log_mark "$D/plugin.log")
inits_before=$(grep -c 'Init' "$D/plugin.log" || true)
live_pid=$(dk inspect -f '{{.State.Pid}}' live)
e2e_kill_plugin KILL
log "killed the plugin ($plugin_pid) with SIGKILL"
# docker exec would need the plugin (GetMetadata); look through /proc instead
out=$(cat "/proc/$live_pid/root/data")
assert_eq persisted "$out" "live's filesystem reads while the plugin is dead"
echo "while dead" >>"/proc/$live_pid/root/data" || fail "live's filesystem does not take writes while the plugin is dead"
sync -f "/proc/$live_pid/root/data" || fail "sync of live's filesystem while the plugin is dead"
log "ok: live's filesystem takes writes and syncs while the plugin is dead"
for p in $servers; do pid_alive "$p" || fail "image server $p died with the plugin"; done
e2e_start_plugin
mark2=$(log_mark "$D/plugin.log")
t0=$(now_ms)
out=$(run_ok "run after the plugin restart" dk run --rm --network none busybox:local md5sum /bin/busybox)
log "first run after the plugin restart took $(($(now_ms) - t0)) ms"
assert_eq "$(md5sum </bin/busybox | cut -d' ' -f1)" "$(cut -d' ' -f1 <<<"$out")" "the restarted plugin serves the old image"
out=$(dk exec live cat /data)
assert_eq "$(printf 'persisted\nwhile dead')" "$out" "live still works after the plugin restart"
run_ok "write in live after the restart" dk exec live sh -c 'echo more >>/data' >/dev/null
run_ok "stop live (Put of a layer mounted by the previous process)" dk stop live >/dev/null
run_ok "start live (Get again)" dk start live >/dev/null
out=$(dk exec live cat /data)
assert_eq "$(printf 'persisted\nwhile dead\nmore')" "$out" "live's data after stop/start under the new plugin"
# dockerd sent no Init to the new process: its log names no Init call
since=$(log_since "$D/plugin.log" "$mark")
if [ "$inits_before" -gt 0 ]; then
	assert_not_contains "$since" "Init" "no Init reached the restarted plugin"
else
	log "note: the plugin log does not name Init calls; cannot check that none came"
fi
log "plugin log after restart: $(log_since "$D/plugin.log" "$mark2" | grep -c . || true) lines"
run_ok "rm -f live" dk rm -f live >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The managed plugin dies (SIGKILL) while a container runs. First the plugin process
# under the supervising PID 1 (--supervise): the supervisor restarts it, the image
# servers live on, the running container keeps reading and writing (asserted). Then
# PID 1 itself: dockerd starts it again without Init; the new process must serve from
# its persisted state: docker run works, and the old container can be removed.
#
# What happens to the running container's filesystem is recorded, not asserted:
# in its own PID namespace the plugin is PID 1 and its image servers die with it
# (t_managed_ns.sh shows pidhost does not change that), so unlike the legacy plugin
# the running container loses its root filesystem.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "the managed plugin test is for ploop only"
e2e_setup
name=ploop:latest

[ -x "$BUILD/ploop-graphdriver" ] || fail "no $BUILD/ploop-graphdriver: build it first (make)"
e2e_start_dockerd vfs
run_ok "make-plugin.sh + docker plugin create" \
	env PLUGIN_OUT="$D/bundle" DOCKER_HOST="unix://$D/docker.sock" DOCKER="$DOCKER_CLI" \
	"$E2E_REPO/tools/make-plugin.sh" "$BUILD" >/dev/null
id=$(dk plugin inspect -f '{{.Id}}' "$name")
echo "$id" >>"$D/managed-ids"
e2e_created_entry "$E2E_PLUGINS_DIR/$id"
run_ok "docker plugin enable" dk plugin enable "$name" >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
e2e_start_dockerd "$name"
e2e_import_busybox >/dev/null
run_ok "run m1" dk run -d --name m1 --network none busybox:local \
	sh -c 'echo before >/data; trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
m1=$(dk inspect -f '{{.State.Pid}}' m1)

# the plugin's processes: main (its parent is the shim) and the image servers
procs=$(plugin_cgroup_pids "$id")
main="" servers=""
for p in $procs; do
	pp=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
	if grep -qxF "$pp" <<<"$procs"; then servers+="$p "; else main=$p; fi
done
[ -n "$main" ] || fail "cannot find the plugin's main process"
log "plugin main $main, image servers: ${servers:-none}"

# the plugin under the supervisor: the child of main that serves the socket
child=""
for p in $servers; do
	tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- '--socket' && child=$p
done
[ -n "$child" ] || fail "no supervised plugin process under $main"
servers=$(tr ' ' '\n' <<<"$servers" | grep -vxF "$child" | tr '\n' ' ')
kill -KILL "$child"
wait_pid_gone "$child" 10 || fail "the supervised plugin survived SIGKILL"
w=$( (echo during >>"/proc/$m1/root/data" && sync -f "/proc/$m1/root/data" && echo ok) 2>&1 || true)
assert_eq "ok" "$w" "m1 writes and syncs while the plugin process is down"
run_ok "run --rm after the supervisor restarted the plugin" \
	dk run --rm --network none busybox:local true
assert_contains "$(cat "/proc/$m1/root/data")" "during" "m1 kept its write"
log "after a kill of the supervised plugin: m1 kept writing; image servers: ${servers:-none}"

kill -KILL "$main"
wait_pid_gone "$main" 10 || fail "the plugin survived SIGKILL"
sleep 1
alive=""
for p in $servers; do pid_alive "$p" && alive+="$p "; done
log "image servers alive after the plugin died: ${alive:-none}"
r=$(cat "/proc/$m1/root/data" 2>&1 || true)
w=$( (echo after >>"/proc/$m1/root/data" && sync -f "/proc/$m1/root/data" && echo ok) 2>&1 || true)
log "m1's filesystem after the plugin died: read '$r', write+sync '$w'"

# dockerd restarts the plugin (no Init): the next calls must work
t0=$(now_ms)
run_ok "run --rm after dockerd restarted the plugin" dk run --rm --network none busybox:local cat /bin/busybox >/dev/null
log "first run after the crash took $(($(now_ms) - t0)) ms"
new=$(plugin_cgroup_pids "$id" | tr '\n' ' ')
log "plugin processes now: $new"
run_ok "rm -f m1 after the crash" dk rm -f m1 >/dev/null
run_ok "run again" dk run --rm --network none busybox:local true
pm=$D/root/plugins/$id/propagated-mount
log "mounts under propagated-mount before the stop: $(mounts_under "$pm" | grep -c . || true)"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Crash cleanup: SIGKILL dockerd, containerd (and the plugin) while containers run,
# then the harness teardown must leave nothing: no shims or container processes,
# no mounts under the instance, no loop devices, no image servers, no shim sockets
# in /run/containerd/s, no container cgroups, no /run/docker/plugins entry of ours.
# Then a new dockerd on the same data-root (and a new plugin) must work again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null
run_ok "run k1 (ignores SIGTERM)" dk run -d --name k1 --network none busybox:local sleep 100000 >/dev/null
run_ok "run k2" dk run -d --name k2 --network none busybox:local \
	sh -c 'echo k2 >/k2; trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
ids=$(dk ps -q --no-trunc)
shims=$(shim_pids "$D" | tr '\n' ' ')
workload=""
for s in $shims; do workload+="$(children "$s" | tr '\n' ' ')"; done
log "containers: $(tr '\n' ' ' <<<"$ids"); shims: $shims; container processes: $workload"
[ -n "$workload" ] || fail "no container processes found under the shims"
log "mounts under $D: $(mounts_under "$D" | grep -c . || true); loop devices: $(loops_under "$D" | tr '\n' ' ')"
# the shim sockets and cgroups the cleanup must remove exist now
shim_sock() { echo "/run/containerd/s/$(printf '%s' "$D/ctrd/containerd.sock/moby/$1" | sha256sum | cut -d' ' -f1)"; }
for id in $ids; do
	[ -S "$(shim_sock "$id")" ] || fail "no shim socket $(shim_sock "$id") for $id"
	ls -d /sys/fs/cgroup/*/docker/"$id" >/dev/null 2>&1 || fail "no cgroup docker/$id"
done

# --- crash
kill -KILL "$(cat "$D/dockerd.launch.pid")"
kill -KILL "$(cat "$D/ctrd/containerd.pid")"
if is_ploop; then e2e_kill_plugin KILL; fi
wait_pid_gone "$(cat "$D/dockerd.launch.pid")" 10 || fail "dockerd survived SIGKILL"
log "SIGKILLed dockerd, containerd$(is_ploop && echo ' and the plugin'); cleaning up"

E2E_KEEP=1 e2e_cleanup_instance "$D"
for s in $shims $workload; do pid_alive "$s" && fail "process $s survived the cleanup"; done
log "ok: no shim or container process survived"
assert_eq "" "$(shim_pids "$D")" "no shims of this instance"
assert_eq "" "$(mounts_under "$D")" "no mounts under $D"
assert_eq "" "$(loops_under "$D")" "no loop devices backed under $D"
assert_eq "" "$(dir_binary_pids "$D")" "no plugin or image-server processes"
for id in $ids; do
	[ ! -e "$(shim_sock "$id")" ] || fail "shim socket $(shim_sock "$id") of $id remains"
	for c in /sys/fs/cgroup/*/docker/"$id"; do
		[ ! -d "$c" ] || fail "cgroup $c remains"
	done
done
log "ok: no shim sockets or container cgroups remain"
if is_ploop; then
	[ ! -e "$E2E_LEGACY_SOCK" ] || fail "$E2E_LEGACY_SOCK remains"
	log "ok: the legacy socket is gone"
fi

# --- the same data-root works again (the layers survived the crash)
E2E_CLEAN_STOP=1
e2e_start_plugin
e2e_start_dockerd
out=$(dk ps -a --format '{{.Names}} {{.Status}}' | sort)
log "containers after the crash: $(tr '\n' ';' <<<"$out")"
run_ok "start k2 after the crash" dk start k2 >/dev/null
out=$(dk exec k2 cat /k2)
assert_eq k2 "$out" "k2's data survived the crash"
run_ok "run --rm after the crash" dk run --rm --network none busybox:local true
run_ok "rm -f k1 k2" dk rm -f k1 k2 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The managed (v2) plugin: tools/make-plugin.sh builds the bundle and runs
# `docker plugin create`; enable; restart dockerd with -s ploop:latest. Home is
# <pm>/ploop:latest, container roots live under <data-root>/plugins/<id>/
# propagated-mount/, docker run/commit/diff work, and dockerd stops without
# having to SIGKILL the plugin (it handles SIGTERM as PID 1).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "the managed plugin test is for ploop only"
e2e_setup
name=ploop:latest

[ -x "$BUILD/ploop-graphdriver" ] || fail "no $BUILD/ploop-graphdriver: build it first (make)"
e2e_start_dockerd vfs
t0=$(now_ms)
run_ok "make-plugin.sh + docker plugin create" \
	env PLUGIN_OUT="$D/bundle" DOCKER_HOST="unix://$D/docker.sock" DOCKER="$DOCKER_CLI" \
	"$E2E_REPO/tools/make-plugin.sh" "$BUILD"
log "bundle + plugin create took $(($(now_ms) - t0)) ms; rootfs $(du -sh "$D/bundle/rootfs" | cut -f1)"
id=$(dk plugin inspect -f '{{.Id}}' "$name")
echo "$id" >>"$D/managed-ids"
e2e_created_entry "$E2E_PLUGINS_DIR/$id"
pm=$D/root/plugins/$id/propagated-mount
log "plugin id $id"
run_ok "docker plugin enable" dk plugin enable "$name" >/dev/null
assert_eq true "$(dk plugin inspect -f '{{.Enabled}}' "$name")" "the plugin is enabled"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

# --- dockerd with the managed plugin as its graphdriver
e2e_start_dockerd "$name"
assert_contains "$(dk info 2>&1)" "Storage Driver: $name" "docker info names $name"
[ -d "$pm/ploop:latest" ] || fail "Init did not create Home <pm>/ploop:latest ($pm/ploop:latest)"
log "ok: Home = /var/lib/ploop/ploop:latest (on the host: $pm/ploop:latest)"
[ -e "$pm/.ploop-state.json" ] || fail "no persisted state $pm/.ploop-state.json"
log "ok: Init persisted in /var/lib/ploop/.ploop-state.json"
grep -q " $pm " /proc/self/mountinfo || fail "propagated-mount is not mounted on the host"

want=$(e2e_import_busybox)
assert_eq "$want" "$(dk image inspect -f '{{.Size}}' busybox:local)" "image size through the managed plugin"
run_ok "run --rm true" dk run --rm --network none busybox:local true
run_ok "run m1" dk run -d --name m1 --network none busybox:local \
	sh -c 'echo hi >/hi; trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
cid=$(dk inspect -f '{{.Id}}' m1)
root=$(grep -o '"root":{"path":"[^"]*"' "$D/ctrd/state/io.containerd.runtime.v2.task/moby/$cid/config.json" |
	sed 's/.*"path":"//; s/"$//')
log "m1 OCI root.path: $root"
case $root in "$pm/ploop:latest/"*) ;; *) fail "m1's root $root is not under $pm/ploop:latest/" ;; esac
log "ok: the container root is under <data-root>/plugins/<id>/propagated-mount/"
grep -q " $root " /proc/self/mountinfo || fail "m1's root $root is not a mount point on the host"
log "ok: m1's root is mounted on the host (propagated)"
out=$(dk exec m1 cat /hi)
assert_eq hi "$out" "exec in m1"
assert_diff "A /hi" "$(dk diff m1)" "docker diff m1"
run_ok "commit m1" dk commit m1 img:m1 >/dev/null
out=$(dk run --rm --network none img:m1 cat /hi)
assert_eq hi "$out" "the committed image runs"
run_ok "rm -f m1" dk rm -f m1 >/dev/null
run_ok "rmi img:m1" dk rmi img:m1 >/dev/null

# --- dockerd stop: the plugin handles SIGTERM (no forced shutdown)
mark=$(log_mark "$D/dockerd.log")
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
stoplog=$(log_since "$D/dockerd.log" "$mark")
assert_not_contains "$stoplog" "Force shutdown plugin" "dockerd did not have to force the plugin down"
assert_eq "" "$(mounts_under "$pm")" "no mounts left under propagated-mount after the stop"

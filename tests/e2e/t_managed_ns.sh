#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The managed plugin's runtime environment, checked with a stand-in binary
# (stub-plugin.c) in place of ploop-graphdriver and the repository's config.json:
#
# 1. config.json as shipped: /dev/fuse opens, and the loop device that
#    LOOP_CTL_GET_FREE names opens too (the host /dev bind mount: a private /dev
#    would not have it). When the plugin process dies, its child (standing for a
#    per-image server) dies with it, and dockerd starts the plugin again.
# 2. the same with "pidhost": true: the child dies all the same (containerd's shim
#    kills every process of the container when its init exits and the container
#    has no PID namespace of its own), so pidhost buys nothing; config.json keeps
#    its own PID namespace.
# 3. without the /dev bind mount: the free loop device is missing in the plugin's
#    /dev, which is why config.json has the bind mount.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
E2E_DRIVER=vfs
command -v gcc >/dev/null || fail "gcc is needed to build the stub plugin (make deps installs build-essential)"
e2e_setup

gcc -static -O2 -Wall -Wextra -o "$D/stub" "$E2E_LIB_DIR/stub-plugin.c" || fail "cannot build stub-plugin.c"
e2e_start_dockerd vfs

# make_bundle NAME SED-SCRIPT: config.json transformed by SED-SCRIPT + the stub.
make_bundle() {
	local b=$D/bundle-$1 r
	r=$b/rootfs
	mkdir -p "$r/usr/bin" "$r/run/docker/plugins" "$r/var/lib/ploop" "$r/dev" "$r/proc" "$r/sys" "$r/tmp"
	cp "$D/stub" "$r/usr/bin/ploop-graphdriver"
	sed "$2" "$E2E_REPO/config.json" >"$b/config.json"
	echo "$b"
}

# main_and_child ID: the plugin's main process (its parent is outside the plugin's
# cgroup) and its other processes.
main_and_child() {
	local pids p pp main="" rest=""
	pids=$(plugin_cgroup_pids "$1")
	for p in $pids; do
		pp=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
		if grep -qxF "$pp" <<<"$pids"; then rest+="$p "; else main=$p; fi
	done
	echo "$main $rest"
}

# run_variant NAME SED-SCRIPT: create + enable; prints the stub's findings, then
# kills the main process and reports whether the child survived.
run_variant() {
	local name=$1 b id pm n m main child
	b=$(make_bundle "$name" "$2")
	dk plugin create "$name" "$b" >/dev/null || fail "plugin create $name"
	id=$(dk plugin inspect -f '{{.Id}}' "$name:latest")
	echo "$id" >>"$D/managed-ids"
	e2e_created_entry "$E2E_PLUGINS_DIR/$id"
	dk plugin enable "$name" >/dev/null || fail "plugin enable $name"
	pm=$D/root/plugins/$id/propagated-mount
	for ((n = 0; n < 100; n++)); do
		[ -s "$pm/stub.txt" ] && break
		sleep 0.1
	done
	[ -s "$pm/stub.txt" ] || fail "$name: the stub wrote no stub.txt"
	cp "$pm/stub.txt" "$D/$name.txt"
	read -r main child < <(main_and_child "$id")
	if [ -z "$main" ] || [ -z "$child" ]; then fail "$name: cannot find the plugin's processes"; fi
	rm -f "$pm/stub.txt"
	kill -KILL "$main"
	for ((n = 0; n < 50; n++)); do
		pid_alive "$child" || break
		sleep 0.1
	done
	if pid_alive "$child"; then echo "child survived" >>"$D/$name.txt"; else echo "child died" >>"$D/$name.txt"; fi
	# dockerd starts the plugin again (no Init for a graphdriver; here: a new stub.txt)
	for ((n = 0; n < 150; n++)); do
		[ -s "$pm/stub.txt" ] && break
		sleep 0.1
	done
	if [ -s "$pm/stub.txt" ]; then echo "restarted" >>"$D/$name.txt"; fi
	dk plugin disable -f "$name" >/dev/null || true
	dk plugin rm -f "$name" >/dev/null || true
	log "$name: $(tr '\n' ';' <"$D/$name.txt")"
}

run_variant shipped ''
r=$(cat "$D/shipped.txt")
assert_contains "$r" "fuse ok" "shipped config: /dev/fuse opens"
assert_contains "$r" "loop-control ok" "shipped config: /dev/loop-control opens"
assert_match "$r" 'loop /dev/loop[0-9]+ ok' "shipped config: the free loop device opens"
assert_contains "$r" "child died" "shipped config: the plugin's children die with it"
assert_contains "$r" "restarted" "shipped config: dockerd restarts the plugin"

run_variant pidhost 's/"pidhost": false/"pidhost": true/'
grep -q '"pidhost": true' "$D/bundle-pidhost/config.json" || fail "the pidhost variant did not set pidhost"
r=$(cat "$D/pidhost.txt")
assert_contains "$r" "child died" "pidhost: the children die with the plugin all the same"

run_variant nodev '/"mounts": \[/,/^  \],/c\  "mounts": [],'
grep -q '"mounts": \[\],' "$D/bundle-nodev/config.json" || fail "the nodev variant still has mounts"
r=$(cat "$D/nodev.txt")
assert_match "$r" 'loop /dev/loop[0-9]+ No such file or directory' \
	"without the /dev bind mount the free loop device is missing"

e2e_stop_dockerd || fail "dockerd needed SIGKILL"

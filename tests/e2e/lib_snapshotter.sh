# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/e2e/lib_snapshotter.sh: the containerd face. Sourced after lib.sh: starts
# ploop-snapshotter for the current instance $D, a private containerd with it as the
# proxy snapshotter "ploop", and builds multi-layer docker-archive images for
# `ctr images import`. lib.sh's teardown stops and cleans up all of it.

# ctr ARGS...: ctr against the current instance's containerd, in a namespace of this
# instance (runc keeps its state per namespace and ID under /run/containerd/runc/).
ctr_() { timeout "$E2E_TIMEOUT" ctr --address "$D/ctrd/containerd.sock" -n "$(e2e_ctr_ns)" "$@"; }
e2e_ctr_ns() { basename "$D" | tr . -; }

# e2e_start_snapshotter [OPTIONS...]: start our copy of ploop-snapshotter on
# $D/snap.sock with root $D/snap (both kept across restarts of the instance).
e2e_start_snapshotter() {
	local pid n
	[ -x "$BUILD/ploop-snapshotter" ] || fail "no $BUILD/ploop-snapshotter: build it first (make)"
	if [ ! -x "$D/bin/ploop-snapshotter" ]; then
		mkdir -p "$D/bin"
		cp "$BUILD/ploop-snapshotter" "$D/bin/"
		[ ! -x "$BUILD/ploop-graphdriver-serve-image" ] || cp "$BUILD/ploop-graphdriver-serve-image" "$D/bin/"
	fi
	echo "----- snapshotter start $(date +%T.%3N)" >>"$D/snapshotter.log"
	setsid "$D/bin/ploop-snapshotter" --socket "$D/snap.sock" --root "$D/snap" \
		--log-level debug "$@" >>"$D/snapshotter.log" 2>&1 </dev/null 9>&- &
	pid=$!
	echo "$pid" >"$D/snapshotter.pid"
	for ((n = 0; n < 300; n++)); do
		if grep -q "serving containerd snapshots" <(log_since "$D/snapshotter.log" 0 | tail -n 3); then
			log "snapshotter $pid serves $D/snap.sock"
			return 0
		fi
		pid_alive "$pid" || break
		sleep 0.1
	done
	tail -30 "$D/snapshotter.log" >&2
	fail "ploop-snapshotter did not start"
}

e2e_snapshotter_pid() { cat "$D/snapshotter.pid"; }

# e2e_stop_snapshotter: SIGTERM and wait; it must exit by itself.
e2e_stop_snapshotter() {
	local pid
	pid=$(cat "$D/snapshotter.pid" 2>/dev/null || true)
	pid_alive "$pid" || return 0
	stop_pid "$pid" 30 ploop-snapshotter || fail "ploop-snapshotter ignored SIGTERM for 30 s"
}

# e2e_start_containerd_ploop: the instance's containerd with the proxy snapshotter.
e2e_start_containerd_ploop() {
	E2E_CTRD_EXTRA=$(printf '[proxy_plugins.ploop]\n  type = "snapshot"\n  address = "%s"\n' "$D/snap.sock")
	e2e_start_containerd
	for ((n = 0; n < 100; n++)); do
		ctr_ plugins ls 2>/dev/null | grep -Eq 'snapshotter\.v1 +ploop +- +ok' && return 0
		sleep 0.1
	done
	ctr_ plugins ls >&2
	fail "containerd does not show the ploop snapshotter"
}

# e2e_docker_archive OUT TAG DIR...: a docker-archive (docker save format) at OUT
# tagged TAG, one layer per directory DIR (a plain tar of it, whiteouts as they are).
e2e_docker_archive() {
	local out=$1 tag=$2 w i d sum diffs="" layers=""
	shift 2
	w=$(mktemp -d "$D/archive.XXXX")
	i=0
	for d in "$@"; do
		tar -C "$d" --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
			-cf "$w/layer$i.tar" .
		sum=$(sha256sum "$w/layer$i.tar" | cut -d' ' -f1)
		diffs="$diffs${diffs:+,}\"sha256:$sum\""
		layers="$layers${layers:+,}\"layer$i.tar\""
		i=$((i + 1))
	done
	printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
		"$diffs" >"$w/config.json"
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":[%s]}]' "$tag" "$layers" >"$w/manifest.json"
	tar -C "$w" -cf "$out" .
	rm -rf "$w"
}

# e2e_layers_image OUT TAG: three layers over busybox: layer 0 busybox and /data/{a,
# dir/x}; layer 1 deletes /data/a (whiteout), makes /data/dir opaque with only y, adds
# /data/b; layer 2 adds /data/c. A container must see b, c, dir/y and nothing else.
e2e_layers_image() {
	local w
	w=$(mktemp -d "$D/layers.XXXX")
	mkdir -p "$w/0/data/dir" "$w/1/data/dir" "$w/2/data"
	e2e_busybox_tree "$w/0"
	echo a >"$w/0/data/a"
	echo x >"$w/0/data/dir/x"
	: >"$w/1/data/.wh.a"
	: >"$w/1/data/dir/.wh..wh..opq"
	echo y >"$w/1/data/dir/y"
	echo b >"$w/1/data/b"
	echo c >"$w/2/data/c"
	e2e_docker_archive "$1" "$2" "$w/0" "$w/1" "$w/2"
	rm -rf "$w"
}

# e2e_wait_ctrd_reconnect: after a restart of the snapshotter, containerd's gRPC client
# redials with backoff (grpc-go: from 1 s, growing): poll until a call reaches us.
e2e_wait_ctrd_reconnect() {
	local n
	for ((n = 0; n < 600; n++)); do
		ctr_ snapshots --snapshotter ploop ls >/dev/null 2>&1 && {
			log "containerd reached the snapshotter again after $((n / 10)).$((n % 10)) s"
			return 0
		}
		sleep 0.1
	done
	fail "containerd did not reconnect to the snapshotter"
}

# e2e_wait_snapshots_gone: Remove answers before the layer is unmounted and deleted
# (in the background): wait until no layer is left under the snapshotter's store.
e2e_wait_snapshots_gone() {
	local n
	for ((n = 0; n < 600; n++)); do
		[ -z "$(ls -A "$D/snap/store/layers" 2>/dev/null)" ] && [ -z "$(mounts_under "$D/snap")" ] && return 0
		sleep 0.1
	done
	log "layers left: $(ls "$D/snap/store/layers" | tr '\n' ' ')"
}

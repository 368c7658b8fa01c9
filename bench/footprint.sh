#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/footprint.sh: how many ploop clusters a container's two layers dirty, by
# cluster size and mkfs.ext4 options, without Docker or the plugin.
#
# A ploop child layer starts as an empty top delta; every cluster the filesystem
# writes while that layer is mounted is copied up whole. So the disk cost of a
# container is (for each of its two layers, -init and the container layer):
#     header clusters of the new delta (BAT, written in full today) +
#     clusters written while mounted x cluster size.
# This script replays what dockerd does to those layers on ext4 in a plain sparse
# file on a loop device, and counts the clusters that changed (cmp of before/after):
#   image  : a base filesystem with the busybox tree (the image layer);
#   -init  : mount, dockerd's init layer entries (daemon/initlayer: /dev/pts, /dev/shm,
#            /proc, /sys, /.dockerenv, /etc/{resolv.conf,hosts,hostname}, /dev/console,
#            /etc/mtab -> /proc/mounts), unmount;
#   layer  : mount and unmount twice (Get/Put at create, then at start), nothing written.
# Variants: the plugin's mkfs options (engine.c: -m 0 -E lazy_itable_init=1,
# lazy_journal_init=1,nodiscard; mount noinit_itable, loop with direct I/O) and
# alternatives. Usage: bench/footprint.sh [SIZE] (default 10G, the plugin's default).
set -euo pipefail

SIZE=${1:-10G}
CLUSTERS="32 64 256 1024"  # KiB
BASE_E="lazy_itable_init=1,lazy_journal_init=1,nodiscard"
T=$(mktemp -d /var/tmp/pgd-footprint.XXXX)
LOOP=""

cleanup() {
	set +e
	mountpoint -q "$T/mnt" && umount "$T/mnt"
	[ -z "$LOOP" ] || losetup -d "$LOOP" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

mnt() {
	LOOP=$(losetup -f --show --direct-io=on "$1")
	mount -o "${2:-noinit_itable}" "$LOOP" "$T/mnt"
}
umnt() {
	umount "$T/mnt"
	losetup -d "$LOOP"
	LOOP=""
}

# changed BEFORE AFTER: for each cluster size, the number of clusters that differ.
changed() {
	cmp -l "$1" "$2" 2>/dev/null | awk -v cl="$CLUSTERS" '
		BEGIN {n = split(cl, c, " ")}
		{for (i = 1; i <= n; i++) seen[i, int(($1 - 1) / (c[i] * 1024))] = 1}
		END {for (k in seen) {split(k, p, SUBSEP); cnt[p[1]]++}
		     for (i = 1; i <= n; i++) printf "%d ", cnt[i] + 0; print ""}'
}

# header_kib CLUSTER_KIB: size of a fresh delta's header clusters for SIZE.
header_kib() {
	local bytes entries
	bytes=$(numfmt --from=iec "$SIZE")
	entries=$(((bytes + $1 * 1024 - 1) / ($1 * 1024)))
	echo $((((64 + 4 * entries + $1 * 1024 - 1) / ($1 * 1024)) * $1))
}

variant() {
	local name=$1 mkfs_opts=$2 mount_opts=$3 img=$T/img
	rm -f "$img"
	truncate -s "$SIZE" "$img"
	# shellcheck disable=SC2086 # options, split on purpose
	mkfs.ext4 -q -F -m 0 -E "$BASE_E" $mkfs_opts "$img"
	mkdir -p "$T/mnt"
	# the image layer: busybox and its applet links
	mnt "$img" "$mount_opts"
	mkdir -p "$T/mnt/bin" "$T/mnt/etc" "$T/mnt/root" "$T/mnt/tmp"
	cp /bin/busybox "$T/mnt/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -s busybox "$T/mnt/bin/$a"
	done
	umnt
	cp --sparse=always "$img" "$T/before"
	# the -init layer
	mnt "$img" "$mount_opts"
	mkdir -p "$T/mnt/dev/pts" "$T/mnt/dev/shm" "$T/mnt/proc" "$T/mnt/sys" "$T/mnt/etc"
	: >"$T/mnt/.dockerenv"
	: >"$T/mnt/etc/resolv.conf"
	: >"$T/mnt/etc/hosts"
	: >"$T/mnt/etc/hostname"
	: >"$T/mnt/dev/console"
	ln -s /proc/mounts "$T/mnt/etc/mtab"
	umnt
	read -r -a init < <(changed "$T/before" "$img")
	cp --sparse=always "$img" "$T/before"
	# the container layer: Get/Put at create, Get/Put at start (nothing written)
	mnt "$img" "$mount_opts"
	umnt
	mnt "$img" "$mount_opts"
	umnt
	read -r -a layer < <(changed "$T/before" "$img")
	local i c out=""
	i=0
	for c in $CLUSTERS; do
		local h data
		h=$(header_kib "$c")
		data=$(((init[i] + layer[i]) * c))
		out="$out$(printf ' | %4d+%-3d %5d / %5d' "${init[i]}" "${layer[i]}" "$data" $((data + 2 * h)))"
		i=$((i + 1))
	done
	printf '%-44s%s |\n' "$name" "$out"
	rm -f "$T/before" "$img"
}

printf '%s, %s virtual size. Per cluster size: clusters dirtied by -init + container layer, then KiB of data / KiB with the two delta headers written in full\n' \
	"$(uname -r)" "$SIZE"
printf '%-44s' "variant (mkfs.ext4 -m 0 -E lazy...; mount)"
for c in $CLUSTERS; do printf ' | %-22s' "${c} KiB clusters"; done
echo ' |'
printf '%-44s' "delta header clusters (KiB, each delta)"
for c in $CLUSTERS; do printf ' | %22s' "$(header_kib "$c")"; done
echo ' |'
variant "plugin today (flex_bg 16; noinit_itable)" "" noinit_itable
variant "-G 256 (one flex group)" "-G 256" noinit_itable
variant "-O ^has_journal" "-O ^has_journal" noinit_itable
variant "-G 256 -O ^has_journal" "-G 256 -O ^has_journal" noinit_itable
variant "-G 256 -J size=4" "-G 256 -J size=4" noinit_itable
variant "plugin today; mount noinit_itable,nodelalloc" "" noinit_itable,nodelalloc

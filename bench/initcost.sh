#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/initcost.sh [SIZE [MKFS_EXTRA...]]: what `docker create` costs on disk, by hand,
# without Docker: the ploop CLI replays it on the user engine and bench/clustermap.py
# says what every cluster of the two new deltas holds.
#   image : a base image (the template: mkfs, lost+found removed) with the busybox tree;
#   -init : a clone, mounted once: dockerd's init-layer entries written, unmounted;
#   layer : a clone of -init, mounted and unmounted (Get/Put of SetupWorkingDirectory);
#   run   : a clone of -init, mounted, busybox read (a container that starts), unmounted.
# MKFS_EXTRA: options added to the plugin's own mkfs.ext4 command line (through a
# wrapper first in PATH), to try layouts. MOUNT_OPTS (env): extra ext4 mount options.
# BUILD (env): the build directory (default build/).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${BUILD:-$HERE/../build}
SIZE=${1:-10G}
shift || true
B=$BUILD/ploop-graphdriver
T=$(mktemp -d /var/tmp/pgd-initcost.XXXX)
M=$T/m

cleanup() {
	set +e
	mountpoint -q "$M" && for i in base init layer run; do "$B" umount "$T/$i" "$M" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/bin" "$M"
{
	echo '#!/bin/sh'
	printf 'exec /sbin/mkfs.ext4 "$@" %s\n' "$*"
} >"$T/bin/mkfs.ext4"
chmod +x "$T/bin/mkfs.ext4"
export PATH=$T/bin:$PATH
declare -A OWN=()
# own LAYER: KiB of the layer's own files (before a clone hard-links its delta)
own() { OWN[$1]=$(find "$T/$1" -type f -links 1 -exec du -ck {} + | awk 'END {print $1}'); }
O=()
[ -z "${MOUNT_OPTS:-}" ] || O=(-o "$MOUNT_OPTS")

"$B" create "$T/base" "$SIZE" >/dev/null
"$B" mount "${O[@]}" "$T/base" "$M"
rmdir "$M/lost+found"
mkdir -p "$M/bin" "$M/etc" "$M/root" "$M/tmp"
cp /bin/busybox "$M/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -s busybox "$M/bin/$a"
done
"$B" umount "$T/base" "$M"

"$B" clone "$T/base" "$T/init" >/dev/null
"$B" mount "${O[@]}" "$T/init" "$M"
mkdir -p "$M/dev/pts" "$M/dev/shm" "$M/proc" "$M/sys" "$M/etc"
: >"$M/.dockerenv"
: >"$M/etc/resolv.conf"
: >"$M/etc/hosts"
: >"$M/etc/hostname"
: >"$M/dev/console"
ln -s /proc/mounts "$M/etc/mtab"
"$B" umount "$T/init" "$M"
own init

"$B" clone "$T/init" "$T/layer" >/dev/null
"$B" mount "${O[@]}" "$T/layer" "$M"
"$B" umount "$T/layer" "$M"
own layer
"$B" clone "$T/init" "$T/run" >/dev/null
"$B" mount "${O[@]}" "$T/run" "$M"
cat "$M/bin/busybox" "$M/etc/hosts" >/dev/null
"$B" umount "$T/run" "$M"
own run

for i in init layer run; do
	"$B" check "$T/$i" >/dev/null
	echo "== $i: ${OWN[$i]} KiB of its own files"
	python3 "$HERE/clustermap.py" "$T/$i" | if [ -n "${VERBOSE:-}" ]; then cat; else grep -v "^    block"; fi || true
done

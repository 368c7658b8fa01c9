#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tools/make-plugin.sh BUILD: assemble the managed (v2) plugin directory
#     $PLUGIN_OUT (default BUILD/plugin-bundle) = config.json + rootfs/
# rootfs holds the binary, the helper programs the engine execs, their shared
# libraries and the loader, the config files they read, and the empty mount points
# the plugin needs, in Debian's merged-/usr layout. Nothing else.
# (Not BUILD/plugin/: the Makefile keeps the objects of plugin/*.c there.)
#
# With DOCKER_HOST set (e.g. unix:///var/tmp/d/docker.sock), it then runs
#     docker plugin create $PLUGIN_NAME (default ploop) <dir>
# Environment: PLUGIN_OUT, PLUGIN_NAME, DOCKER (client, default docker).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
bin=$build/ploop-graphdriver
out=${PLUGIN_OUT:-$build/plugin-bundle}
name=${PLUGIN_NAME:-ploop}
R=$out/rootfs

die() {
	echo "make-plugin: $*" >&2
	exit 1
}
[ -x "$bin" ] || die "no $bin: run make first"
[ -f "$top/config.json" ] || die "no $top/config.json"

# Helper programs: what the engine and layer store exec (the string literal that
# starts an argv[] initializer or an exec*p() call in driver/ and plugin/), plus the ext4 tools
# the user engine needs on any path (mkfs, grow, check) and fusermount3, which
# libfuse falls back to when it cannot mount /dev/fuse directly.
BASE_HELPERS="mke2fs mkfs.ext4 resize2fs e2fsck fusermount3"
helpers() {
	tr ' ' '\n' <<<"$BASE_HELPERS"
	cat "$top"/driver/*.c "$top"/driver/*/*.c "$top"/plugin/*.c 2>/dev/null |
		grep -oE '(argv[A-Za-z0-9_]*\[[^]]*\] *= *\{ *|exec[lv]p? *\( *)(\( *(const )?char *\* *\) *)?"[a-z0-9][a-z0-9._+-]*"' |
		grep -oE '"[^"]+"$' | tr -d '"'
}

# copy_file SRC: copy SRC to the same path under $R (resolving symlinks in SRC).
copy_file() {
	local src=$1 dst
	dst=$R$src
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L --preserve=mode "$src" "$dst"
}

# copy_libs FILE: the shared libraries and loader FILE needs.
copy_libs() {
	local l
	for l in $(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		copy_file "$l"
	done
}

# Lay out the merged-/usr skeleton first: /lib, /lib64, /bin and /sbin are
# symlinks, so every copy below lands under usr/.
rm -rf "$out"
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib" "$R/usr/lib64" "$R/etc" \
	"$R/run/docker/plugins" "$R/var/lib/ploop" "$R/var/lock" "$R/run/lock" \
	"$R/dev" "$R/proc" "$R/sys" "$R/tmp"
chmod 1777 "$R/tmp"
ln -s usr/bin "$R/bin"
ln -s usr/sbin "$R/sbin"
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"
ln -s ../proc/self/mounts "$R/etc/mtab"

install -m 0755 "$bin" "$R/usr/bin/ploop-graphdriver"
if command -v strip >/dev/null; then strip --strip-unneeded "$R/usr/bin/ploop-graphdriver"; fi
copy_libs "$bin"
# the lean image server (libfuse3 and libc only) beside it, when built
if [ -x "$build/ploop-graphdriver-serve-image" ]; then
	install -m 0755 "$build/ploop-graphdriver-serve-image" "$R/usr/bin/"
	if command -v strip >/dev/null; then strip --strip-unneeded "$R/usr/bin/ploop-graphdriver-serve-image"; fi
	copy_libs "$build/ploop-graphdriver-serve-image"
fi

for h in $(helpers | sort -u); do
	p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$h" 2>/dev/null || true)
	case $p in
	/*) ;;
	*)
		# a literal that names no program (e.g. our own "serve-image" sub-mode)
		case " $BASE_HELPERS " in *" $h "*)
			echo "make-plugin: warning: helper $h not found on this host; not in the plugin" >&2 ;;
		esac
		continue
		;;
	esac
	# keep symlinks between helpers (mkfs.ext4 -> mke2fs) as symlinks
	dst=$R/usr/$(basename "$(dirname "$p")")/$h
	if [ -L "$p" ] && [ "$(dirname "$(readlink "$p")")" = . ]; then
		target=$(readlink "$p")
		ln -sf "$target" "$dst"
		p=$(dirname "$p")/$target
		dst=$(dirname "$dst")/$target
	fi
	[ -e "$dst" ] || install -m 0755 "$(readlink -f "$p")" "$dst"
	copy_libs "$p"
done

# config files the helpers read
[ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf "$R/etc/mke2fs.conf"

install -m 0644 "$top/config.json" "$out/config.json"
echo "make-plugin: $out ($(du -sh "$R" | cut -f1) rootfs, $(find "$R" -type f | wc -l) files)"

if [ -n "${DOCKER_HOST:-}" ]; then
	"${DOCKER:-docker}" plugin create "$name" "$out"
	echo "make-plugin: created plugin $name from $out (enable it with: docker plugin enable $name)"
fi

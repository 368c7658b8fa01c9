#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/engine.sh [BUILD]: `make bench-engine`. The user engine alone, without dockerd,
# through the image sub-commands of ploop-graphdriver (create, clone, mount, umount):
#   1. sequential write of 512 MiB (dd bs=1M conv=fsync) on a fresh ext4, then a cold
#      read of it (umount, drop_caches, mount), on three setups:
#        plain   ext4 on a loop device with direct I/O over a sparse file of the same
#                size: the limit;
#        engine  ext4 on our engine: a clone of a freshly created base (2 deltas), the
#                shape of a container layer;
#        qsd     ext4 on a loop device over qemu-storage-daemon's FUSE export of the same
#                kind of 2-delta chain (its parallels driver; PLOOP.md §6.3a), skipped
#                with a message when qemu-storage-daemon is missing;
#   2. mount + umount latency of the sub-commands (and of losetup + mount as reference);
#   3. cold sequential read of 500 MiB through a 125-delta chain vs 1 delta, with the
#      file's data spread over all levels (4 MiB written in each) and all in the base.
# A round runs every setup once, in an order that rotates from round to round, so the
# noise of this VM hits all setups alike. Prints medians, ratios and a PASS/MISS per
# target; writes bench/results/engine.{csv,txt}. It never fails on a target; it fails
# (and leaves bench/results alone) when a step fails.
#
# Method: wall-clock time (bash EPOCHREALTIME) of each dd, mount or umount command.
# Everything lives in one work directory under /var/tmp (a disk, not tmpfs): images,
# the engine's run directories (--run-dir), mount points. The EXIT trap unmounts,
# stops servers, detaches loop devices and removes it, also after Ctrl-C.
#
# Environment:
#   BENCH_ENGINE_RUNS    throughput runs per setup (default 5)
#   BENCH_ENGINE_DEEP_RUNS  reads per setup through the deep chain (default 10: they
#                        are cheap, and 5 left medians ±15% apart on this VM)
#   BENCH_ENGINE_CYCLES  mount + umount cycles per setup (default 20)
#   BENCH_ENGINE_DEPTH   deltas of the deep chain (default 125; the limit is 127)
#   BENCH_ENGINE_CLUSTER cluster size of every image (default: create's, the plugin's)
#   BENCH_ENGINE_TMP     parent of the work directory (default /var/tmp)
#   BENCH_OUT            results directory (default bench/results)
#   BENCH_COMMIT         the commit BUILD was made from, for the report (default: this
#                        repository's HEAD at start, marked when BUILD is its build/ and
#                        driver/ or plugin/ have uncommitted changes)
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME with a dot

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${BUILD:-$BENCH_DIR/../build}}
BUILD=$(cd "$BUILD" && pwd)
B=$BUILD/ploop-graphdriver
RUNS=${BENCH_ENGINE_RUNS:-5}
DEEP_RUNS=${BENCH_ENGINE_DEEP_RUNS:-10}
CYCLES=${BENCH_ENGINE_CYCLES:-20}
DEPTH=${BENCH_ENGINE_DEPTH:-125}
CLUSTER=${BENCH_ENGINE_CLUSTER:-}
TMP_PARENT=${BENCH_ENGINE_TMP:-/var/tmp}
OUT=${BENCH_OUT:-$BENCH_DIR/results}
LOCK=/run/lock/pgd-e2e.lock
SIZE=2G           # virtual size of every image and of the plain file
IO_MIB=512        # the sequential write and read
SLICE_MIB=4       # what each level of the deep chain writes
DEEP_MIB=$((DEPTH * SLICE_MIB))
# The engine's own mkfs and mount options (driver/engine/engine.c), for the plain loop file
MKFS_E=lazy_itable_init=1,lazy_journal_init=1,nodiscard
MOUNT_O=noatime,noinit_itable

W=""                  # the work directory
MNT=""                # the mount point of every setup
SAMPLES=""
declare -A ENG=()     # image dir -> its mount target, while it may be mounted
QSD_PID=""
QSD=""                # qemu-storage-daemon, if present

log() { printf '[%s engine] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}

# ---------------------------------------------------------------------------
# teardown

mounts_under() { awk -v d="$1/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r; }

cleanup() {
	local rc=$? img m p pid dev file
	set +e
	trap - INT TERM HUP
	[ -n "$W" ] && [ -d "$W" ] || exit "$rc"
	# engine images: the umount sub-command takes down ext4, loop, FUSE and server in order
	for img in "${!ENG[@]}"; do
		"$B" umount --run-dir "$W/run/${img##*/}" "$img" "${ENG[$img]}" ||
			log "warning: umount $img failed"
	done
	# whatever is left: ext4 first, then loop devices, qemu-storage-daemon, FUSE mounts
	for m in $(mounts_under "$W"); do
		awk -v m="$m" '$5 == m && / - fuse/ {f = 1} END {exit !f}' /proc/self/mountinfo ||
			umount "$m" 2>/dev/null || umount -l "$m"
	done
	losetup -n -l -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
		[[ $file != "$W"/* ]] || losetup -d "$dev"
	done
	[ -z "$QSD_PID" ] || stop_pid "$QSD_PID"
	for p in "$W"/run/*/server.pid; do
		[ -f "$p" ] || continue
		read -r pid _ <"$p"
		grep -qs serve-image "/proc/$pid/cmdline" && stop_pid "$pid"
	done
	for m in $(mounts_under "$W"); do umount "$m" 2>/dev/null || umount -l "$m"; done
	if [ -n "$(mounts_under "$W")" ]; then
		log "warning: still mounted under $W, not removed: $(mounts_under "$W" | tr '\n' ' ')"
	else
		rm -rf "$W"
	fi
	exit "$rc"
}

# stop_pid PID: TERM, then KILL after 10 s.
stop_pid() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 200; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -9 "$1" 2>/dev/null
}

# ---------------------------------------------------------------------------
# samples

# record FIGURE SETUP ROUND VALUE
record() { echo "$1,$2,$3,$4" >>"$SAMPLES"; }

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# mibs MIB MICROSECONDS: MiB/s
mibs() { awk -v m="$1" -v u="$2" 'BEGIN {printf "%.1f", m * 1e6 / u}'; }
# ms MICROSECONDS
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }

# write_file SETUP ROUND: the timed 512 MiB write into $MNT/f.
write_file() {
	local t0 t1
	t0=${EPOCHREALTIME/./}
	dd if=/dev/zero of="$MNT/f" bs=1M count="$IO_MIB" conv=fsync status=none
	t1=${EPOCHREALTIME/./}
	record write "$1" "$2" "$(mibs "$IO_MIB" $((t1 - t0)))"
}

# read_file FIGURE SETUP ROUND MIB: the timed read of $MNT/f.
read_file() {
	local t0 t1
	t0=${EPOCHREALTIME/./}
	dd if="$MNT/f" of=/dev/null bs=1M status=none
	t1=${EPOCHREALTIME/./}
	record "$1" "$2" "$3" "$(mibs "$4" $((t1 - t0)))"
}

# ---------------------------------------------------------------------------
# our engine, through the sub-commands; every image has its run directory in $W/run

# image dirs are $W/<name>: the run directory is named after the image
new_image() {
	"$B" create --run-dir "$W/run/${1##*/}" ${CLUSTER:+--cluster "$CLUSTER"} "$1" "$SIZE" >/dev/null
}
clone() { "$B" clone "$1" "$2" >/dev/null; }
emount() {
	local img=${*: -1:1}
	ENG[$img]=$MNT
	"$B" mount --run-dir "$W/run/${img##*/}" "$@" "$MNT"
}
eumount() {
	"$B" umount --run-dir "$W/run/${1##*/}" "$1" "$MNT"
	unset "ENG[$1]"
}

# server_stats WHAT IMAGE: log the I/O counters the image's last server left in its log
server_stats() {
	local line
	line=$(grep -h ' I/Os' "$W/run/${2##*/}/server.log" 2>/dev/null | tail -1)
	log "$1: ${line#*DiskDescriptor.xml: }"
}

# ---------------------------------------------------------------------------
# qemu-storage-daemon: the same chain through QEMU's parallels driver and FUSE export

# QMP on a Unix socket with perl (perl-base is essential in Debian): each argument is
# one command; the first error fails.
qmp() {
	perl -MIO::Socket::UNIX -e '
		my $s = IO::Socket::UNIX->new(Peer => shift) or die "qmp: connect: $!\n";
		<$s>;
		for my $c (q({"execute":"qmp_capabilities"}), @ARGV) {
			print $s "$c\n";
			while (my $l = <$s>) {
				next if $l =~ /"event"/;
				die "qmp: $c: $l" if $l =~ /"error"/;
				last if $l =~ /"return"/;
			}
		}' "$W/qsd.sock" "$@"
}

# qsd_start IMAGE: serve IMAGE's delta chain (DiskDescriptor.xml order, base first;
# lower levels read-only) as the file $W/qsd-disk. No backing option exists for
# parallels: the chain is made with blockdev-snapshot (PLOOP.md §6.3a).
qsd_start() {
	local img=$1 i=0 f
	local -a args=(--chardev "socket,id=mon,path=$W/qsd.sock,server=on,wait=off"
		--monitor chardev=mon --pidfile "$W/qsd.pid" --daemonize) files=() cmds=()
	mapfile -t files < <(sed -n 's|.*<File>\(.*\)</File>.*|\1|p' "$img/DiskDescriptor.xml")
	for f in "${files[@]}"; do
		local ro=on
		[ $((i + 1)) -lt "${#files[@]}" ] || ro=off
		args+=(--blockdev "driver=file,node-name=f$i,filename=$img/$f,read-only=$ro"
			--blockdev "driver=parallels,node-name=l$i,file=f$i,read-only=$ro")
		[ "$i" -eq 0 ] || cmds+=("{\"execute\":\"blockdev-snapshot\",\"arguments\":{\"node\":\"l$((i - 1))\",\"overlay\":\"l$i\"}}")
		i=$((i + 1))
	done
	cmds+=("{\"execute\":\"block-export-add\",\"arguments\":{\"type\":\"fuse\",\"id\":\"e\",\"node-name\":\"l$((i - 1))\",\"mountpoint\":\"$W/qsd-disk\",\"writable\":true}}")
	: >"$W/qsd-disk"
	"$QSD" "${args[@]}" >"$W/qsd.log" 2>&1 || fail "qemu-storage-daemon: $(cat "$W/qsd.log")"
	read -r QSD_PID <"$W/qsd.pid"
	qmp "${cmds[@]}"
}

qsd_stop() {
	qmp '{"execute":"quit"}' || true
	stop_pid "$QSD_PID"
	QSD_PID=""
	rm -f "$W/qsd.pid" "$W/qsd.sock"
}

# ---------------------------------------------------------------------------
# 1. throughput: one run of each setup on a fresh filesystem

run_plain() {
	local r=$1 dev
	truncate -s "$SIZE" "$W/plain.img"
	dev=$(losetup -f --show --direct-io=on "$W/plain.img")
	mkfs.ext4 -q -F -m 0 -E "$MKFS_E" "$dev"
	mount -o "$MOUNT_O" "$dev" "$MNT"
	write_file plain "$r"
	umount "$MNT"
	drop_caches
	mount -o "$MOUNT_O" "$dev" "$MNT"
	read_file read plain "$r" "$IO_MIB"
	umount "$MNT"
	losetup -d "$dev"
	rm -f "$W/plain.img"
}

run_engine() {
	local r=$1
	new_image "$W/e-base"
	clone "$W/e-base" "$W/e-top"
	emount "$W/e-top"
	write_file engine "$r"
	eumount "$W/e-top"
	[ "$r" != 1 ] || server_stats "engine write, server" "$W/e-top"
	drop_caches
	emount "$W/e-top"
	read_file read engine "$r" "$IO_MIB"
	eumount "$W/e-top"
	rm -rf "$W/e-base" "$W/e-top" "$W/run/e-base" "$W/run/e-top"
}

# Loop without direct I/O: with it, QEMU 7.2's FUSE export corrupts data (PLOOP.md §6.3a).
run_qsd() {
	local r=$1 dev
	new_image "$W/q-base"
	clone "$W/q-base" "$W/q-top"
	qsd_start "$W/q-top"
	dev=$(losetup -f --show "$W/qsd-disk")
	mount -o "$MOUNT_O" "$dev" "$MNT"
	write_file qsd "$r"
	umount "$MNT"
	drop_caches
	mount -o "$MOUNT_O" "$dev" "$MNT"
	read_file read qsd "$r" "$IO_MIB"
	umount "$MNT"
	losetup -d "$dev"
	qsd_stop
	rm -rf "$W/q-base" "$W/q-top" "$W/run/q-base"
}

# ---------------------------------------------------------------------------
# 2. mount + umount latency

# cycle_engine SETUP ROUND IMAGE [--ro]: time the mount and the umount sub-commands.
cycle_engine() {
	local setup=$1 r=$2 img=$3 t0 t1 t2
	shift 3
	ENG[$img]=$MNT
	t0=${EPOCHREALTIME/./}
	"$B" mount --run-dir "$W/run/${img##*/}" "$@" "$img" "$MNT"
	t1=${EPOCHREALTIME/./}
	"$B" umount --run-dir "$W/run/${img##*/}" "$img" "$MNT"
	t2=${EPOCHREALTIME/./}
	unset "ENG[$img]"
	record mount "$setup" "$r" "$(ms $((t1 - t0)))"
	record umount "$setup" "$r" "$(ms $((t2 - t1)))"
	record cycle "$setup" "$r" "$(ms $((t2 - t0)))"
}

# The same with losetup + mount and umount + losetup -d on the plain file.
cycle_plain() {
	local r=$1 t0 t1 t2 dev
	t0=${EPOCHREALTIME/./}
	dev=$(losetup -f --show --direct-io=on "$W/lat-plain.img")
	mount -o "$MOUNT_O" "$dev" "$MNT"
	t1=${EPOCHREALTIME/./}
	umount "$MNT"
	losetup -d "$dev"
	t2=${EPOCHREALTIME/./}
	record mount plain "$r" "$(ms $((t1 - t0)))"
	record umount plain "$r" "$(ms $((t2 - t1)))"
	record cycle plain "$r" "$(ms $((t2 - t0)))"
}

# ---------------------------------------------------------------------------
# 4. create_clone SIZE ROUND: time `create --no-mkfs` and `clone`, and the disk the
# clone adds (du counts the hard-linked base once, under the base's directory).
create_clone() {
	local vs=$1 r=$2 t0 t1 t2
	t0=${EPOCHREALTIME/./}
	"$B" create --no-mkfs "$W/cc-base" "$vs" >/dev/null
	t1=${EPOCHREALTIME/./}
	clone "$W/cc-base" "$W/cc-clone"
	t2=${EPOCHREALTIME/./}
	sync
	record newimage "$vs" "$r" "$(ms $((t1 - t0)))"
	record clone "$vs" "$r" "$(ms $((t2 - t1)))"
	record imagedisk "$vs" "$r" "$(du -sk "$W/cc-base" | awk '{print $1}')"
	record clonedisk "$vs" "$r" "$(du -sk "$W/cc-base" "$W/cc-clone" | awk 'NR == 2 {print $1}')"
	rm -rf "$W/cc-base" "$W/cc-clone"
}

# ---------------------------------------------------------------------------
# 3. the deep chain. All three images end up holding the same file f (= $W/src):
#   shallow  one delta, f written in it;
#   base     f written in the base, then DEPTH-1 clones: reads fall through every level;
#   spread   f written as zeros in the base, then level k (k = 0 .. DEPTH-1) writes
#            slice k of src (SLICE_MIB, in place: ext4 overwrites allocated blocks),
#            so the file's clusters sit in all DEPTH deltas.

build_deep() {
	local k prev t0
	t0=${EPOCHREALTIME/./}
	head -c "$((DEEP_MIB << 20))" /dev/urandom >"$W/src"

	new_image "$W/sh"
	emount "$W/sh"
	dd if="$W/src" of="$MNT/f" bs=4M conv=fsync status=none
	eumount "$W/sh"

	new_image "$W/db0"
	emount "$W/db0"
	dd if="$W/src" of="$MNT/f" bs=4M conv=fsync status=none
	eumount "$W/db0"
	for ((k = 1; k < DEPTH; k++)); do clone "$W/db$((k - 1))" "$W/db$k"; done

	new_image "$W/ds0"
	emount "$W/ds0"
	dd if=/dev/zero of="$MNT/f" bs=4M count="$((DEEP_MIB / 4))" status=none
	dd if="$W/src" of="$MNT/f" bs="${SLICE_MIB}M" count=1 conv=notrunc,fsync status=none
	eumount "$W/ds0"
	for ((k = 1; k < DEPTH; k++)); do
		prev=$W/ds$((k - 1))
		clone "$prev" "$W/ds$k"
		emount "$W/ds$k"
		dd if="$W/src" of="$MNT/f" bs="${SLICE_MIB}M" skip="$k" seek="$k" count=1 \
			conv=notrunc,fsync status=none
		eumount "$W/ds$k"
	done
	DEEP_BASE=$W/db$((DEPTH - 1))
	DEEP_SPREAD=$W/ds$((DEPTH - 1))
	log "deep chains built in $(ms $((${EPOCHREALTIME/./} - t0))) ms: $("$B" info "$DEEP_SPREAD" |
		awk '$1 == "deltas" {print $2}') deltas, spread chain $(du -sm "$DEEP_SPREAD" |
		cut -f1) MiB on disk"
	for k in "$W/sh" "$DEEP_BASE" "$DEEP_SPREAD"; do
		emount --ro "$k"
		cmp "$W/src" "$MNT/f" || fail "$k: the file read back differs from what was written"
		eumount "$k"
	done
	log "read back $DEEP_MIB MiB through 1 and $DEPTH deltas: same bytes"
}

# deep_read SETUP ROUND IMAGE
deep_read() {
	drop_caches
	emount --ro "$3"
	read_file deepread "$1" "$2" "$DEEP_MIB"
	eumount "$3"
	[ "$2" != 1 ] || server_stats "$1 read, server" "$3"
}

# ---------------------------------------------------------------------------
# summary

# stats: figure,setup,median,min,max,n from the samples.
stats() {
	sort -t, -k1,1 -k2,2 -k4,4g "$SAMPLES" | awk -F, '
	function flush(   m) {
		if (n == 0) return
		m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%s,%s,%.1f,%s,%s,%d\n", fg, st, m, v[1], v[n], n
		n = 0
	}
	$1 != fg || $2 != st { flush(); fg = $1; st = $2 }
	{ v[++n] = $4 + 0 }
	END { flush() }'
}

# figure|label|unit
figures() {
	cat <<EOF
write|seq write $IO_MIB MiB, dd bs=1M conv=fsync|MiB/s
read|seq read $IO_MIB MiB, cold (drop caches, remount)|MiB/s
cycle|mount + umount|ms
mount|  mount alone|ms
umount|  umount alone|ms
deepread|seq read $DEEP_MIB MiB, cold, mount --ro|MiB/s
newimage|create --no-mkfs|ms
clone|clone|ms
imagedisk|disk of a new image (du)|KiB
clonedisk|disk a clone adds (du)|KiB
EOF
}

# label|figure|setup|over|target (ge:X, gt:X, le:X; "over" empty: the setup's own median)
checks() {
	cat <<EOF
write engine/plain|write|engine|plain|ge:0.9
read engine/plain|read|engine|plain|ge:0.9
write engine/qsd|write|engine|qsd|gt:1
read engine/qsd|read|engine|qsd|gt:1
write qsd/plain|write|qsd|plain|
read qsd/plain|read|qsd|plain|
mount+umount engine (ms)|cycle|engine||le:60
mount+umount plain loop (ms)|cycle|plain||
mount --ro+umount time, $DEPTH/1 deltas|cycle|spread$DEPTH|shallow|
read $DEPTH/1 deltas, data spread|deepread|spread$DEPTH|shallow|ge:0.95
read $DEPTH/1 deltas, data in base|deepread|base$DEPTH|shallow|ge:0.95
clone time 1T/10G|clone|1T|10G|le:1.2
disk per clone at 1T (KiB)|clonedisk|1T||le:1024
disk of a new image at 1T (KiB)|imagedisk|1T||le:1024
EOF
}

summarize() {
	local st=$W/stats.csv secs=$1 when host
	stats >"$st"
	when=$(date -u '+%Y-%m-%d %H:%M UTC')
	host="$(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
	mkdir -p "$OUT"
	{ figures; echo "--"; checks; } | awk -F'|' -v st="$st" -v csv="$OUT/engine.csv.tmp" \
		-v txt="$OUT/engine.txt.tmp" -v when="$when" -v host="$host" -v commit="$COMMIT" \
		-v secs="$secs" -v load="$LOAD0 before, $(cut -d' ' -f1 /proc/loadavg) after; CPUs $(cpu_busy) % busy during the run" -v runs="$RUNS" -v deepruns="$DEEP_RUNS" -v cycles="$CYCLES" -v depth="$DEPTH" \
		-v qsd="${QSD:-}" -v fs="$(findmnt -n -o FSTYPE,SOURCE -T "$TMP_PARENT" | tr -s ' ')" '
	function out(s) { print s > txt }
	function fmt(x) { return x == "" ? "-" : sprintf("%.1f", x) }
	BEGIN {
		FS = ","
		while ((getline line < st) > 0) {
			split(line, f, ",")
			k = f[1] SUBSEP f[2]
			med[k] = f[3]; lo[k] = f[4]; hi[k] = f[5]; n[k] = f[6]
			have[f[1]] = have[f[1]] " " f[2] " "
		}
		# setups in this order in every figure
		nso = split("plain engine qsd shallow spread" depth " base" depth " 10G 1T", so, " ")
		FS = "|"; part = 1
		print "figure,setup,unit,median,min,max,n,target,result" > csv
		out(sprintf("make bench-engine: %s, %s, commit %s, work dir on %s; %d s; load average %s", when, host, commit, fs, secs, load))
		out(sprintf("medians of %d runs per write/read figure, %d per deep-chain read, %d cycles per latency figure; setups alternate run by run", runs, deepruns, cycles))
		out("")
		out(sprintf("%-46s %-10s %-6s %8s %8s %8s %3s", "figure", "setup", "unit", "median", "min", "max", "n"))
	}
	$0 == "--" { part = 2
		out(""); out(sprintf("%-40s %8s  %-8s %s", "ratio / figure", "value", "target", "result")); next }
	part == 1 {
		fg = $1; label = $2; unit = $3
		first = 1
		for (i = 1; i <= nso; i++) {
			if (index(have[fg], " " so[i] " ") == 0) continue
			k = fg SUBSEP so[i]
			out(sprintf("%-46s %-10s %-6s %8s %8s %8s %3d", first ? label : "", so[i], unit, fmt(med[k]), fmt(lo[k]), fmt(hi[k]), n[k]))
			printf "%s,%s,%s,%s,%s,%s,%d,,\n", fg, so[i], unit, med[k], lo[k], hi[k], n[k] > csv
			first = 0
		}
	}
	part == 2 {
		label = $1; fg = $2; a = $3; b = $4; tg = $5
		ka = fg SUBSEP a; kb = fg SUBSEP b
		val = ""
		if (b == "") { if (ka in med) val = med[ka] }
		else if ((ka in med) && (kb in med) && med[kb] > 0) val = med[ka] / med[kb]
		split(tg, t, ":"); lim = t[2] + 0
		res = ""; ts = ""
		if (tg != "") {
			ts = (t[1] == "ge" ? ">= " : t[1] == "gt" ? "> " : "<= ") lim
			if (val == "") res = (b == "qsd" && qsd == "") ? "SKIP (no qemu-storage-daemon)" : "n/a"
			else if (t[1] == "ge") res = val >= lim ? "PASS" : sprintf("MISS (%.0f%% short)", (1 - val / lim) * 100)
			else if (t[1] == "gt") res = val > lim ? "PASS" : sprintf("MISS (%.0f%% short)", (1 - val / lim) * 100)
			else res = val <= lim ? "PASS" : sprintf("MISS (%.1f ms over)", val - lim)
		}
		vs = val == "" ? "-" : (b == "" ? sprintf("%.1f", val) : sprintf("%.2f", val))
		out(sprintf("%-40s %8s  %-8s %s", label, vs, ts, res))
		printf "%s,%s,%s,%s,,,,%s,%s\n", fg, b == "" ? a : a "/" b, b == "" ? "ms" : "ratio", val == "" ? "" : (b == "" ? val : sprintf("%.3f", val)), ts, res > csv
	}'
	setups_note >>"$OUT/engine.txt.tmp"
	cat "$OUT/engine.txt.tmp"
	mv "$OUT/engine.csv.tmp" "$OUT/engine.csv"
	mv "$OUT/engine.txt.tmp" "$OUT/engine.txt"
}

setups_note() {
	local qv=""
	[ -z "$QSD" ] || qv=$("$QSD" --version | awk 'NR == 1 {print " " $3}')
	echo
	echo "setups (${SIZE%G} GiB virtual, $CLUSTER_KIB KiB clusters; ext4 made and mounted as the engine does it:"
	echo "mkfs.ext4 -m 0 -E $MKFS_E, mount -o $MOUNT_O):"
	printf '  %-10s %s\n' \
		plain "ext4 on a loop device with direct I/O over a sparse file: the limit" \
		engine "our engine (mount/umount sub-commands): a clone of a freshly created base, 2 deltas" \
		qsd "qemu-storage-daemon$qv FUSE export of the same kind of 2-delta chain (parallels" \
		"" "driver, chain by blockdev-snapshot); loop without direct I/O (QEMU 7.2 corrupts data with it)" \
		shallow "1 delta holding the $DEEP_MIB MiB file" \
		"spread$DEPTH" "$DEPTH deltas; level k wrote slice k ($SLICE_MIB MiB) of the file" \
		"base$DEPTH" "$DEPTH deltas; the file written in the base, $((DEPTH - 1)) empty clones above it"
	echo "a fresh filesystem for every write run; latency: mount then umount, engine on a clone of a"
	echo "fresh base, shallow and spread$DEPTH with --ro, plain = losetup + mount / umount + losetup -d"
}

# busy and total jiffies of all CPUs so far
cpu_jiffies() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# cpu_busy: percent of CPU time busy since CPU0 (the engine's own work included)
cpu_busy() {
	local b t
	read -r b t < <(cpu_jiffies)
	awk -v b=$((b - ${CPU0% *})) -v t=$((t - ${CPU0#* })) 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}'
}

head_commit() {
	local repo c
	repo=$(cd "$BENCH_DIR/.." && pwd)
	c=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null) || {
		echo unknown
		return
	}
	if [ "$BUILD" = "$repo/build" ] && ! git -C "$repo" diff --quiet HEAD -- driver plugin; then
		c="$c + uncommitted driver/plugin changes"
	fi
	echo "$c"
}

# ---------------------------------------------------------------------------
# main

[ "$(id -u)" = 0 ] || fail "needs root (loop devices, mounts, drop_caches)"
[ -x "$B" ] || fail "no $B (make all)"
if [ "$DEPTH" -lt 2 ] || [ "$DEPTH" -gt 127 ]; then fail "BENCH_ENGINE_DEPTH must be 2..127"; fi
QSD=$(command -v qemu-storage-daemon || true)

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
if ! flock -n 9; then
	log "waiting for $LOCK (an e2e test or a bench is running)"
	flock -w 3600 9 || fail "could not take $LOCK"
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

[ "$(stat -f -c %T "$TMP_PARENT")" != tmpfs ] || fail "$TMP_PARENT is tmpfs: use a disk (BENCH_ENGINE_TMP)"
W=$(mktemp -d "$TMP_PARENT/pgd-bench-engine.XXXX")
MNT=$W/mnt
SAMPLES=$W/samples.csv
mkdir -p "$MNT" "$W/run"
: >"$SAMPLES"
T0=${EPOCHREALTIME/./}
CPU0=$(cpu_jiffies)
COMMIT=${BENCH_COMMIT:-$(head_commit)}
log "build $BUILD; work dir $W; $RUNS runs, $DEEP_RUNS deep reads, $CYCLES cycles, chain of $DEPTH deltas"

LOAD0=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD0" 'BEGIN {exit !(l > 1.5)}'; then
	log "warning: load average $LOAD0: other jobs are running, the figures will be noisy"
fi
new_image "$W/probe"
CLUSTER_KIB=$("$B" info "$W/probe" | awk '$1 == "cluster" {print $2 / 1024}')
rm -rf "$W/probe" "$W/run/probe"
log "clusters of $CLUSTER_KIB KiB${CLUSTER:+ (BENCH_ENGINE_CLUSTER)}"

SETUPS=(plain engine)
if [ -n "$QSD" ]; then
	SETUPS+=(qsd)
else
	log "SKIP: no qemu-storage-daemon (Debian qemu-system-common): the qsd setup is not measured"
fi

# 1. throughput, a warm-up run of each first (not recorded)
log "1. write and cold read of $IO_MIB MiB: ${SETUPS[*]}"
for s in "${SETUPS[@]}"; do "run_$s" 0; done
: >"$SAMPLES"
for ((r = 1; r <= RUNS; r++)); do
	n=${#SETUPS[@]}
	for ((k = 0; k < n; k++)); do
		s=${SETUPS[(k + r - 1) % n]}
		"run_$s" "$r"
	done
	log "round $r/$RUNS: $(awk -F, -v r="$r" '$3 == r {printf "%s %s %s; ", $1, $2, $4}' "$SAMPLES")"
done

# 2. latency
log "2. mount + umount, $CYCLES cycles each: engine, plain loop"
new_image "$W/lat-base"
clone "$W/lat-base" "$W/lat"
truncate -s "$SIZE" "$W/lat-plain.img"
mkfs.ext4 -q -F -m 0 -E "$MKFS_E" "$W/lat-plain.img"
cycle_engine warmup 0 "$W/lat"
for ((r = 1; r <= CYCLES; r++)); do
	if ((r % 2)); then
		cycle_engine engine "$r" "$W/lat"
		cycle_plain "$r"
	else
		cycle_plain "$r"
		cycle_engine engine "$r" "$W/lat"
	fi
done
sed -i '/,warmup,/d' "$SAMPLES"

# 3. deep chain
log "3. chains of 1 and $DEPTH deltas: building"
build_deep
DEEP=(shallow "$W/sh" "spread$DEPTH" "$DEEP_SPREAD" "base$DEPTH" "$DEEP_BASE")
for ((r = 1; r <= DEEP_RUNS; r++)); do
	for ((k = 0; k < 3; k++)); do
		i=$((((k + r - 1) % 3) * 2))
		deep_read "${DEEP[i]}" "$r" "${DEEP[i + 1]}"
	done
done
for ((r = 1; r <= CYCLES; r++)); do
	cycle_engine shallow "$r" "$W/sh" --ro
	cycle_engine "spread$DEPTH" "$r" "$DEEP_SPREAD" --ro
done

# 4. the cost of a new image and of a clone at two virtual sizes (no ext4: ploop alone)
log "4. create --no-mkfs and clone at 10G and 1T, $CYCLES each"
for ((r = 1; r <= CYCLES; r++)); do
	for vs in 10G 1T; do
		create_clone "$vs" "$r"
	done
done

secs=$(((${EPOCHREALTIME/./} - T0) / 1000000))
echo
summarize "$secs"
log "results in $OUT/engine.{csv,txt}; took $secs s (after the lock wait, before the teardown)"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/containerd.sh [BUILD]: the containerd section of `make bench`. One private
# containerd 1.6 (tests/e2e/lib.sh) with two snapshotters side by side: ploop
# (ploop-snapshotter as proxy plugin) and containerd's built-in overlayfs. Measured
# through ctr, the snapshotters alternating and their order rotating every round:
#   import  `ctr images import --snapshotter S` of a two-layer docker archive (busybox +
#           BENCH_CTRD_MIB of random files), unique per run so that every run ingests and
#           unpacks every layer (ingest is the same work for both; the difference is unpack)
#   run     `ctr run --rm --snapshotter S IMAGE ID true`
#   disk    allocated disk growth per created container (`ctr containers create`,
#           BENCH_CTRD_DISK_N of them): du of the snapshotter's directory before and after
# Prints medians and the ratios ploop/overlayfs against the targets (<= 1.2 for import
# and run); writes bench/results/containerd.{csv,md}. Never fails on a target.
#
# Environment: BENCH_CTRD_ROUNDS (3), BENCH_CTRD_RUN (5 per round), BENCH_CTRD_MIB (100),
# BENCH_CTRD_DISK_N (10), BENCH_OUT (bench/results).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${BUILD:-$BENCH_DIR/../build}}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
ROUNDS=${BENCH_CTRD_ROUNDS:-3}
RUNS=${BENCH_CTRD_RUN:-5}
MIB=${BENCH_CTRD_MIB:-100}
DISK_N=${BENCH_CTRD_DISK_N:-10}
OUT=${BENCH_OUT:-$BENCH_DIR/results}
SNAPS=(ploop overlayfs)

# shellcheck source=tests/e2e/lib.sh
. "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=tests/e2e/lib_snapshotter.sh
. "$BENCH_DIR/../tests/e2e/lib_snapshotter.sh"

e2e_setup
e2e_start_snapshotter
e2e_start_containerd_ploop
W=$D/bench
mkdir -p "$W"
: >"$W/samples.csv"

# the layer trees, built once: busybox, and MIB of random 4 MiB files
mkdir -p "$W/l0" "$W/l1/data"
e2e_busybox_tree "$W/l0"
for ((i = 0; i < MIB / 4; i++)); do head -c 4194304 /dev/urandom >"$W/l1/data/r$i"; done

# archive N: both layers made unique by a marker file, so nothing is shared with
# another run (no blob in the content store, no snapshot with the same chain ID)
archive() {
	echo "$1" >"$W/l0/marker"
	echo "$1" >"$W/l1/marker"
	e2e_docker_archive "$W/a.tar" "bench/img$1:1" "$W/l0" "$W/l1"
}

sample() { echo "$1,$2,$3" >>"$W/samples.csv"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

n=0
for ((r = 0; r < ROUNDS; r++)); do
	order=("${SNAPS[@]}")
	[ $((r % 2)) = 0 ] || order=("${SNAPS[1]}" "${SNAPS[0]}")
	for s in "${order[@]}"; do
		n=$((n + 1))
		archive "$n"
		t0=$(date +%s%N)
		ctr_ images import --snapshotter "$s" "$W/a.tar" >/dev/null || fail "import with $s"
		sample import "$s" "$(ms_since "$t0")"
		img=docker.io/bench/img$n:1
		ctr_ run --rm --snapshotter "$s" "$img" "warm-$n" true || fail "run with $s"
		for ((k = 0; k < RUNS; k++)); do
			t0=$(date +%s%N)
			ctr_ run --rm --snapshotter "$s" "$img" "run-$n-$k" true || fail "run with $s"
			sample run "$s" "$(ms_since "$t0")"
		done
		ctr_ images rm --sync "$img" >/dev/null
	done
	log "round $((r + 1)) of $ROUNDS done"
done

# disk per container: allocated bytes the snapshotter's directory grows by
dir_of() {
	case $1 in
	ploop) echo "$D/snap/store" ;;
	overlayfs) echo "$D/ctrd/root/io.containerd.snapshotter.v1.overlayfs" ;;
	esac
}
for s in "${SNAPS[@]}"; do
	n=$((n + 1))
	archive "$n"
	img=docker.io/bench/img$n:1
	ctr_ images import --snapshotter "$s" "$W/a.tar" >/dev/null || fail "import with $s"
	sync
	before=$(du -sk "$(dir_of "$s")" | cut -f1)
	for ((k = 0; k < DISK_N; k++)); do
		ctr_ containers create --snapshotter "$s" "$img" "disk-$s-$k" >/dev/null || fail "create with $s"
	done
	sync
	after=$(du -sk -x "$(dir_of "$s")" | cut -f1)
	sample disk "$s" $(((after - before) / DISK_N))
	for ((k = 0; k < DISK_N; k++)); do ctr_ containers delete "disk-$s-$k" >/dev/null; done
	ctr_ images rm --sync "$img" >/dev/null
done

mkdir -p "$OUT"
awk -F, -v out="$OUT" '
	{ v[$1 "," $2] = v[$1 "," $2] " " $3 }
	function median(list,   a, n, i, j, t) {
		n = split(list, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function count(list,   a) { return split(list, a, " ") }
	END {
		split("import run disk", figs, " ")
		unit["import"] = "ms"; unit["run"] = "ms"; unit["disk"] = "KiB"
		target["import"] = 1.2; target["run"] = 1.2
		csv = out "/containerd.csv"; md = out "/containerd.md"
		print "figure,snapshotter,unit,median,n" > csv
		print "| figure | ploop | overlayfs | ploop/overlayfs | target |" > md
		print "|---|---|---|---|---|" > md
		for (i = 1; i <= 3; i++) {
			f = figs[i]
			p = median(v[f ",ploop"]); o = median(v[f ",overlayfs"])
			printf "%s,ploop,%s,%s,%d\n%s,overlayfs,%s,%s,%d\n", f, unit[f], p, count(v[f ",ploop"]), f, unit[f], o, count(v[f ",overlayfs"]) > csv
			ratio = o > 0 ? sprintf("%.2f", p / o) : "-"
			verdict = "-"
			if (f in target && o > 0) verdict = sprintf("<= %.1f: %s", target[f], p / o <= target[f] ? "PASS" : "MISS")
			printf "| %s (%s, median) | %s | %s | %s | %s |\n", f, unit[f], p, o, ratio, verdict > md
		}
	}' "$W/samples.csv"
cp "$W/samples.csv" "$OUT/containerd.raw.csv"
{
	echo "containerd $(containerd --version | awk '{print $3}'), $ROUNDS rounds, $RUNS runs per round, ${MIB} MiB image, $DISK_N containers for disk"
	cat "$OUT/containerd.md"
} | tee "$OUT/containerd.txt"

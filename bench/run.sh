#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/run.sh [BUILD]: `make bench`. Times ploop (legacy plugin) against overlay2 and
# vfs, each in its own private dockerd (tests/e2e/lib.sh), all three side by side.
# The drivers alternate batch by batch, and the order rotates every round, so the
# noise of this VM hits them alike. Prints a table of medians, a line of ratios and a
# PASS/MISS per target; writes bench/results/latest.{csv,md,png} (+ latest.raw.csv).
# It never fails on a target; it fails (and leaves bench/results alone) when a driver
# cannot run a container or one of its commands fails.
#
# Method as /work/shared/DOCKERD.md §9: wall-clock time of each docker CLI call, from
# `date +%s%N` before and after, medians pooled over the rounds.
#
# Environment (run counts are sized so that `make bench` stays under 10 minutes):
#   BENCH_DRIVERS  drivers to run (default "ploop ploop1t overlay2 vfs"; ploop1t is
#                  ploop with --storage-opt ploop.size=1T, see BENCH_FLAGS_ploop1t)
#   BENCH_ROUNDS   rounds (default 5)
#   BENCH_RUN      `docker run --rm` per batch (default 3, after 2 warm-ups per driver)
#   BENCH_CREATE   create + rm pairs per batch (default 4)
#   BENCH_IMPORT   import runs in total, one per round in the first rounds (default 3)
#   BENCH_DD       dd runs per batch (default 2)
#   BENCH_DISK_N   containers created for the disk figure (default 20)
#   BENCH_DISK_1T_N  ploop containers created with --storage-opt size=1T (default 5),
#                  the per-container quota (ploop1t has it as the default instead)
#   BENCH_MEM_N    running containers for the memory figure (default 5)
#   BENCH_OUT      results directory (default bench/results)
#   BENCH_PLOOP_FLAGS  extra dockerd flags for ploop, e.g.
#                  "--storage-opt ploop.blocksize=64K" (use with another BENCH_OUT)
#   A/B variants:  any driver named ploop<suffix> is one more ploop instance (its own
#                  legacy plugin /run/docker/plugins/ploop<suffix>.sock), started with
#                  the dockerd flags in BENCH_FLAGS_ploop<suffix>, e.g.
#                  BENCH_DRIVERS="ploop ploop64k overlay2"
#                  BENCH_FLAGS_ploop64k="--storage-opt ploop.blocksize=64K"
#   E2E_KEEP=1     keep the instance directories (see tests/e2e/lib.sh)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${BUILD:-$BENCH_DIR/../build}}
E2E_TIMEOUT=${E2E_TIMEOUT:-120}
BENCH_DRIVERS=${BENCH_DRIVERS:-ploop ploop1t overlay2 vfs}
# ploop1t: the same plugin with a 1 TiB default image size (thin deltas: a container
# should cost what it costs at the default 10 GiB)
export BENCH_FLAGS_ploop1t=${BENCH_FLAGS_ploop1t:---storage-opt ploop.size=1T}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_RUN=${BENCH_RUN:-3}
BENCH_CREATE=${BENCH_CREATE:-4}
BENCH_DISK_1T_N=${BENCH_DISK_1T_N:-5}
BENCH_IMPORT=${BENCH_IMPORT:-3}
BENCH_DD=${BENCH_DD:-2}
BENCH_DISK_N=${BENCH_DISK_N:-20}
BENCH_MEM_N=${BENCH_MEM_N:-5}
BENCH_OUT=${BENCH_OUT:-$BENCH_DIR/results}
DD_MIB=256

# shellcheck source=tests/e2e/lib.sh
. "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

LOCK_T0=$(date +%s%N)
e2e_setup
BENCH_T0=$(date +%s%N)     # the wait for the e2e lock (other tests) is not counted
log "waited $(((BENCH_T0 - LOCK_T0) / 1000000000)) s for the e2e lock"
W=""                       # work files (bench_init); removed with the first instance
bench_init
: >"$W/samples.csv"

declare -A DIR=()          # driver -> its instance directory
declare -A BROKEN=()       # driver -> why it stopped being measured
CMD=()                     # set by external()
DRIVERS=()                 # drivers that came up

# ---------------------------------------------------------------------------
# set-up

# The 200 MiB tar of random files (DOCKERD.md §9: 50 x 4 MiB under data/).
make_rand_tar() {
	local t=$W/randtree i
	mkdir -p "$t/data"
	for ((i = 0; i < 50; i++)); do
		head -c 4194304 /dev/urandom >"$t/data/r$i"
	done
	tar -C "$t" -cf "$W/rand200.tar" .
	rm -rf "$t"
}

# ---------------------------------------------------------------------------
# samples

# record DRV FIGURE ROUND VALUE
record() { echo "$1,$2,$3,$4" >>"$W/samples.csv"; }

# broken DRV WHAT: stop measuring DRV after a failed command, with its error.
broken() {
	BROKEN[$1]=$2
	log "ERROR: $1: $2 failed; $1 is not measured any further:"
	tail -15 "$W/err" >&2
}

# external CMD...: CMD as an external command line: `dk` becomes the docker CLI call it
# wraps. A function would run with the shell's own stderr redirected, so a signal
# trap (and the teardown's messages) would land in $W/err.
external() {
	if [ "$1" = dk ]; then
		shift
		CMD=(timeout "$E2E_TIMEOUT" "$DOCKER_CLI" -H "unix://$D/docker.sock" "$@")
	else
		CMD=("$@")
	fi
}

# timed DRV FIGURE ROUND CMD...: run CMD, record its wall time in microseconds.
timed() {
	local drv=$1 fig=$2 round=$3 t0 t1
	shift 3
	external "$@"
	set -- "${CMD[@]}"
	t0=$(date +%s%N)
	if ! "$@" >"$W/out" 2>"$W/err"; then
		broken "$drv" "$fig ($*)"
		return 1
	fi
	t1=$(date +%s%N)
	record "$drv" "$fig" "$round" $(((t1 - t0) / 1000))
}

# quiet DRV WHAT CMD...: an untimed step of a measurement.
quiet() {
	local drv=$1 what=$2
	shift 2
	external "$@"
	set -- "${CMD[@]}"
	"$@" >"$W/out" 2>"$W/err" || {
		broken "$drv" "$what ($*)"
		return 1
	}
}

# ---------------------------------------------------------------------------
# one batch of measurements for one driver

bench_run() {
	local drv=$1 r=$2 i
	for ((i = 0; i < BENCH_RUN; i++)); do
		timed "$drv" run "$r" dk run --rm --network none busybox:local true || return 1
	done
}

bench_create_rm() {
	local drv=$1 r=$2 i c0 c1
	for ((i = 0; i < BENCH_CREATE; i++)); do
		c0=$(date +%s%N)
		timed "$drv" create "$r" dk create --name "cr$r-$i" --network none busybox:local true || return 1
		timed "$drv" rm "$r" dk rm "cr$r-$i" || return 1
		c1=$(date +%s%N)
		record "$drv" create_rm "$r" $(((c1 - c0) / 1000))
	done
}

bench_import() {
	local drv=$1 r=$2
	[ "$r" -le "$BENCH_IMPORT" ] || return 0
	timed "$drv" import "$r" dk import "$W/rand200.tar" "rand:$r" || return 1
	quiet "$drv" "rmi rand:$r" dk rmi "rand:$r"
}

bench_commit_diff() {
	local drv=$1 r=$2
	quiet "$drv" "write 1 MiB" dk run --name "cw$r" --network none busybox:local \
		dd if=/dev/urandom of=/f1m bs=1M count=1 || return 1
	timed "$drv" commit "$r" dk commit "cw$r" "cw:$r" || return 1
	timed "$drv" diff "$r" dk diff "cw$r" || return 1
	if [ "$(cat "$W/out")" != "A /f1m" ]; then
		echo "docker diff printed: $(cat "$W/out")" >"$W/err"
		broken "$drv" "diff output"
		return 1
	fi
	quiet "$drv" "rm cw$r" dk rm "cw$r" || return 1
	quiet "$drv" "rmi cw:$r" dk rmi "cw:$r"
}

# busybox `time` prints "real<TAB>0m 1.23s" (10 ms resolution).
bench_dd() {
	local drv=$1 r=$2 i secs
	for ((i = 0; i < BENCH_DD; i++)); do
		quiet "$drv" dd dk run --rm --network none busybox:local \
			sh -c "time dd if=/dev/zero of=/big bs=1M count=$DD_MIB conv=fsync" || return 1
		secs=$(awk '$1 == "real" {m = $2; s = $3; sub(/m/, "", m); sub(/s/, "", s); print m * 60 + s}' "$W/err")
		if [ -z "$secs" ] || [ "$(awk -v s="$secs" 'BEGIN {print (s > 0)}')" != 1 ]; then
			broken "$drv" "dd timing (no 'real' line)"
			return 1
		fi
		record "$drv" dd "$r" "$(awk -v s="$secs" -v m="$DD_MIB" 'BEGIN {printf "%.1f", m / s}')"
	done
}

batch() {
	local drv=$1 r=$2 t0
	[ -z "${BROKEN[$drv]:-}" ] || return 0
	use "$drv"
	t0=$(now_ms)
	if bench_run "$drv" "$r" && bench_create_rm "$drv" "$r" && bench_import "$drv" "$r" &&
		bench_commit_diff "$drv" "$r"; then
		bench_dd "$drv" "$r" || true
	fi
	log "round $r: $drv batch took $(($(now_ms) - t0)) ms"
}

# ---------------------------------------------------------------------------
# once per driver: disk per created container, plugin memory per running container

# The driver's storage: overlay2/vfs their directory; ploop its Home and state file.
storage_kib() {
	local -a paths=("$D/root/$E2E_DRIVER")
	[[ $E2E_DRIVER != ploop* ]] || paths=("$D/root/$E2E_PLUGIN_NAME" "$D/state.json")
	du -skxc "${paths[@]}" 2>/dev/null | awk 'END {print $1}'
}

# disk_per_create DRV FIGURE N PREFIX [CREATE OPTIONS]: the storage N `docker create`s
# add, per container (each create timed as FIGURE_time when it has options).
disk_per_create() {
	local drv=$1 fig=$2 n=$3 pre=$4 i before after
	shift 4
	sync
	before=$(storage_kib)
	for ((i = 0; i < n; i++)); do
		if [ $# -gt 0 ]; then
			timed "$drv" "${fig}_time" 0 dk create --name "$pre$i" "$@" --network none busybox:local true
		else
			quiet "$drv" "create $pre$i" dk create --name "$pre$i" --network none busybox:local true
		fi || return 0
	done
	sync
	after=$(storage_kib)
	log "$drv: storage $before KiB before, $after KiB after $n creates $*"
	record "$drv" "$fig" 0 "$(((after - before) / n))"
	# shellcheck disable=SC2046
	quiet "$drv" "rm $pre*" dk rm $(seq -f "$pre%g" 0 $((n - 1))) || true
}

bench_disk() {
	local drv=$1
	[ -z "${BROKEN[$drv]:-}" ] || return 0
	use "$drv"
	disk_per_create "$drv" disk "$BENCH_DISK_N" st
	# a 1 TiB quota given per container: the -init layer is grown, and ext4 resized
	[ "$drv" != ploop ] || disk_per_create "$drv" disk_1t "$BENCH_DISK_1T_N" tb --storage-opt size=1T
}

# PSS and RSS (KiB) of the plugin and of its image servers.
plugin_mem() {
	local main p servers=0 spss=0 srss=0
	main=$(e2e_plugin_pid)
	for p in $(e2e_image_server_pids); do
		servers=$((servers + 1))
		spss=$((spss + $(smaps_kib "$p" Pss)))
		srss=$((srss + $(smaps_kib "$p" Rss)))
	done
	echo "$(smaps_kib "$main" Pss) $(smaps_kib "$main" Rss) $servers $spss $srss"
}

bench_mem() {
	local drv=$1 i b a n=$BENCH_MEM_N ids
	[ -z "${BROKEN[$drv]:-}" ] || return 0
	use "$drv"
	read -r -a b <<<"$(plugin_mem)"
	for ((i = 0; i < n; i++)); do
		quiet "$drv" "run -d sleep" dk run -d --name "sl$i" --network none busybox:local sleep 3600 || return 0
	done
	sleep 1
	read -r -a a <<<"$(plugin_mem)"
	log "$drv memory before: plugin PSS ${b[0]} RSS ${b[1]} KiB, ${b[2]} image servers PSS ${b[3]} RSS ${b[4]} KiB"
	log "$drv memory with $n running: plugin PSS ${a[0]} RSS ${a[1]} KiB, ${a[2]} image servers PSS ${a[3]} RSS ${a[4]} KiB"
	record "$drv" mem 0 $(((a[3] - b[3] + a[0] - b[0]) / n))
	record "$drv" mem_rss 0 $(((a[4] - b[4] + a[1] - b[1]) / n))
	ids=$(seq -f 'sl%g' 0 $((n - 1)))
	# shellcheck disable=SC2086
	quiet "$drv" "kill sleepers" dk kill $ids || true
	# shellcheck disable=SC2086
	quiet "$drv" "rm sleepers" dk rm $ids || true
}

# ---------------------------------------------------------------------------
# main

log "bench: drivers $BENCH_DRIVERS; $BENCH_ROUNDS rounds; build $BUILD"
make_rand_tar
cat "$W/rand200.tar" >/dev/null
for drv in $BENCH_DRIVERS; do
	start_driver "$drv" || true
done
[ "${#DRIVERS[@]}" -gt 0 ] || fail "no driver could run a container"

for drv in "${DRIVERS[@]}"; do
	use "$drv"
	for i in 1 2; do
		quiet "$drv" warm-up dk run --rm --network none busybox:local true || break
	done
done

for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	n=${#DRIVERS[@]}
	for ((k = 0; k < n; k++)); do
		batch "${DRIVERS[(k + r - 1) % n]}" "$r"
	done
done
for drv in "${DRIVERS[@]}"; do bench_disk "$drv"; done
for drv in "${DRIVERS[@]}"; do
	[[ $drv != ploop* ]] || bench_mem "$drv"
done

# A run in which a requested driver did not come up or failed is printed, but it does
# not replace the committed results.
complete=1
for drv in $BENCH_DRIVERS; do
	[ -n "${DIR[$drv]:-}" ] || BROKEN[$drv]="did not come up"
	[ -z "${BROKEN[$drv]:-}" ] || complete=0
done
out=$BENCH_OUT
[ "$complete" = 1 ] || out=$W/results
mkdir -p "$out"
secs=$((($(date +%s%N) - BENCH_T0) / 1000000000))
# shellcheck disable=SC2086 # the driver list
summarize "$W/samples.csv" "$out" "$secs" $BENCH_DRIVERS
log "bench took $secs s (after the lock wait, before the teardown)"
for drv in "${!BROKEN[@]}"; do
	log "ERROR: $drv: ${BROKEN[$drv]}"
done
[ "$complete" = 1 ] || fail "incomplete run: results not written to $BENCH_OUT"
log "results in $BENCH_OUT/latest.{csv,md,png,raw.csv}"

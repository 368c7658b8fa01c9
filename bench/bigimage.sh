#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/bigimage.sh [BUILD]: the big-image section of `make bench` (issue #12), also
# runnable alone (`make bench BENCH_ONLY=bigimage`). Images of busybox plus N small
# files in N/100 directories (N = 6,000, 60,000, 120,000); on each, containers that
# append to one file, create one and delete one; timed through dockerd, ploop against
# overlay2 and vfs, each in its own private dockerd (tests/e2e/lib.sh), drivers
# alternating round by round:
#   import60k  docker import of the 60,000-file image
#   run60k     docker run --rm on it
#   diffN      docker diff of such a container (N = 6k, 60k, 120k)
#   commitN    docker commit of it
#   build60k   a 5-step legacy `docker build` FROM the 60,000-file image, each step
#              changing three files
# Writes bench/results/bigimage.{csv,md,raw.csv,png} (BENCH_OUT) and prints the table, the
# ratios and PASS/MISS per target. Fails only when a driver cannot run a command.
# Environment: BENCH_DRIVERS (default "ploop overlay2 vfs"), BENCH_ROUNDS (default 3),
# BENCH_SIZES (default "6000 60000 120000"), BENCH_BUILD_DRIVERS (the drivers that run
# the build, default "ploop overlay2": vfs copies the 60,000 files at every step and
# its build outlived a 300 s timeout here), BENCH_OUT, E2E_KEEP=1. A driver named
# ploopfull is one more ploop plugin started with PGD_TRACK=0 (no change tracker: the
# full comparison every time), e.g. BENCH_DRIVERS="ploop ploopfull overlay2".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${BUILD:-$BENCH_DIR/../build}}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
BENCH_DRIVERS=${BENCH_DRIVERS:-ploop overlay2 vfs}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_SIZES=${BENCH_SIZES:-6000 60000 120000}
BENCH_BUILD_DRIVERS=${BENCH_BUILD_DRIVERS:-ploop ploopfull overlay2}
BENCH_OUT=${BENCH_OUT:-$BENCH_DIR/results}

# shellcheck source=tests/e2e/lib.sh
. "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

e2e_setup
BENCH_T0=$(date +%s%N)
W=""
bench_init
: >"$W/samples.csv"
declare -A DIR=()
DRIVERS=()
FAILED=""

record() { echo "$1,$2,$3,$4" >>"$W/samples.csv"; }

# timed DRV FIGURE ROUND docker-args...: one docker CLI call, wall time in µs.
timed() {
	local drv=$1 fig=$2 round=$3 t0 t1
	shift 3
	t0=$(date +%s%N)
	if ! dk "$@" >"$W/out" 2>"$W/err"; then
		FAILED="$FAILED $drv:$fig"
		log "ERROR: $drv: $fig (docker $*) failed:"
		tail -5 "$W/err" >&2
		return 1
	fi
	t1=$(date +%s%N)
	record "$drv" "$fig" "$round" $(((t1 - t0) / 1000))
}

# big_tar N: busybox plus /data/dDDD/fFFFF, N files of 64 bytes, 100 per directory.
big_tar() {
	local n=$1 t=$W/tree$1
	mkdir -p "$t"
	tar -C "$t" -xf "$W/busybox.tar"
	awk -v n="$n" -v root="$t/data" 'BEGIN {
		for (i = 0; i < n; i++) {
			d = sprintf("%s/d%03d", root, int(i / 100))
			if (i % 100 == 0) system("mkdir -p " d)
			f = sprintf("%s/f%04d", d, i % 100)
			printf "%064d\n", i > f
			close(f)
		}
	}'
	tar -C "$t" --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
		-cf "$W/big$n.tar" .
	rm -rf "$t"
}

# The container's work: append to one file, create one, delete one.
WORK='echo more >>/data/d000/f0000 && echo new >/data/d001/new && rm /data/d002/f0002'
EXPECT=$'C /data\nC /data/d000\nC /data/d000/f0000\nC /data/d001\nA /data/d001/new\nC /data/d002\nD /data/d002/f0002'

one_size() {
	local drv=$1 r=$2 n=$3 k=$(($3 / 1000))k
	dk run --name "w$n-$r" --network none "big:$n" sh -c "$WORK" >/dev/null 2>"$W/err" || {
		FAILED="$FAILED $drv:work$k"
		return 1
	}
	timed "$drv" "diff$k" "$r" diff "w$n-$r" || return 1
	if [ "$(sort "$W/out")" != "$(sort <<<"$EXPECT")" ]; then
		FAILED="$FAILED $drv:diff$k-output"
		log "ERROR: $drv: docker diff printed: $(tr '\n' ' ' <"$W/out")"
		return 1
	fi
	timed "$drv" "commit$k" "$r" commit "w$n-$r" "c$n:$r" || return 1
	dk rm "w$n-$r" >/dev/null && dk rmi "c$n:$r" >/dev/null
}

make_context() {
	local c=$W/ctx i
	mkdir -p "$c"
	{
		echo "FROM big:60000"
		for i in 1 2 3 4 5; do
			echo "RUN echo $i >>/data/d00$i/f0000 && echo $i >/data/d01$i/new$i && rm /data/d02$i/f000$i"
		done
	} >"$c/Dockerfile"
}

batch() {
	local drv=$1 r=$2 n
	use "$drv"
	timed "$drv" run60k "$r" run --rm --network none big:60000 true || return 1
	for n in $BENCH_SIZES; do
		one_size "$drv" "$r" "$n" || return 1
	done
	[[ " $BENCH_BUILD_DRIVERS " == *" $drv "* ]] || return 0
	DOCKER_BUILDKIT=0 timed "$drv" build60k "$r" build --no-cache --network none -q \
		-t "b:$r" "$W/ctx" || return 1
	dk rmi "b:$r" >/dev/null
}

log "bigimage: drivers $BENCH_DRIVERS; $BENCH_ROUNDS rounds; sizes $BENCH_SIZES"
for n in $BENCH_SIZES; do big_tar "$n"; done
make_context
for drv in $BENCH_DRIVERS; do
	if [ "$drv" = ploopfull ]; then
		PGD_TRACK=0 start_driver "$drv" || continue
	else
		start_driver "$drv" || continue
	fi
	for n in $BENCH_SIZES; do
		if [ "$n" = 60000 ]; then
			timed "$drv" import60k 0 import "$W/big$n.tar" "big:$n" || break
		else
			dk import "$W/big$n.tar" "big:$n" >/dev/null
		fi
	done
done
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	n=${#DRIVERS[@]}
	for ((k = 0; k < n; k++)); do
		drv=${DRIVERS[(k + r - 1) % n]}
		[[ $FAILED != *" $drv:"* ]] || continue
		batch "$drv" "$r" || log "$drv: round $r failed"
	done
done
for drv in "${DRIVERS[@]}"; do
	[[ $drv == ploop* ]] || continue
	log "$drv: $(grep -c 'tracked, ' "${DIR[$drv]}/plugin.log") diffs answered on the tracker's hint," \
		"$(grep -c 'full comparison (' "${DIR[$drv]}/plugin.log") with the full comparison"
done

# ---------------------------------------------------------------------------
# summary: medians, ratios to overlay2 and vfs, the targets of issue #12

mkdir -p "$BENCH_OUT"
stats "$W/samples.csv" >"$W/stats.csv"
{
	echo "driver,figure,round,value"
	cat "$W/samples.csv"
} >"$BENCH_OUT/bigimage.raw.csv"
secs=$((($(date +%s%N) - BENCH_T0) / 1000000000))
awk -F, -v md="$BENCH_OUT/bigimage.md" -v csv="$BENCH_OUT/bigimage.csv" -v secs="$secs" \
	-v when="$(date -u '+%Y-%m-%d %H:%M UTC')" -v rounds="$BENCH_ROUNDS" \
	-v host="$(nproc) vCPU, kernel $(uname -r)" '
	{ med[$1 "," $2] = $3 / 1000; n[$1 "," $2] = $6; figs[$2] = 1; if ($1 == "ploopfull") full = 1 }
	function r(a, b) { return (a != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
	function cell(d, f) { return ((d "," f) in med) ? sprintf("%.0f", med[d "," f]) : "-" }
	END {
		split("import60k run60k diff6k diff60k diff120k commit6k commit60k commit120k build60k", order, " ")
		print "# Big-image benchmark (issue #12)\n" > md
		printf "%s, %s; %s rounds, medians in ms; %d s.\n\n", when, host, rounds, secs > md
		print "| figure | ploop | overlay2 | vfs | ploop/overlay2 | ploop/vfs |" (full ? " ploop, PGD_TRACK=0 |" : "") > md
		print "|---|---|---|---|---|---|" (full ? "---|" : "") > md
		print "figure,ploop_ms,overlay2_ms,vfs_ms,ratio_overlay2,ratio_vfs" (full ? ",ploopfull_ms" : "") > csv
		for (i = 1; i <= 9; i++) {
			f = order[i]
			if (!(f in figs)) continue
			p = cell("ploop", f); o = cell("overlay2", f); v = cell("vfs", f)
			ro = r(med["ploop," f], med["overlay2," f]); rv = r(med["ploop," f], med["vfs," f])
			x = full ? cell("ploopfull", f) : ""
			printf "| %s | %s | %s | %s | %s | %s |%s\n", f, p, o, v, ro, rv, (full ? " " x " |" : "") > md
			printf "%s,%s,%s,%s,%s,%s%s\n", f, p, o, v, ro, rv, (full ? "," x : "") > csv
		}
		print "\nTargets:\n" > md
		t["commit60k"] = 1.2; t["diff60k"] = 1.0; t["build60k"] = 1.2
		split("commit60k diff60k build60k", tg, " ")
		for (i = 1; i <= 3; i++) {
			f = tg[i]; x = r(med["ploop," f], med["overlay2," f])
			if (x == "-") continue
			printf "- %s ploop/overlay2 %s <= %.1f: %s\n", f, x, t[f], (x + 0 <= t[f]) ? "PASS" : "MISS by " sprintf("%.0f%%", (x / t[f] - 1) * 100) > md
		}
		split("diff commit", gr, " ")
		for (i = 1; i <= 2; i++) {
			x = r(med["ploop," gr[i] "120k"], med["ploop," gr[i] "6k"])
			if (x == "-") continue
			printf "- ploop %s 120k/6k %s <= 1.2: %s\n", gr[i], x, (x + 0 <= 1.2) ? "PASS" : "MISS by " sprintf("%.0f%%", (x / 1.2 - 1) * 100) > md
		}
	}' "$W/stats.csv"
# the chart: bench/ratios.gp on the ratio columns (a missing ratio is NaN)
awk -F, 'NR > 1 {
	t = $1 == "commit60k" ? 1.2 : $1 == "diff60k" ? 1.0 : $1 == "build60k" ? 1.2 : "NaN"
	printf "\"%s\" %s %s %s\n", $1, ($5 == "-" ? "NaN" : $5), ($6 == "-" ? "NaN" : $6), t
}' "$BENCH_OUT/bigimage.csv" >"$W/bigratios.dat"
if command -v gnuplot >/dev/null &&
	gnuplot -e "dat='$W/bigratios.dat'; out='$BENCH_OUT/bigimage.png.tmp'" "$BENCH_DIR/ratios.gp"; then
	mv "$BENCH_OUT/bigimage.png.tmp" "$BENCH_OUT/bigimage.png"
fi
cat "$BENCH_OUT/bigimage.md"
log "results in $BENCH_OUT/bigimage.{csv,md,raw.csv}"
[ -z "$FAILED" ] || fail "failed:$FAILED"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/profile.sh [BUILD]: where the milliseconds of ploop go. Not part of `make
# bench` (tracing slows everything down); run it by hand. It starts a ploop and an
# overlay2 dockerd side by side (tests/e2e/lib.sh) and then:
#   1. untraced `docker run --rm` on both, alternating (the reference times);
#   2. the same runs on ploop with a light strace of the plugin and of the image
#      servers it forks (seccomp-bpf filtered: sockets, process, mount, loop, fsync),
#      then create/rm, commit and diff: per-call latency of every GraphDriver call,
#      the calls and mount cycles of one `docker run`, and the timeline of one run;
#   3. `strace -c -w -f` of the plugin during a mixed batch (wall time per syscall);
#   4. `perf record -a` during runs on ploop, then on overlay2: CPU per run by
#      command, and the plugin's hottest symbols.
# Writes the report to stdout and to $PROF_OUT (default bench/results/profile.txt).
#
# Environment: PROF_RUNS (default 10), PROF_OUT, PROF_KEEP=1 (keep the raw traces in
# bench/results/profile-raw/).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${BUILD:-$BENCH_DIR/../build}}
E2E_TIMEOUT=${E2E_TIMEOUT:-120}
PROF_RUNS=${PROF_RUNS:-10}
PROF_OUT=${PROF_OUT:-$BENCH_DIR/results/profile.txt}

# shellcheck source=tests/e2e/lib.sh
. "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

e2e_setup
W=""
bench_init
declare -A DIR=()
DRIVERS=()
TRACER=""                  # pid of a running strace/perf, stopped by the EXIT trap
REPORT=$W/report.txt
: >"$REPORT"

# The teardown of lib.sh must not find a tracer still attached to the plugin.
stop_tracer() {
	[ -n "$TRACER" ] || return 0
	kill -INT "$TRACER" 2>/dev/null || true
	wait_pid_gone "$TRACER" 30 || kill -KILL "$TRACER" 2>/dev/null || true
	wait "$TRACER" 2>/dev/null || true
	TRACER=""
}
trap 'stop_tracer; e2e_teardown' EXIT

say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# mark WHAT CMD...: run CMD, append "WHAT start end" (epoch seconds) to $W/marks.
mark() {
	local what=$1 t0 t1
	shift
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$W/err" || {
		tail -5 "$W/err" >&2
		fail "$what failed: $*"
	}
	t1=$(date +%s%N)
	echo "$what $t0 $t1" | awk '{printf "%s %.6f %.6f\n", $1, $2 / 1e9, $3 / 1e9}' >>"$W/marks"
}

# ms_stats: median, mean, min, max, n of the numbers on stdin.
ms_stats() {
	sort -g | awk '{v[++n] = $1; s += $1}
		END {if (!n) {print "n=0"; exit}
		m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "median %.1f  mean %.1f  min %.1f  max %.1f  n=%d\n", m, s / n, v[1], v[n], n}'
}

# ---------------------------------------------------------------------------
start_driver ploop || fail "ploop cannot run a container: nothing to profile"
start_driver overlay2 || fail "overlay2 did not start"
for drv in ploop overlay2; do
	use "$drv"
	mark warm dk run --rm --network none busybox:local true
	mark warm dk run --rm --network none busybox:local true
done
PLUGIN=$(cat "${DIR[ploop]}/plugin.pid")

say "# ploop profile ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, kernel $(uname -r), plugin $(git -C "$BENCH_DIR/.." log -1 --format=%h 2>/dev/null || echo '?'))"
say ""

# ---------------------------------------------------------------------------
# 1. untraced reference
: >"$W/marks"
mark_log1=$(log_mark "${DIR[ploop]}/plugin.log")
for ((i = 0; i < PROF_RUNS; i++)); do
	for drv in ploop overlay2; do
		use "$drv"
		mark "$drv" dk run --rm --network none busybox:local true
	done
done
say "## 1. docker run --rm busybox true, untraced (ms, alternating)"
for drv in ploop overlay2; do
	say "$(printf '%-9s' "$drv") $(awk -v d="$drv" '$1 == d {print ($3 - $2) * 1000}' "$W/marks" | ms_stats)"
done
log_since "${DIR[ploop]}/plugin.log" "$mark_log1" >"$W/plugin-log1.txt"
say ""
say "### 1a. the plugin's own debug log over these $PROF_RUNS runs"
say "calls per run: $(awk '$2 == "debug" && $3 ~ /^\/GraphDriver\./ {sub(/:$/, "", $3); c[$3]++}
	END {for (k in c) printf "%s %.1f, ", substr(k, 14), c[k] / r}' r="$PROF_RUNS" "$W/plugin-log1.txt")"
# "mounted X at Y via /dev/loopN (ms since start: server ready A, loop B, mkfs C, mounted D)"
awk '$3 == "mounted" && /ms since start/ {
		l = $0; sub(/.*server ready /, "", l); gsub(/[a-z(),]+/, " ", l); split(l, t, " ")
		print t[1], t[2] - t[1], (t[3] ? t[3] - t[2] : 0), t[4] - (t[3] ? t[3] : t[2]), t[4] }' \
	"$W/plugin-log1.txt" >"$W/mounts1.txt"
say "mounts per run: $(awk -v r="$PROF_RUNS" 'END {printf "%.1f", NR / r}' "$W/mounts1.txt"); per mount (ms):"
say "  server spawned and ready  $(awk '{print $1}' "$W/mounts1.txt" | ms_stats)"
say "  loop device attached      $(awk '{print $2}' "$W/mounts1.txt" | ms_stats)"
say "  ext4 mounted              $(awk '{print $4}' "$W/mounts1.txt" | ms_stats)"
say "  whole mount               $(awk '{print $5}' "$W/mounts1.txt" | ms_stats)"
say "unmounts per run: $(awk -v r="$PROF_RUNS" '$3 == "unmounted" && / in [0-9]+ ms$/ {n++} END {printf "%.1f", n / r}' "$W/plugin-log1.txt"); per unmount (ms):"
say "  whole unmount             $(awk '$3 == "unmounted" && / in [0-9]+ ms$/ {print $(NF - 1)}' "$W/plugin-log1.txt" | ms_stats)"
say ""

# ---------------------------------------------------------------------------
# 2. light strace of the plugin and its image servers
use ploop
: >"$W/marks"
mark_log=$(log_mark "$D/plugin.log")
strace --seccomp-bpf -f -ttt -T -yy -s 400 -o "$W/strace.txt" -p "$PLUGIN" \
	-e trace=accept,accept4,recvfrom,recvmsg,sendto,sendmsg,writev,close,shutdown,execve,clone,clone3,fork,vfork,wait4,waitid,mount,umount2,ioctl,fsync,fdatasync,syncfs,sync,sync_file_range,fallocate,ftruncate,renameat2,rename,unlinkat,linkat,mkdirat \
	2>"$W/strace.err" &
TRACER=$!
for ((n = 0; n < 50; n++)); do
	grep -q 'attached' "$W/strace.err" 2>/dev/null && break
	sleep 0.1
done
sleep 0.5
for ((i = 0; i < PROF_RUNS; i++)); do
	mark run dk run --rm --network none busybox:local true
done
for ((i = 0; i < 3; i++)); do
	mark create dk create --name "pc$i" --network none busybox:local true
	mark rm dk rm "pc$i"
done
for ((i = 0; i < 3; i++)); do
	dk run --name "pw$i" --network none busybox:local dd if=/dev/urandom of=/f1m bs=1M count=1 >/dev/null 2>&1
	mark commit dk commit "pw$i" "pw:$i"
	mark diff dk diff "pw$i"
	dk rm "pw$i" >/dev/null
	dk rmi "pw:$i" >/dev/null
done
mark start dk run -d --name pd --network none busybox:local sleep 600
mark stop dk kill pd
mark rm dk rm pd
sleep 0.3
stop_tracer
log_since "$D/plugin.log" "$mark_log" >"$W/plugin-log.txt"
awk -f "$BENCH_DIR/calls.awk" "$W/strace.txt" | sort -k2,2g >"$W/calls.txt"

# Every HTTP call and event, tagged with the CLI command (mark) it happened in.
awk 'FNR == NR {ms[++m] = $1; m0[m] = $2; m1[m] = $3; next}
	{w = "-"; for (i = 1; i <= m; i++) if ($2 >= m0[i] && $2 <= m1[i]) {w = ms[i] "#" i; break}
	 print w, $0}' "$W/marks" "$W/calls.txt" >"$W/tagged.txt"

say "## 2. GraphDriver calls seen by the plugin (strace -f, seccomp-filtered; server-side: accept to close)"
say ""
say "### 2a. latency per call, all CLI commands pooled (ms)"
awk '$2 == "C" {print $5, ($4 - $3) * 1000}' "$W/tagged.txt" | sort -k1,1 -k2,2g | awk '
	function flush() { if (!n) return
		m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%-28s n=%-4d median %8.2f  mean %8.2f  max %8.2f  total %9.1f\n", k, n, m, s / n, v[n], s
		n = 0; s = 0 }
	$1 != k {flush(); k = $1} {v[++n] = $2; s += $2} END {flush()}' | tee -a "$REPORT"
say ""
say "### 2b. per CLI command: GraphDriver calls (count) and plugin time, medians over the commands"
awk '$2 == "C" && $1 != "-" {split($1, a, "#"); seq[$1] = seq[$1] " " $5; tot[$1] += ($4 - $3) * 1000; kind[$1] = a[1]}
	END {for (c in seq) print kind[c], c, tot[c], seq[c]}' "$W/tagged.txt" | sort -k1,1 -k2,2 >"$W/percmd.txt"
for what in run create rm commit diff start stop; do
	cli=$(awk -v w="$what" '$1 == w {print ($3 - $2) * 1000}' "$W/marks" | ms_stats)
	plug=$(awk -v w="$what" '$1 == w {print $3}' "$W/percmd.txt" | ms_stats)
	seq=$(awk -v w="$what" '$1 == w {$1 = $2 = $3 = ""; print}' "$W/percmd.txt" | sort | uniq -c | sort -rn | head -1 |
		sed 's/^ *//; s/  */ /g')
	say "$(printf '%-7s CLI   %s' "$what" "$cli")"
	say "$(printf '%-7s calls %s' "" "$plug")"
	say "        sequence (most common; count: calls): $seq"
done
say ""
say "### 2c. events inside the calls, per call kind (count per call, ms per call; medians over calls)"
# attribute each event to the call whose [start, end] holds its start time
awk '$2 == "C" {n++; cs[n] = $3; ce[n] = $4; cm[n] = $5; next}
	$2 == "E" {for (i = n; i >= 1; i--) if ($3 >= cs[i] && $3 <= ce[i]) {
		key = cm[i] SUBSEP $6; cnt[i, $6]++; dur[i, $6] += $4 * 1000; kinds[$6] = 1; break }}
	END {for (i = 1; i <= n; i++) for (k in kinds) print cm[i], k, cnt[i, k] + 0, dur[i, k] + 0, i}' \
	"$W/tagged.txt" 2>/dev/null | sort -k1,1 -k2,2 -k4,4g | awk '
	function flush() { if (!n) return
		if (zero < n) printf "%-24s %-26s per call: n %.1f, %7.2f ms (median) %7.2f ms (max)\n", m, k, cn / n, v[int((n + 1) / 2)], v[n]
		n = 0; cn = 0; zero = 0 }
	($1 != m || $2 != k) {flush(); m = $1; k = $2}
	{v[++n] = $4; cn += $3; if ($3 == 0) zero++}
	END {flush()}' | tee -a "$REPORT"
say ""
say "### 2d. timeline of the last traced docker run (ms from the CLI start)"
last=$(awk '$1 == "run" {n = NR} END {print n}' "$W/marks")
read -r _ r0 r1 < <(sed -n "${last}p" "$W/marks")
awk -v a="$r0" -v b="$r1" '($2 == "C" || $2 == "E") && $3 >= a && $3 <= b' "$W/tagged.txt" |
	awk -v a="$r0" '$2 == "C" {printf "%8.1f  %-22s %8.2f ms  %s (HTTP %s)\n", ($3 - a) * 1000, $5, ($4 - $3) * 1000, substr($6, 1, 16), $7}
		$2 == "E" && $6 != "exit" && $6 != "wait" {printf "%8.1f    %-20s %8.2f ms  pid %s %s\n", ($3 - a) * 1000, $6, $4 * 1000, $5, $7}' |
	tee -a "$REPORT"
say "$(printf '%8.1f  CLI returns' "$(awk -v a="$r0" -v b="$r1" 'BEGIN {print (b - a) * 1000}')")"
say ""
say "### 2e. mount cycles and processes per docker run (medians over $PROF_RUNS runs)"
awk '$1 ~ /^run#/ && $2 == "E" {c[$1, $6]++; k[$6] = 1; r[$1] = 1; d[$1, $6] += $4 * 1000}
	END {for (x in k) for (y in r) print x, c[y, x] + 0, d[y, x] + 0}' "$W/tagged.txt" |
	sort -k1,1 -k2,2g | awk '
	function flush() { if (!n) return
		printf "%-30s %5.1f per run   %8.2f ms per run (in the syscalls)\n", k, c[int((n + 1) / 2)], t / n; n = 0; t = 0 }
	$1 != k {flush(); k = $1} {c[++n] = $2; t += $3} END {flush()}' | tee -a "$REPORT"
say ""
say "### 2f. plugin log (--log-level debug) during the traced phase: $(wc -l <"$W/plugin-log.txt") lines; the last 30:"
tail -30 "$W/plugin-log.txt" | cut -c1-220 | tee -a "$REPORT"
say ""

# ---------------------------------------------------------------------------
# 3. strace -c: wall time per syscall over a mixed batch, plugin and image servers
strace -c -w -f -o "$W/strace-c.txt" -p "$PLUGIN" 2>"$W/strace-c.err" &
TRACER=$!
for ((n = 0; n < 50; n++)); do
	grep -q 'attached' "$W/strace-c.err" 2>/dev/null && break
	sleep 0.1
done
sleep 0.5
for ((i = 0; i < 5; i++)); do
	dk run --rm --network none busybox:local true >/dev/null
	dk create --name "sc$i" --network none busybox:local true >/dev/null
	dk rm "sc$i" >/dev/null
done
dk run --name sw --network none busybox:local dd if=/dev/urandom of=/f1m bs=1M count=1 >/dev/null 2>&1
dk commit sw sw:1 >/dev/null
dk diff sw >/dev/null
dk rm sw >/dev/null
dk rmi sw:1 >/dev/null
sleep 0.3
stop_tracer
say "## 3. strace -c -w -f of the plugin (5 x run --rm, 5 x create+rm, 1 commit + diff): wall time in syscalls"
head -30 "$W/strace-c.txt" | tee -a "$REPORT"
say ""

# ---------------------------------------------------------------------------
# 4. perf: CPU per docker run by command, ploop vs overlay2
if command -v perf >/dev/null; then
	say "## 4. perf record -a -F 999 during $PROF_RUNS docker runs: CPU ms per run by command"
	for drv in ploop overlay2; do
		use "$drv"
		perf record -q -F 999 -a -g -o "$W/perf-$drv.data" 2>"$W/perf.err" &
		TRACER=$!
		sleep 1
		t0=$(date +%s%N)
		for ((i = 0; i < PROF_RUNS; i++)); do
			dk run --rm --network none busybox:local true >/dev/null
		done
		t1=$(date +%s%N)
		stop_tracer
		say "### $drv: $PROF_RUNS runs in $(((t1 - t0) / 1000000)) ms (plus 1 s idle before)"
		samples=$(perf report -i "$W/perf-$drv.data" --stdio --sort comm -g none 2>/dev/null | awk '/^# Samples:/ {print $3}')
		perf report -i "$W/perf-$drv.data" --no-children --sort comm --stdio -g none 2>/dev/null |
			awk -v r="$PROF_RUNS" -v s="$samples" '/^ +[0-9.]+%/ {p = $1 + 0; printf "  %-22s %6.2f%%  %7.1f ms CPU per run\n", $2, p, p / 100 * s / 999 * 1000 / r}' |
			head -14 | tee -a "$REPORT"
	done
	say ""
	say "### hottest symbols in ploop-graphdriver processes (plugin + image servers, user and kernel)"
	perf report -i "$W/perf-ploop.data" --no-children --comm ploop-graphdriv --sort dso,sym --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -25 | tee -a "$REPORT"
	say ""
fi

mkdir -p "$(dirname "$PROF_OUT")"
cp "$REPORT" "$PROF_OUT"
if [ "${PROF_KEEP:-0}" = 1 ]; then
	mkdir -p "$BENCH_DIR/results/profile-raw"
	cp "$W"/strace.txt "$W"/calls.txt "$W"/tagged.txt "$W"/marks "$W"/strace-c.txt "$W"/plugin-log.txt \
		"$BENCH_DIR/results/profile-raw/" 2>/dev/null || true
fi
log "report in $PROF_OUT"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/profile.sh [BUILD]: where the milliseconds of ploop go. Not part of `make
# bench` (tracing slows things down); run it by hand. It starts a ploop and an
# overlay2 dockerd side by side (tests/e2e/lib.sh); dockerd reaches the plugin through
# bench/callproxy.c, a relay that timestamps every GraphDriver call. Then:
#   1. untraced: `docker run --rm` on both drivers, alternating, and create/rm,
#      commit, diff, run -d/kill on ploop: the latency of every call (relay), the
#      calls and mount cycles per CLI command, the plugin's own mount/unmount times
#      (its debug log);
#   2. a light strace of the plugin and of the image servers it forks
#      (seccomp-filtered: sockets, processes, mount, loop ioctls, fsync, rename,
#      unlink): what happens inside each call, and the timeline of one `docker run`;
#   3. `strace -c -w -f` of the plugin during a mixed batch (wall time per syscall);
#   4. `perf record`: CPU per docker run by command (system-wide, ploop vs overlay2)
#      and the hottest symbols of the plugin and its image servers.
# Writes the report to stdout and to $PROF_OUT (default bench/results/profile.txt).
#
# Environment: PROF_RUNS (default 10), PROF_OUT, PROF_KEEP=1 (copy the raw traces to
# bench/results/profile-raw/, not committed), PROF_PHASES=1 (phase 1 only).
#
# Known hang of phase 2: with online snapshots (a container layer made on its idle
# -init layer, store/online.c) strace -yy decodes the plugin's close() of the image
# server's control node by a stat of its path, a FUSE request to that very server,
# which strace itself holds stopped. Use PROF_PHASES=1, or abort the FUSE connection
# (/sys/fs/fuse/connections/N/abort) to free them.
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

# A tracer must not stay attached to the plugin during the teardown of lib.sh.
stop_tracer() {
	[ -n "$TRACER" ] || return 0
	kill -INT "$TRACER" 2>/dev/null || true
	wait_pid_gone "$TRACER" 30 || kill -KILL "$TRACER" 2>/dev/null || true
	wait "$TRACER" 2>/dev/null || true
	TRACER=""
}
profile_exit() {
	local rc=$?
	stop_tracer
	(exit "$rc")
	e2e_teardown
}
trap profile_exit EXIT

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
		printf "median %7.1f  mean %7.1f  min %7.1f  max %7.1f  n=%d\n", m, s / n, v[1], v[n], n}'
}

# wait_attached FILE: until a tracer wrote "attached" to FILE (5 s at most).
wait_attached() {
	local n
	for ((n = 0; n < 50; n++)); do
		grep -q 'attached' "$1" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.3
}

# tag CALLS: prefix every C/E line with the CLI command (mark) it started in.
tag() {
	awk 'FNR == NR {ms[++m] = $1; m0[m] = $2; m1[m] = $3; next}
		{w = "-"; for (i = 1; i <= m; i++) if ($2 >= m0[i] && $2 <= m1[i]) {w = ms[i] "#" i; break}
		 print w, $0}' "$W/marks" "$1"
}

# per_command TAGGED: per CLI command kind, the CLI time, the time spent in plugin
# calls and the most common call sequence.
per_command() {
	local what cli plug seq
	awk '$2 == "C" && $1 != "-" {split($1, a, "#"); seq[$1] = seq[$1] " " substr($5, 13); tot[$1] += ($4 - $3) * 1000; kind[$1] = a[1]}
		END {for (c in seq) print kind[c], c, tot[c], seq[c]}' "$1" | sort -k1,1 -k2,2 >"$W/percmd.txt"
	for what in run create rm commit diff start kill; do
		grep -q "^$what " "$W/marks" || continue
		cli=$(awk -v w="$what" '$1 == w {print ($3 - $2) * 1000}' "$W/marks" | ms_stats)
		plug=$(awk -v w="$what" '$1 == w {print $3}' "$W/percmd.txt" | ms_stats)
		seq=$(awk -v w="$what" '$1 == w {$1 = $2 = $3 = ""; print}' "$W/percmd.txt" | sort | uniq -c |
			sort -rn | head -1 | sed 's/^ *//; s/  */ /g')
		say "$(printf '%-7s CLI            %s' "$what" "$cli")"
		say "$(printf '%-7s in plugin calls %s' "" "$plug")"
		say "        calls (n commands: sequence): $seq"
	done
}

# call_latency TAGGED: latency per call kind, pooled.
call_latency() {
	awk '$2 == "C" {print substr($5, 13), ($4 - $3) * 1000}' "$1" | sort -k1,1 -k2,2g | awk '
		function flush() { if (!n) return
			m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
			printf "%-16s n=%-4d median %7.2f  mean %7.2f  min %7.2f  max %7.2f  total %8.1f\n", k, n, m, s / n, v[1], v[n], s
			n = 0; s = 0 }
		$1 != k {flush(); k = $1} {v[++n] = $2; s += $2} END {flush()}' | tee -a "$REPORT"
}

# ---------------------------------------------------------------------------
# set-up: ploop behind the relay, overlay2 beside it

cc -O2 -Wall -D_GNU_SOURCE -pthread -o "$W/callproxy" "$BENCH_DIR/callproxy.c"
e2e_new_instance
DIR[ploop]=$D
use ploop
REAL_SOCK=$D/plugin.sock
E2E_LEGACY_SOCK=$REAL_SOCK e2e_start_plugin
PLUGIN=$(e2e_plugin_pid)
mkdir -p "$E2E_PLUGINS_DIR"
e2e_created_entry "$E2E_PLUGINS_DIR/ploop.sock"
setsid "$W/callproxy" "$E2E_PLUGINS_DIR/ploop.sock" "$REAL_SOCK" "$PLUGIN" \
	>"$W/proxy.txt" 2>"$W/proxy.err" </dev/null 9>&- &
for ((n = 0; n < 50; n++)); do
	[ -S "$E2E_PLUGINS_DIR/ploop.sock" ] && break
	sleep 0.1
done
e2e_start_dockerd ploop
dk import "$W/busybox.tar" busybox:local >/dev/null
DRIVERS+=(ploop)
start_driver overlay2 || fail "overlay2 did not start"
for drv in ploop overlay2; do
	use "$drv"
	mark warm dk run --rm --network none busybox:local true
	mark warm dk run --rm --network none busybox:local true
done

say "# ploop profile ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, kernel $(uname -r), tree $(git -C "$BENCH_DIR/.." log -1 --format=%h 2>/dev/null || echo '?'))"
say ""

# ---------------------------------------------------------------------------
# 1. untraced: CLI times, call latencies through the relay, the plugin's own log
: >"$W/marks"
: >"$W/proxy.txt"
log_mark1=$(log_mark "${DIR[ploop]}/plugin.log")
for ((i = 0; i < PROF_RUNS; i++)); do
	for drv in ploop overlay2; do
		use "$drv"
		mark "$drv" dk run --rm --network none busybox:local true
	done
done
cp "$W/marks" "$W/marks-alt"
use ploop
for ((i = 0; i < 5; i++)); do
	mark create dk create --name "pc$i" --network none busybox:local true
	mark rm dk rm "pc$i"
done
for ((i = 0; i < 5; i++)); do
	dk run --name "pw$i" --network none busybox:local dd if=/dev/urandom of=/f1m bs=1M count=1 >/dev/null 2>&1
	mark commit dk commit "pw$i" "pw:$i"
	mark diff dk diff "pw$i"
	dk rm "pw$i" >/dev/null
	dk rmi "pw:$i" >/dev/null
done
for ((i = 0; i < 3; i++)); do
	mark start dk run -d --name "pd$i" --network none busybox:local sleep 600
	mark kill dk kill "pd$i"
	dk rm "pd$i" >/dev/null
done
sleep 0.2
log_since "${DIR[ploop]}/plugin.log" "$log_mark1" >"$W/plugin-log1.txt"
# from here on the ploop runs are "run" and overlay2's are left out
awk '$1 != "overlay2" {if ($1 == "ploop") $1 = "run"; print}' "$W/marks-alt" >"$W/marks.tmp"
awk '$1 != "ploop" && $1 != "overlay2"' "$W/marks" >>"$W/marks.tmp"
mv "$W/marks.tmp" "$W/marks"
sort -k2,2g "$W/proxy.txt" >"$W/calls1.txt"
tag "$W/calls1.txt" >"$W/tagged1.txt"

say "## 1. untraced (dockerd -> relay -> plugin; the relay adds one Unix-socket hop per call)"
say ""
say "### 1a. docker run --rm busybox true, alternating with overlay2 (ms, CLI wall time)"
for drv in ploop overlay2; do
	say "$(printf '%-9s' "$drv") $(awk -v d="$drv" '$1 == d {print ($3 - $2) * 1000}' "$W/marks-alt" | ms_stats)"
done
say ""
say "### 1b. latency of each GraphDriver call, all commands of phase 1 pooled (ms, accept to end of answer)"
call_latency "$W/tagged1.txt"
say ""
say "### 1c. per CLI command: wall time, time inside plugin calls, call sequence"
per_command "$W/tagged1.txt"
say ""
say "### 1d. the plugin's debug log: mount and unmount inside Get/Put/ApplyDiff/Diff/Changes (ms)"
# "mounted X at Y via /dev/loopN (ms since start: server ready A, loop B, mkfs C, mounted D)"
awk '$3 == "mounted" && /ms since start/ {
		l = $0; sub(/.*server ready /, "", l); gsub(/[a-z(),]+/, " ", l); split(l, t, " ")
		print t[1], t[2] - t[1], (t[3] ? t[3] - t[2] : 0), t[4] - (t[3] ? t[3] : t[2]), t[4] }' \
	"$W/plugin-log1.txt" >"$W/mounts1.txt"
runs=$(grep -c '^run ' "$W/marks")
say "mounts: $(wc -l <"$W/mounts1.txt") in phase 1; Get calls per docker run --rm: $(awk -v r="$runs" \
	'$1 ~ /^run#/ && $2 == "C" && $5 ~ /Get$/ {n++} END {printf "%.1f", n / r}' "$W/tagged1.txt")"
say "  spawn image server until FUSE ready  $(awk '{print $1}' "$W/mounts1.txt" | ms_stats)"
say "  attach loop device                   $(awk '{print $2}' "$W/mounts1.txt" | ms_stats)"
say "  mount ext4                           $(awk '{print $4}' "$W/mounts1.txt" | ms_stats)"
say "  whole mount                          $(awk '{print $5}' "$W/mounts1.txt" | ms_stats)"
# "unmounted X from Y (ms since start: ext4 A, loop B, server C)" (older: "... in N ms")
awk '$3 == "unmounted" && /ms since start: ext4/ {
		l = $0; sub(/.*ms since start: ext4 /, "", l); gsub(/[a-z(),]+/, " ", l); split(l, t, " ")
		print t[1], t[2] - t[1], t[3] - t[2], t[3] }
	$3 == "unmounted" && / in [0-9]+ ms$/ {print "-", "-", "-", $(NF - 1)}' "$W/plugin-log1.txt" >"$W/umounts1.txt"
say "  unmount ext4 (flushes through FUSE)  $(awk '$1 != "-" {print $1}' "$W/umounts1.txt" | ms_stats)"
say "  loop device detached                 $(awk '$1 != "-" {print $2}' "$W/umounts1.txt" | ms_stats)"
say "  FUSE unmounted, server flushed+exited $(awk '$1 != "-" {print $3}' "$W/umounts1.txt" | ms_stats)"
say "  whole unmount                        $(awk '{print $4}' "$W/umounts1.txt" | ms_stats)"
say ""

if [ "${PROF_PHASES:-4}" -lt 2 ]; then
	mkdir -p "$(dirname "$PROF_OUT")"
	cp "$REPORT" "$PROF_OUT"
	log "report in $PROF_OUT (phase 1 only)"
	exit 0
fi

# ---------------------------------------------------------------------------
# 2. light strace of the plugin and the image servers it forks
use ploop
: >"$W/marks"
strace --seccomp-bpf -f -ttt -T -yy -s 400 -o "$W/strace.txt" -p "$PLUGIN" \
	-e trace=accept,accept4,recvfrom,recvmsg,sendto,sendmsg,writev,shutdown,close,execve,clone,clone3,fork,vfork,wait4,waitid,mount,umount2,ioctl,fsync,fdatasync,syncfs,sync,sync_file_range,fallocate,ftruncate,renameat2,rename,unlinkat,linkat,mkdirat,copy_file_range \
	2>"$W/strace.err" 9>&- &
TRACER=$!
wait_attached "$W/strace.err"
for ((i = 0; i < 5; i++)); do
	mark run dk run --rm --network none busybox:local true
done
sleep 0.3
stop_tracer
# the calls as the relay saw them (the strace-side C lines would do too), the events from strace
{
	awk -f "$BENCH_DIR/calls.awk" "$W/strace.txt" | awk '$1 == "E"'
	awk -v a="$(awk 'NR == 1 {print $2}' "$W/marks")" '$1 == "C" && $2 >= a' "$W/proxy.txt"
} | sort -k2,2g >"$W/calls2.txt"
tag "$W/calls2.txt" >"$W/tagged2.txt"

say "## 2. inside the calls (strace -f of the plugin and its image servers: 5 x docker run --rm; slowed by tracing)"
say ""
say "### 2a. CLI and calls under strace (compare with 1a/1b for the tracing overhead)"
per_command "$W/tagged2.txt"
say ""
say "### 2b. syscalls of interest per call kind: count per call and milliseconds per call spent in them"
# each event goes to the call whose [start, end] holds its start time
awk '$2 == "C" {n++; cs[n] = $3; ce[n] = $4; cm[n] = substr($5, 13); next}
	$2 == "E" && $6 != "exit" {for (i = n; i >= 1; i--) if ($3 >= cs[i] && $3 <= ce[i]) {
		cnt[i, $6]++; dur[i, $6] += $4 * 1000; kinds[$6] = 1; break }}
	END {for (i = 1; i <= n; i++) for (k in kinds) print cm[i], k, cnt[i, k] + 0, dur[i, k] + 0}' \
	"$W/tagged2.txt" | sort -k1,1 -k2,2 -k4,4g | awk '
	function flush() { if (!n) return
		if (zero < n) printf "%-16s %-34s n/call %4.1f  ms/call median %6.2f  mean %6.2f\n", m, k, cn / n, v[int((n + 1) / 2)], s / n
		n = 0; cn = 0; zero = 0; s = 0 }
	($1 != m || $2 != k) {flush(); m = $1; k = $2}
	{v[++n] = $4; cn += $3; s += $4; if ($3 == 0) zero++}
	END {flush()}' | tee -a "$REPORT"
say ""
say "### 2c. per docker run: syscalls of interest (plugin + image servers, medians over 5 runs)"
awk '$1 ~ /^run#/ && $2 == "E" && $6 != "exit" {c[$1, $6]++; k[$6] = 1; r[$1] = 1; d[$1, $6] += $4 * 1000}
	END {for (x in k) for (y in r) print x, c[y, x] + 0, d[y, x] + 0}' "$W/tagged2.txt" |
	sort -k1,1 -k2,2g | awk '
	function flush() { if (!n) return
		printf "%-34s %5.1f per run   %7.2f ms per run inside these syscalls\n", k, c[int((n + 1) / 2)], t / n; n = 0; t = 0 }
	$1 != k {flush(); k = $1} {c[++n] = $2; t += $3} END {flush()}' | tee -a "$REPORT"
say ""
say "### 2d. timeline of the last traced docker run (ms from the CLI start; indented: syscalls, with their duration)"
last=$(awk '$1 == "run" {n = NR} END {print n}' "$W/marks")
read -r _ r0 r1 < <(sed -n "${last}p" "$W/marks")
awk -v a="$r0" -v b="$r1" '($2 == "C" || $2 == "E") && $3 >= a && $3 <= b' "$W/tagged2.txt" |
	awk -v a="$r0" '$2 == "C" {printf "%8.1f  %-22s %8.2f ms  %s\n", ($3 - a) * 1000, substr($5, 13), ($4 - $3) * 1000, substr($6, 1, 12) (($6 ~ /-init$/) ? "-init" : "")}
		$2 == "E" && $6 != "exit" {d = $7; if (length(d) > 40) d = substr(d, 1, 12) "..."; printf "%8.1f    %-22s %7.2f ms  pid %s %s\n", ($3 - a) * 1000, $6, $4 * 1000, $5, d}' |
	tee -a "$REPORT"
say "$(printf '%8.1f  CLI returns' "$(awk -v a="$r0" -v b="$r1" 'BEGIN {print (b - a) * 1000}')")"
say ""

# ---------------------------------------------------------------------------
# 3. strace -c: wall time per syscall over a mixed batch, plugin and image servers
strace -c -w -f -o "$W/strace-c.txt" -p "$PLUGIN" 2>"$W/strace-c.err" 9>&- &
TRACER=$!
wait_attached "$W/strace-c.err"
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
say "## 3. strace -c -w -f of the plugin and its image servers (5 x run --rm, 5 x create + rm, 1 commit + diff): wall time in syscalls"
say "(read/poll/futex are mostly threads waiting: the FUSE reader on /dev/fuse, MHD's poll)"
head -32 "$W/strace-c.txt" | tee -a "$REPORT"
say ""

# ---------------------------------------------------------------------------
# 4. perf: CPU per docker run by command, ploop vs overlay2; the plugin's symbols
if command -v perf >/dev/null; then
	say "## 4. perf record -a -F 999 during $PROF_RUNS docker run --rm: CPU ms per run by command"
	say "(system-wide: other work on this VM shows up too; compare the container-stack commands)"
	for drv in ploop overlay2; do
		use "$drv"
		perf record -q -F 999 -a -g -o "$W/perf-$drv.data" 2>"$W/perf.err" 9>&- &
		TRACER=$!
		sleep 0.5
		t0=$(date +%s%N)
		for ((i = 0; i < PROF_RUNS; i++)); do
			dk run --rm --network none busybox:local true >/dev/null
		done
		t1=$(date +%s%N)
		stop_tracer
		say "### $drv: $PROF_RUNS runs in $(((t1 - t0) / 1000000)) ms"
		perf report -i "$W/perf-$drv.data" --no-children --sort comm --stdio -n -g none 2>/dev/null |
			awk -v r="$PROF_RUNS" '/^ +[0-9.]+%/ {printf "  %-22s %7.1f ms CPU per run\n", $3, $2 / 999 * 1000 / r}' |
			head -16 | tee -a "$REPORT"
	done
	say ""
	say "### the plugin and its image servers alone (perf record -p PLUGIN -g, children inherited): $PROF_RUNS docker run --rm"
	use ploop
	perf record -q -F 999 -g -p "$PLUGIN" -o "$W/perf-plugin.data" 2>"$W/perf.err" 9>&- &
	TRACER=$!
	sleep 0.5
	for ((i = 0; i < PROF_RUNS; i++)); do
		dk run --rm --network none busybox:local true >/dev/null
	done
	stop_tracer
	perf report -i "$W/perf-plugin.data" --no-children --sort comm --stdio -n -g none 2>/dev/null |
		awk -v r="$PROF_RUNS" '/^ +[0-9.]+%/ {printf "  %-22s %7.1f ms CPU per run\n", $3, $2 / 999 * 1000 / r}' |
		tee -a "$REPORT"
	say "hottest symbols (share of the plugin's and servers' samples):"
	perf report -i "$W/perf-plugin.data" --no-children --sort sym --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -25 | tee -a "$REPORT" || true
	say ""
fi

# ---------------------------------------------------------------------------
# 5. the image server: cost of exec'ing the plugin binary, and what it keeps resident
use ploop
say "## 5. the image server process (one per mounted layer)"
say "shared libraries of ploop-graphdriver: $(ldd "$D/bin/ploop-graphdriver" | grep -c '=>')"
if command -v perf >/dev/null; then
	for cmd in "$D/bin/ploop-graphdriver --help" "/bin/true"; do
		# shellcheck disable=SC2086 # the command line, split on purpose
		perf stat -r 30 -x, -e task-clock $cmd 2>"$W/pstat.txt" >/dev/null || true
		say "exec + start-up + exit of '${cmd##*/}': $(awk -F, '/task-clock/ {printf "%.2f ms CPU (mean of 30)", $1}' "$W/pstat.txt")"
	done
fi
mark start dk run -d --name pm --network none busybox:local sleep 600
sleep 0.5
for p in $(e2e_image_server_pids); do
	say "a running container's server (pid $p, comm $(cat "/proc/$p/comm")): $(awk '/^(Rss|Pss|Locked):/ {printf "%s %d KiB  ", $1, $2}' "/proc/$p/smaps_rollup")"
	say "  resident KiB by mapping (top 10):"
	awk '/^[0-9a-f]+-[0-9a-f]+ / {name = $6 == "" ? "[anon]" : $6} /^Rss:/ {r[name] += $2}
		END {for (n in r) print r[n], n}' "/proc/$p/smaps" | sort -rn | head -10 | sed 's/^/    /' | tee -a "$REPORT"
	break
done
dk kill pm >/dev/null
dk rm pm >/dev/null
say ""

mkdir -p "$(dirname "$PROF_OUT")"
cp "$REPORT" "$PROF_OUT"
if [ "${PROF_KEEP:-0}" = 1 ]; then
	mkdir -p "$BENCH_DIR/results/profile-raw"
	cp "$W"/*.txt "$W"/marks* "$BENCH_DIR/results/profile-raw/" 2>/dev/null || true
fi
log "report in $PROF_OUT"

# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/lib.sh: helpers of bench/run.sh and bench/profile.sh on top of
# tests/e2e/lib.sh: driver instances, memory of a process, and the summary (CSV,
# Markdown, PNG).

# The caller declares: W (work directory), DIR (associative: driver -> instance
# directory) and DRIVERS (the drivers that came up), and has $W/busybox.tar.

# bench_init: after e2e_setup, the work directory W inside the first instance
# directory (which serves no dockerd), with the busybox:local tar.
bench_init() {
	W=$D/bench
	mkdir -p "$W"
	rmdir "$D/root" "$D/exec" "$D/ctrd/root" "$D/ctrd/state" "$D/ctrd" 2>/dev/null || true
	E2E_DRIVER=overlay2 e2e_busybox_tar "$W/busybox.tar" >/dev/null
}

# start_driver DRV: a fresh instance with busybox:local imported and a container run.
# Runs in a subshell so that a `fail` of lib.sh only loses this driver; everything it
# starts is recorded in the instance directory, so the EXIT trap still cleans it up.
start_driver() {
	local drv=$1 rc=0 d
	local flags=${BENCH_PLOOP_FLAGS:-} fv=BENCH_FLAGS_${drv//[^A-Za-z0-9_]/_}
	[ "$drv" = ploop ] || flags=${!fv:-}
	if [[ $drv == ploop* ]] && [ ! -x "$BUILD/ploop-graphdriver" ]; then
		log "warning: no $BUILD/ploop-graphdriver: ploop is not measured"
		return 1
	fi
	e2e_new_instance
	# shellcheck disable=SC2004 # DIR is associative (declared by the caller)
	DIR[$drv]=$D
	use "$drv"
	set +e
	(
		set -e
		if [[ $drv == ploop* ]]; then
			e2e_start_plugin
			# shellcheck disable=SC2086 # flags, split on purpose
			e2e_start_dockerd "$drv" $flags
		else
			E2E_NO_EXPERIMENTAL=1 e2e_start_dockerd
		fi
		dk import "$W/busybox.tar" busybox:local >/dev/null
		dk run --rm --network none busybox:local true
	) 2>"$D/start.err"
	rc=$?
	set -e
	if [ "$rc" -ne 0 ]; then
		log "warning: $drv could not run a container (exit $rc): it is not measured"
		tail -15 "$D/start.err" >&2
		e2e_dump_logs "$D"
		e2e_cleanup_instance "$D"
		# cleaned up: keep the EXIT trap from cleaning it again
		local -a keep=()
		for d in "${E2E_DIRS[@]}"; do [ "$d" = "$D" ] || keep+=("$d"); done
		E2E_DIRS=("${keep[@]}")
		unset "DIR[$drv]"
		return 1
	fi
	DRIVERS+=("$drv")
	log "$drv is up in $D"
}

# use DRV: make DRV's instance the current one for lib.sh (D, E2E_DRIVER).
use() {
	D=${DIR[$1]}
	# shellcheck disable=SC2034 # read by tests/e2e/lib.sh
	E2E_DRIVER=$1
	case $1 in
	ploop*)
		# each ploop instance is its own legacy plugin: /run/docker/plugins/<driver>.sock
		# shellcheck disable=SC2034 # read by tests/e2e/lib.sh
		E2E_PLUGIN_NAME=$1
		# shellcheck disable=SC2034
		E2E_LEGACY_SOCK=$E2E_PLUGINS_DIR/$1.sock
		;;
	esac
}

# smaps_kib PID FIELD: FIELD (Pss, Rss, ...) of /proc/PID/smaps_rollup in KiB, 0 if gone.
smaps_kib() {
	awk -v f="$2:" '$1 == f {print $2; found = 1} END {if (!found) print 0}' \
		"/proc/$1/smaps_rollup" 2>/dev/null || echo 0
}

# The figures: id|label|unit|scale|target. Samples of ms figures are recorded in
# microseconds (scale 1000). A target is "ratio<=X", "ratio>=X" (ploop/overlay2) or
# "abs<=X" (ploop's own median, in the figure's unit), or empty.
bench_figures() {
	cat <<'EOF'
run|docker run --rm busybox true|ms|1000|ratio<=1.2
create|docker create|ms|1000|
rm|docker rm|ms|1000|
create_rm|docker create + docker rm|ms|1000|
import|docker import 200 MiB of random files|ms|1000|ratio<=1.2
commit|docker commit (1 MiB written)|ms|1000|ratio<=1.5
diff|docker diff (1 MiB written)|ms|1000|ratio<=1.5
dd|dd 256 MiB conv=fsync in a container|MiB/s|1|ratio>=0.9
disk|disk per created container|KiB|1|abs<=512
disk_1t|disk per docker create --storage-opt size=1T (grow + resize2fs)|KiB|1|
disk_1t_time|docker create --storage-opt size=1T|ms|1000|
mem|plugin PSS per running container|KiB|1|abs<=4096
mem_rss|plugin RSS per running container|KiB|1|
EOF
}

# stats SAMPLES: driver,figure,median,min,max,n,per-round medians ("a/b/c"), raw units.
stats() {
	sort -t, -k1,1 -k2,2 -k3,3n -k4,4g "$1" | awk -F, '
	function med(a, n,   i, j, t) {
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function flush_round() {
		if (rn) { rounds = rounds (rounds == "" ? "" : "/") med(rv, rn); rn = 0 }
	}
	function flush_key(   m) {
		if (n == 0) return
		flush_round()
		m = med(v, n)
		printf "%s,%s,%s,%s,%s,%d,%s\n", dr, fg, m, v[1], v[n], n, rounds
		n = 0; rounds = ""
	}
	{
		if ($1 != dr || $2 != fg) { flush_key(); dr = $1; fg = $2; rd = $3 }
		if ($3 != rd) { flush_round(); rd = $3 }
		v[++n] = $4 + 0; rv[++rn] = $4 + 0
	}
	END { flush_key() }'
}

# summarize SAMPLES OUTDIR SECONDS DRIVERS...: write OUTDIR/latest.{csv,md,raw.csv,png}
# and print the table, the ratio line and the targets. The first ploop* driver is
# the one the targets and the chart are about; every ploop* driver gets its ratio to
# overlay2 (and to vfs).
summarize() {
	local samples=$1 out=$2 secs=$3 st tmp
	shift 3
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgd-bench-sum.XXXX")
	st=$tmp/stats.csv
	stats "$samples" >"$st"
	{
		echo "driver,figure,round,value"
		cat "$samples"
	} >"$out/latest.raw.csv.tmp" && mv "$out/latest.raw.csv.tmp" "$out/latest.raw.csv"
	bench_figures | awk -F'|' -v st="$st" -v csv="$out/latest.csv.tmp" -v md="$out/latest.md.tmp" \
		-v dat="$tmp/ratios.dat" -v secs="$secs" -v ndisk="${BENCH_DISK_N:-20}" -v drivers="$*" \
		-v when="$(date -u '+%Y-%m-%d %H:%M UTC')" -v flags="${BENCH_PLOOP_FLAGS:-}" \
		-v host="$(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)" '
	function fmt(x, unit) {
		if (x == "") return "–"
		if (unit == "ms") return x < 100 ? sprintf("%.1f", x) : sprintf("%.0f", x)
		return sprintf("%.0f", x)
	}
	function rfmt(x) { return x == "" ? "–" : sprintf("%.2f", x) }
	function asc(x) { gsub(/–/, "-", x); gsub(/≤/, "<=", x); gsub(/≥/, ">=", x); gsub(/×/, "x", x); return x }
	function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
	BEGIN {
		FS = ","
		while ((getline line < st) > 0) {
			split(line, f, ",")
			k = f[1] SUBSEP f[2]
			have[k] = 1; medv[k] = f[3]; minv[k] = f[4]; maxv[k] = f[5]; nv[k] = f[6]; rounds[k] = f[7]
		}
		FS = "|"
		nd = split(drivers, drv, " ")
		main = ""; np = 0
		for (i = 1; i <= nd; i++) {
			if (drv[i] ~ /^ploop/) { pl[++np] = i; if (main == "") main = i }
			if (drv[i] == "overlay2") io = i
			if (drv[i] == "vfs") iv = i
		}
		nr = 0
		for (j = 1; j <= np; j++) {
			if (io) { rn[++nr] = drv[pl[j]] "/overlay2"; ra[nr] = pl[j]; rb[nr] = io }
			if (iv) { rn[++nr] = drv[pl[j]] "/vfs"; ra[nr] = pl[j]; rb[nr] = iv }
		}
		print "driver,figure,unit,median,min,max,n,per_round_medians" > csv
		hdr = "| figure | unit |"; sep = "|---|---|"
		printf "%-40s %-6s", "figure (median)", "unit"
		for (i = 1; i <= nd; i++) { hdr = hdr " " drv[i] " |"; sep = sep "---|"; printf " %9s", substr(drv[i], 1, 9) }
		for (r = 1; r <= nr; r++) { hdr = hdr " " rn[r] " |"; sep = sep "---|"; x = rn[r]; sub(/overlay2/, "ovl2", x); sub(/^ploop/, "p", x); printf " %9s", substr(x, 1, 9) }
		printf "  %-17s %s\n", "target", "result"
		print hdr " target | result |" > md
		print sep "---|---|" > md
	}
	{
		id = $1; label = $2; unit = $3; scale = $4; target = $5
		for (i = 1; i <= nd; i++) {
			k = drv[i] SUBSEP id
			m[i] = ""; cell[i] = "–"
			if (!(k in have)) continue
			m[i] = medv[k] / scale
			rr = rounds[k]
			if (scale != 1) {
				cnt = split(rounds[k], pr, "/"); rr = ""
				for (j = 1; j <= cnt; j++) rr = rr (j > 1 ? "/" : "") sprintf("%.1f", pr[j] / scale)
			}
			printf "%s,%s,%s,%s,%s,%s,%d,%s\n", drv[i], id, unit, fmt(m[i], unit), fmt(minv[k] / scale, unit), fmt(maxv[k] / scale, unit), nv[k], rr > csv
			cell[i] = sprintf("%s (%s–%s, n=%d)", fmt(m[i], unit), fmt(minv[k] / scale, unit), fmt(maxv[k] / scale, unit), nv[k])
		}
		for (r = 1; r <= nr; r++) rv[r] = ratio(m[ra[r]], m[rb[r]])
		tg = "–"; res = ""
		if (target != "" && main) {
			split(target, t, /<=|>=/); lim = t[2] + 0; ge = index(target, ">=") > 0
			val = (t[1] == "ratio") ? ratio(m[main], io ? m[io] : "") : m[main]
			if (t[1] == "ratio") tg = (ge ? "≥ " : "≤ ") lim "× overlay2"
			else tg = (ge ? "≥ " : "≤ ") lim " " unit
			if (val == "") res = "n/a"
			else res = ((ge && val >= lim) || (!ge && val <= lim)) ? "PASS" : "MISS"
			results = results asc(sprintf("  %-4s %s: %s (target %s)\n", res, label, t[1] == "ratio" ? rfmt(val) "×" : fmt(val, unit) " " unit, tg))
		}
		printf "%-40s %-6s", label, unit
		line = "| " label " | " unit " |"
		for (i = 1; i <= nd; i++) { printf " %9s", asc(fmt(m[i], unit)); line = line " " (i == main ? "**" cell[i] "**" : cell[i]) " |" }
		for (r = 1; r <= nr; r++) { printf " %9s", asc(rfmt(rv[r])); line = line " " rfmt(rv[r]) " |" }
		printf "  %-17s %s\n", asc(tg), res
		print line " " tg " | " (res == "" ? "" : "**" res "**") " |" > md
		if (unit != "KiB") {
			for (r = 1; r <= nr; r++) rl[r] = rl[r] sprintf(" %s %s", id, rfmt(rv[r]))
			short = id == "create_rm" ? "create+rm" : id == "dd" ? "dd (MiB/s)" : id == "run" ? "run --rm" : id
			if (id != "create" && id != "rm" && main)
				printf "\"%s\" %s %s %s\n", short, io && m[io] ? m[main] / m[io] : "NaN", iv && m[iv] ? m[main] / m[iv] : "NaN", target ~ /^ratio/ ? lim : "NaN" > dat
		}
	}
	END {
		line = ""
		for (r = 1; r <= nr; r++) line = line (r > 1 ? " | " : "") "ratios " rn[r] ":" rl[r]
		print ""
		print asc(line)
		print ""
		print "targets (" (main ? drv[main] : "ploop") "):"
		printf "%s", results
		print "" > md
		print "`" line "`" > md
		print "" > md
		printf "Medians (min–max, n) of `make bench` on %s, %s; the whole run took %d s. Times are wall-clock times of the docker CLI (20.10) against private dockerds running side by side; the drivers alternate batch by batch. dd is MiB/s (higher is better); disk is `du` of the driver storage after %s creates, per container; memory is the plugin and image-server PSS added by each running `sleep` container.%s\n", when, host, secs, ndisk, flags == "" ? "" : " ploop ran with " flags "." > md
	}'
	mv "$out/latest.csv.tmp" "$out/latest.csv"
	mv "$out/latest.md.tmp" "$out/latest.md"
	if ! command -v gnuplot >/dev/null; then
		log "warning: no gnuplot (apt-get install gnuplot-nox): no latest.png"
	elif [ -s "$tmp/ratios.dat" ]; then
		if gnuplot -e "dat='$tmp/ratios.dat'; out='$out/latest.png.tmp'" "$BENCH_DIR/ratios.gp"; then
			mv "$out/latest.png.tmp" "$out/latest.png"
		else
			log "warning: gnuplot failed"
		fi
	fi
	rm -rf "$tmp"
}

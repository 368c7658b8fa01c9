#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Load through dockerd: 100 containers created, started (all running at once),
# stopped, inspected (docker diff, docker cp) and removed, each phase in parallel.
# Every docker command must exit 0 and the plugin must answer every call with 200.
# Afterwards nothing of them is left: the plugin's open fds are back to their count
# before the run, and there is no extra loop device, mount under the data root, image
# server or layer directory. Durations are logged, never asserted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup
is_ploop || skip "t_stress measures the ploop plugin"

N=${E2E_STRESS_CONTAINERS:-100}
P=${E2E_STRESS_PARALLEL:-8} # docker CLI calls in flight at once (create, start, diff, cp)
SETTLE=${E2E_STRESS_SETTLE:-120} # safety bound in s for idle mounts to go (never a limit)

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null
home=$D/root/$(e2e_driver_flag)
plugin=$(e2e_plugin_pid)
names=()
for ((i = 1; i <= N; i++)); do names+=("$(printf 'stress-%03d' "$i")"); done

# What the plugin holds, one line each; equal before and after the run means no leak.
holdings() {
	echo "plugin fds: $(find "/proc/$plugin/fd" -mindepth 1 -maxdepth 1 | wc -l)"
	echo "loop devices: $(loops_under "$D" | sort | tr '\n' ' ')"
	echo "mounts under the data root: $(mounts_under "$D/root" | sort | tr '\n' ' ')"
	echo "image servers: $(e2e_image_server_pids | tr '\n' ' ')"
	local s
	for s in layers mnt run staging; do
		echo "$s/: $(find "$home/$s" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort | tr '\n' ' ')"
	done
}

# until_holdings_are EXPECTED: poll until holdings prints EXPECTED (a layer stays mounted
# for the plugin's linger time after its last Put, and a connection closes just after
# its answer); after SETTLE seconds, fail with both. Prints the wait in ms.
until_holdings_are() {
	local t0 now
	t0=$(now_ms)
	while now=$(holdings) && [ "$now" != "$1" ]; do
		if [ $(($(now_ms) - t0)) -gt $((SETTLE * 1000)) ]; then
			log "FAIL: still held ${SETTLE}s after the run:"
			diff <(printf '%s\n' "$1") <(printf '%s\n' "$now") | sed 's/^/  /' >&2
			exit 1
		fi
		sleep 0.2
	done
	echo $(($(now_ms) - t0))
}

# each WHAT FUNCTION: run FUNCTION NAME for every container name in P lanes (P calls in
# flight at once) and fail the test unless every one exits 0 (showing the output of
# those that did not).
each() {
	local what=$1 fn=$2 lane name rc failed=0 t0
	local -a lanes=()
	mkdir -p "$D/each"
	t0=$(now_ms)
	for ((lane = 0; lane < P; lane++)); do
		(
			for ((i = lane; i < N; i += P)); do
				name=${names[i]}
				rc=0
				"$fn" "$name" >"$D/each/$what.$name.out" 2>&1 || rc=$?
				echo "$rc" >"$D/each/$what.$name.rc"
			done
		) &
		lanes+=($!)
	done
	# only the lanes: the daemons are background jobs of this shell too
	wait "${lanes[@]}" || true
	for name in "${names[@]}"; do
		rc=$(cat "$D/each/$what.$name.rc" 2>/dev/null || echo "none")
		[ "$rc" = 0 ] && continue
		failed=$((failed + 1))
		log "$what $name: exit $rc: $(tail -5 "$D/each/$what.$name.out" | tr '\n' ' ')"
	done
	[ "$failed" = 0 ] || fail "$what: $failed of $N commands failed"
	log "ok: $what of $N containers, $P at a time: $(($(now_ms) - t0)) ms"
}

create_one() {
	# shellcheck disable=SC2016 # $NAME expands in the container
	dk create --name "$1" --network none -e "NAME=$1" busybox:local \
		sh -c 'echo "$NAME" >/ran; trap "exit 0" TERM; sleep 3600 & wait'
}
start_one() { dk start "$1"; }
diff_one() {
	local out
	out=$(dk diff "$1")
	[ "$out" = "A /ran" ] || {
		echo "docker diff $1: '$out', expected 'A /ran'"
		return 1
	}
}
cp_one() {
	local out
	out=$(dk cp "$1:/ran" - | tar -xOf -)
	[ "$out" = "$1" ] || {
		echo "/ran of $1 holds '$out'"
		return 1
	}
}

# the baseline, once the import's layer is no longer mounted
before=$(
	t0=$(now_ms)
	while [ -n "$(e2e_image_server_pids)" ] && [ $(($(now_ms) - t0)) -lt $((SETTLE * 1000)) ]; do
		sleep 0.2
	done
	holdings
)
log "before the run:"
printf '  %s\n' "$before" >&2
mark=$(log_mark "$D/plugin.log")
t_run=$(now_ms)

each create create_one
each start start_one
running=$(dk ps -q | grep -c . || true)
assert_eq "$N" "$running" "$N containers running at once"
log "while they run: $(mounts_under "$home" | grep -c . || true) mounts under Home," \
	"$(loops_under "$D" | grep -c . || true) loop devices," \
	"$(e2e_image_server_pids | grep -c . || true) image servers," \
	"plugin fds $(find "/proc/$plugin/fd" -mindepth 1 -maxdepth 1 | wc -l)"

t0=$(now_ms)
run_ok "docker stop of all $N at once" dk stop -t 120 "${names[@]}" >/dev/null
log "stop of $N: $(($(now_ms) - t0)) ms"
codes=$(dk inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${names[@]}" | sort | uniq -c | sed 's/^ *//')
assert_eq "$N exited 0" "$codes" "every container ran and exited 0 on SIGTERM"

each diff diff_one
each cp cp_one

# the layers of the containers, to look for afterwards (and proof they existed)
ids=$(
	for f in "$D/root/image/$(e2e_driver_flag)/layerdb/mounts"/*/mount-id \
		"$D/root/image/$(e2e_driver_flag)/layerdb/mounts"/*/init-id; do
		[ -s "$f" ] && printf '%s\n' "$(cat "$f")"
	done
)
assert_eq "$((2 * N))" "$(grep -c . <<<"$ids")" "a layer and an -init layer per container"
present=0
while read -r id; do [ -d "$home/layers/$id" ] && present=$((present + 1)); done <<<"$ids"
assert_eq "$((2 * N))" "$present" "every container layer is under $home/layers"

t0=$(now_ms)
run_ok "docker rm of all $N at once" dk rm "${names[@]}" >/dev/null
log "rm of $N: $(($(now_ms) - t0)) ms"
assert_eq "" "$(dk ps -aq)" "no containers remain"
log "the run took $(($(now_ms) - t_run)) ms"

# every call of the run answered 200
answers=$(log_since "$D/plugin.log" "$mark" |
	sed -nE 's,^[0-9:.]+ [a-z]+ (/GraphDriver\.[A-Za-z]+)[^:]*: ([0-9]{3})( .*|$),\2 \1,p')
log "plugin answers during the run: $(sort <<<"$answers" | uniq -c | awk '{printf "%s %s x%s; ", $3, $2, $1}')"
assert_eq "" "$(grep -v '^200 ' <<<"$answers" || true)" "the plugin answered every call with 200"

# nothing left: the same holdings as before the run
waited=$(until_holdings_are "$before")
log "ok: fds, loop devices, mounts, image servers and layer directories as before the run (after ${waited} ms)"
left=$(find "$home" -xdev -mindepth 2 -maxdepth 2 -printf '%f\n' | grep -F -x -f <(printf '%s\n' "$ids") || true)
assert_eq "" "$left" "no file of the removed containers' layers under $home"
assert_eq "" "$(e2e_image_server_pids)" "no image servers"
pid_alive "$plugin" || fail "the plugin process $plugin is gone"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

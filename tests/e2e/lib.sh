# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/e2e/lib.sh: private containerd + dockerd 20.10 instances for the end-to-end
# tests, as /work/shared/DOCKERD.md describes them, plus the legacy and managed
# ploop-graphdriver plugin around them.
#
# A test sources this file, calls e2e_setup (takes the global e2e lock, makes the
# first instance directory $D and installs the EXIT trap), then e.g.
#     e2e_start_plugin; e2e_start_dockerd; dk run --rm --network none busybox:local true
# The EXIT trap (e2e_teardown) always runs: it stops containers, dockerd, containerd,
# leftover shims (by pid), the plugin and its image servers (by pid), unmounts
# everything under every instance directory, detaches loop devices backed there,
# and removes the /run/docker/plugins entries this test created. After a clean
# stop it also treats anything left behind as a leak and fails the test.
#
# Exit codes of a test: 0 pass, 77 skip, anything else fail.
#
# Environment:
#   BUILD           build directory with ploop-graphdriver (default <repo>/build)
#   E2E_DRIVER      storage driver under test: ploop (default), vfs or overlay2
#   E2E_PLUGIN_NAME legacy plugin name and socket (default ploop)
#   DOCKER_CLI      docker client (default /usr/bin/docker, the 20.10 CLI)
#   E2E_KEEP=1      keep the instance directories (still unmounted) for post-mortem
#   E2E_TIMEOUT     safety timeout in seconds for one docker CLI call (default 300)

E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_REPO=$(cd "$E2E_LIB_DIR/../.." && pwd)
BUILD=${BUILD:-$E2E_REPO/build}
BUILD=$(cd "$BUILD" 2>/dev/null && pwd || echo "$BUILD")
E2E_DRIVER=${E2E_DRIVER:-ploop}
E2E_PLUGIN_NAME=${E2E_PLUGIN_NAME:-ploop}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
E2E_PLUGINS_DIR=/run/docker/plugins
E2E_LEGACY_SOCK=$E2E_PLUGINS_DIR/$E2E_PLUGIN_NAME.sock
E2E_LOCK=/run/lock/pgd-e2e.lock
E2E_TMP_PREFIX=/var/tmp/pgd-e2e

E2E_DIRS=()        # every instance directory this test made, for the teardown
E2E_CLEAN_STOP=1   # cleared when something had to be killed or failed to stop
E2E_LEAKS=0        # leftovers found after a clean stop
D=""               # the current instance directory

# ---------------------------------------------------------------------------
# messages and assertions

e2e_name() { basename "$0" .sh; }
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S.%3N)" "$(e2e_name)" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}
skip() {
	log "SKIP: $*"
	exit 77
}

# assert_eq EXPECTED ACTUAL WHAT
assert_eq() {
	if [ "$1" != "$2" ]; then
		log "FAIL: $3"
		printf -- '--- expected\n%s\n--- actual\n%s\n---\n' "$1" "$2" >&2
		exit 1
	fi
	log "ok: $3"
}

# assert_diff EXPECTED ACTUAL WHAT: `docker diff` output. Our driver must emit the
# order of PROTOCOL.md §10.4 (parents first, names sorted); dockerd's built-in
# drivers use their own walk order, so for them only the set is compared.
assert_diff() {
	if is_ploop; then
		assert_eq "$1" "$2" "$3"
	else
		assert_eq "$(sort <<<"$1")" "$(sort <<<"$2")" "$3 (as a set, for $E2E_DRIVER)"
	fi
}

# assert_range VALUE MIN MAX WHAT: MIN <= VALUE <= MAX (integers).
assert_range() {
	if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt "$2" ] || [ "$1" -gt "$3" ]; then
		fail "$4: $1 is not within [$2, $3]"
	fi
	log "ok: $4 ($1)"
}

# assert_contains HAYSTACK NEEDLE WHAT (fixed string)
assert_contains() {
	if ! grep -qF -- "$2" <<<"$1"; then
		log "FAIL: $3: '$2' not found in:"
		printf '%s\n' "$1" | head -50 >&2
		exit 1
	fi
	log "ok: $3"
}

# assert_not_contains HAYSTACK NEEDLE WHAT (fixed string)
assert_not_contains() {
	if grep -qF -- "$2" <<<"$1"; then
		log "FAIL: $3: '$2' found in:"
		printf '%s\n' "$1" | grep -F -- "$2" | head -20 >&2
		exit 1
	fi
	log "ok: $3"
}

# assert_match STRING ERE WHAT
assert_match() {
	if ! grep -qE -- "$2" <<<"$1"; then
		log "FAIL: $3: '$1' does not match /$2/"
		exit 1
	fi
	log "ok: $3"
}

# run_ok WHAT CMD...: run CMD, fail the test (with its output) unless it exits 0.
run_ok() {
	local what=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" -ne 0 ]; then
		log "FAIL: $what (exit $rc): $*"
		printf '%s\n' "$out" | tail -30 >&2
		exit 1
	fi
	log "ok: $what"
	[ -z "$out" ] || printf '%s\n' "$out"
}

is_ploop() { [ "$E2E_DRIVER" != vfs ] && [ "$E2E_DRIVER" != overlay2 ]; }

# log_mark FILE: its current line count; log_since FILE MARK: the lines after it.
log_mark() { wc -l <"$1" 2>/dev/null || echo 0; }
log_since() { tail -n "+$(($2 + 1))" "$1" 2>/dev/null; }

# Monotonic milliseconds, for timing notes in the log (never asserted).
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# ---------------------------------------------------------------------------
# processes

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
	local st
	[ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# wait_pid_gone PID SECONDS: poll every 0.1 s; false if still alive after SECONDS.
wait_pid_gone() {
	local pid=$1 n=$(($2 * 10))
	while pid_alive "$pid"; do
		[ "$n" -gt 0 ] || return 1
		n=$((n - 1))
		sleep 0.1
	done
	wait "$pid" 2>/dev/null || true
	return 0
}

# stop_pid PID SECONDS NAME: SIGTERM, wait up to SECONDS, then SIGKILL.
# Returns 1 when SIGKILL was needed.
stop_pid() {
	local pid=$1 secs=$2 name=$3
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_pid_gone "$pid" "$secs" && return 0
	log "warning: $name (pid $pid) ignored SIGTERM for ${secs}s; SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	wait_pid_gone "$pid" 10 || log "warning: $name (pid $pid) survives SIGKILL"
	return 1
}

# pid_cmdline PID: the command line with spaces for NULs.
pid_cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline"; }

# children PID: direct children of PID.
children() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(awk '/^PPid:/ {print $2}' "$p/status" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
	done
	return 0
}

# The containerd-shim-runc-v2 processes of instance DIR (their -address is under it).
shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		pid_cmdline "${p#/proc/}" | grep -q "containerd-shim.* -address $1/" && echo "${p#/proc/}"
	done
	return 0
}

# Processes running a binary that lives under DIR: our copy of ploop-graphdriver
# and every image server it started (they exec /proc/self/exe).
dir_binary_pids() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case $exe in "$1"/*) echo "${p#/proc/}" ;; esac
	done
	return 0
}

# Processes in the cgroup of managed plugin ID (pidhost keeps them on the host).
plugin_cgroup_pids() {
	local p
	[ -n "$1" ] || return 0
	for p in /proc/[0-9]*; do
		grep -q "$1" "$p/cgroup" 2>/dev/null && echo "${p#/proc/}"
	done
	return 0
}

# Processes of the managed plugins recorded in DIR/managed-ids.
e2e_managed_pids() {
	local id
	[ -f "$1/managed-ids" ] || return 0
	while read -r id; do plugin_cgroup_pids "$id"; done <"$1/managed-ids"
}

# ---------------------------------------------------------------------------
# mounts and loop devices

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
	awk -v d="$1" 'index($5, d "/") == 1 || $5 == d {print $5}' /proc/self/mountinfo |
		sort -r | uniq
}

# umount_under DIR [KEEP]: unmount everything at or below DIR, deepest first
# (umount, then umount -l). Mounts below KEEP, and their ancestors, are left alone.
umount_under() {
	local dir=$1 keep=${2:-} m round
	for round in 1 2 3; do
		local left=0
		while read -r m; do
			[ -n "$m" ] || continue
			if [ -n "$keep" ]; then
				case $m/ in "$keep"/*) continue ;; esac
				if mounts_under "$keep" | grep -q .; then
					case $keep/ in "$m"/*) continue ;; esac
				fi
			fi
			left=1
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
				log "warning: cannot unmount $m"
		done < <(mounts_under "$dir")
		[ "$left" = 1 ] || return 0
		[ "$round" = 3 ] || sleep 0.2
	done
}

# loops_under DIR: loop devices whose backing file is below DIR.
loops_under() {
	losetup --list --noheadings --output NAME,BACK-FILE 2>/dev/null |
		awk -v d="$1/" 'index($2, d) == 1 {print $1}'
}

# Mounts below DIR that are not FUSE, deepest first: the ext4 layer mounts must go
# before the FUSE files their loop devices read.
nonfuse_mounts_under() {
	awk -v d="$1" '(index($5, d "/") == 1 || $5 == d) && $0 !~ / - fuse/ {print $5}' \
		/proc/self/mountinfo | sort -r | uniq
}

# ---------------------------------------------------------------------------
# setup and teardown

# e2e_setup: take the global lock (one dockerd at a time: /run/docker/plugins is
# global), make the first instance directory and install the traps.
e2e_setup() {
	mkdir -p "$(dirname "$E2E_LOCK")"
	exec 9>"$E2E_LOCK"
	if ! flock -n 9; then
		log "waiting for another e2e test (lock $E2E_LOCK, open in: $(e2e_lock_holders))"
		flock -w 3600 9 || fail "could not take $E2E_LOCK"
	fi
	trap e2e_teardown EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	e2e_new_instance
	log "driver $E2E_DRIVER, instance $D, build $BUILD"
}

# The processes that hold the e2e lock open, for the waiting message.
e2e_lock_holders() {
	local p f
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = "$$" ] && continue
		for f in "$p"/fd/*; do
			if [ "$(readlink "$f" 2>/dev/null)" = "$E2E_LOCK" ]; then
				printf '%s(%s) ' "${p#/proc/}" "$(pid_cmdline "${p#/proc/}" | cut -c1-60)"
				break
			fi
		done
	done
	return 0
}

# e2e_new_instance: a fresh instance directory; $D points at it from now on.
e2e_new_instance() {
	D=$(mktemp -d "$E2E_TMP_PREFIX.XXXX")
	chmod 711 "$D"
	E2E_DIRS+=("$D")
	mkdir -p "$D/root" "$D/exec" "$D/ctrd/root" "$D/ctrd/state"
	: >"$D/created-entries"
}

# Remember a /run/docker/plugins entry this test created, for the teardown.
e2e_created_entry() { echo "$1" >>"$D/created-entries"; }

e2e_dump_logs() {
	local dir=$1 f
	for f in "$dir/dockerd.log" "$dir/plugin.log" "$dir/containerd.log" "$dir/snapshotter.log"; do
		[ -s "$f" ] || continue
		printf -- '----- last lines of %s\n' "$f" >&2
		grep -v -e '\[core\]' -e 'loading plugin' -e 'level=info msg="serving' "$f" | tail -40 >&2
	done
}

# Stop everything of instance DIR and clean it up. Sets E2E_CLEAN_STOP=0 when
# something had to be killed, and counts leaks after a clean stop in E2E_LEAKS.
e2e_cleanup_instance() {
	local dir=$1 pid p m l e
	# 1. containers, then dockerd
	e2e_stop_dockerd_dir "$dir" || E2E_CLEAN_STOP=0
	# 2. containerd
	pid=$(cat "$dir/ctrd/containerd.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && pid_alive "$pid"; then
		stop_pid "$pid" 15 containerd || E2E_CLEAN_STOP=0
	fi
	# 3. leftover shims and the container processes they reap, by pid
	for p in $(shim_pids "$dir"); do
		E2E_CLEAN_STOP=0
		log "leftover shim $p: $(pid_cmdline "$p")"
		e2e_kill_shim "$dir" "$p"
	done
	# 4. the plugin (legacy: we started it; managed: dockerd did), the containerd
	#    snapshotter, and image servers
	pid=$(cat "$dir/snapshotter.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && pid_alive "$pid"; then
		stop_pid "$pid" 30 ploop-snapshotter || E2E_CLEAN_STOP=0
	fi
	pid=$(cat "$dir/plugin.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && pid_alive "$pid"; then
		stop_pid "$pid" 30 ploop-graphdriver || E2E_CLEAN_STOP=0
	fi
	e2e_leak_check "$dir"
	# a registry this test started (e2e_start_registry)
	pid=$(cat "$dir/registry.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && pid_alive "$pid"; then
		stop_pid "$pid" 15 docker-registry || true
	fi
	for p in $(dir_binary_pids "$dir") $(e2e_managed_pids "$dir"); do
		log "killing leftover plugin process $p: $(pid_cmdline "$p")"
		kill -KILL "$p" 2>/dev/null || true
	done
	# 5. mounts (ext4 on loop first), loop devices, then FUSE mounts and the rest
	while read -r m; do
		[ -n "$m" ] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done < <(nonfuse_mounts_under "$dir")
	for l in $(loops_under "$dir"); do
		losetup -d "$l" 2>/dev/null || log "warning: cannot detach $l"
	done
	umount_under "$dir"
	for l in $(loops_under "$dir"); do
		losetup -d "$l" 2>/dev/null || log "warning: cannot detach $l"
	done
	# 6. /run/docker/plugins entries this test created (never others')
	while read -r e; do
		[ -n "$e" ] || continue
		case $e in "$E2E_PLUGINS_DIR"/?*) ;; *) continue ;; esac
		umount_under "$e"
		rm -rf "$e"
	done <"$dir/created-entries"
	# 6b. runc's state directory of the ctr namespace named after this instance
	#     (lib_snapshotter.sh), empty once its containers are gone
	rmdir "/run/containerd/runc/$(basename "$dir" | tr . -)" 2>/dev/null || true
	# 7. the directory itself, unless something is still mounted there
	if mounts_under "$dir" | grep -q .; then
		log "warning: mounts remain under $dir; not removing it"
		mounts_under "$dir" >&2
	elif [ "${E2E_KEEP:-0}" = 1 ]; then
		log "kept $dir"
	else
		rm -rf "$dir"
	fi
}

# After a clean stop of dockerd and the plugin nothing of ours may remain: mounts,
# loop devices and image-server processes are leaks.
e2e_leak_check() {
	local dir=$1 what
	[ "$E2E_CLEAN_STOP" = 1 ] || return 0
	what=$(
		mounts_under "$dir" | sed 's/^/mount /'
		loops_under "$dir" | sed 's/^/loop device /'
		for p in $(dir_binary_pids "$dir"); do echo "process $p: $(pid_cmdline "$p")"; done
	)
	[ -n "$what" ] || return 0
	E2E_LEAKS=$((E2E_LEAKS + 1))
	log "LEAK after a clean stop of dockerd and the plugin in $dir:"
	printf '  %s\n' "$what" >&2
}

e2e_teardown() {
	local rc=$? dir
	set +e
	trap - EXIT INT TERM HUP
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for dir in "${E2E_DIRS[@]}"; do e2e_dump_logs "$dir"; done
	fi
	for ((i = ${#E2E_DIRS[@]} - 1; i >= 0; i--)); do
		e2e_cleanup_instance "${E2E_DIRS[i]}"
	done
	if [ "$rc" = 0 ] && [ "$E2E_LEAKS" -gt 0 ]; then
		log "FAIL: leftovers after a clean stop (see LEAK above)"
		rc=1
	fi
	case $rc in
	0) log "PASS" ;;
	77) ;;
	*) log "FAILED (exit $rc)" ;;
	esac
	exit "$rc"
}

# ---------------------------------------------------------------------------
# containerd and dockerd

# dk ARGS...: the docker CLI against the current instance, with a safety timeout.
dk() { timeout "$E2E_TIMEOUT" "$DOCKER_CLI" -H "unix://$D/docker.sock" "$@"; }

e2e_start_containerd() {
	local pid n
	pid=$(cat "$D/ctrd/containerd.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && pid_alive "$pid"; then return 0; fi
	cat >"$D/ctrd/config.toml" <<EOF
version = 2
root = "$D/ctrd/root"
state = "$D/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/ctrd/containerd.sock"
[ttrpc]
  address = "$D/ctrd/containerd.sock.ttrpc"
[debug]
  address = "$D/ctrd/containerd-debug.sock"
[metrics]
  address = ""
${E2E_CTRD_EXTRA:-}
EOF
	setsid containerd --config "$D/ctrd/config.toml" >>"$D/containerd.log" 2>&1 </dev/null 9>&- &
	pid=$!
	echo "$pid" >"$D/ctrd/containerd.pid"
	for ((n = 0; n < 300; n++)); do
		[ -S "$D/ctrd/containerd.sock" ] && return 0
		pid_alive "$pid" || break
		sleep 0.1
	done
	tail -20 "$D/containerd.log" >&2
	fail "containerd did not start"
}

# e2e_launch_dockerd [DRIVER] [EXTRA FLAGS...]: start dockerd in the background
# (without waiting); DRIVER defaults to the driver under test. --experimental is
# added unless E2E_NO_EXPERIMENTAL=1.
e2e_launch_dockerd() {
	local driver=${1:-}
	[ $# -gt 0 ] && shift
	[ -n "$driver" ] || driver=$(e2e_driver_flag)
	local -a flags=()
	[ "${E2E_NO_EXPERIMENTAL:-0}" = 1 ] || flags+=(--experimental)
	e2e_start_containerd
	# a failed or crashed earlier start can leave the data-root bound onto itself:
	# unmount dockerd's leftovers, but never the plugin's layers under its Home
	e2e_dockerd_pid_alive && fail "dockerd is already running in $D"
	umount_under "$D/root" "$D/root/$E2E_PLUGIN_NAME"
	rm -f "$D/docker.sock"
	printf '{"deprecated-key-path": "%s"}\n' "$D/key.json" >"$D/daemon.json"
	echo "----- dockerd start $(date +%T.%3N): -s $driver ${flags[*]} $*" >>"$D/dockerd.log"
	setsid dockerd \
		--data-root "$D/root" --exec-root "$D/exec" \
		-H "unix://$D/docker.sock" --pidfile "$D/docker.pid" \
		--config-file "$D/daemon.json" \
		--containerd "$D/ctrd/containerd.sock" \
		--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
		--bridge=none --userland-proxy=false \
		"${flags[@]}" --storage-driver="$driver" "$@" \
		>>"$D/dockerd.log" 2>&1 </dev/null 9>&- &
	echo $! >"$D/dockerd.launch.pid"
}

e2e_driver_flag() {
	if is_ploop; then echo "$E2E_PLUGIN_NAME"; else echo "$E2E_DRIVER"; fi
}

e2e_dockerd_pid_alive() { pid_alive "$(cat "$D/dockerd.launch.pid" 2>/dev/null || true)"; }

# e2e_wait_dockerd: wait until /_ping answers; false when dockerd exited first.
e2e_wait_dockerd() {
	local pid n
	pid=$(cat "$D/dockerd.launch.pid")
	for ((n = 0; n < 1200; n++)); do
		curl -sf --max-time 5 --unix-socket "$D/docker.sock" http://d/_ping >/dev/null 2>&1 && return 0
		pid_alive "$pid" || {
			wait "$pid" 2>/dev/null || true
			return 1
		}
		sleep 0.1
	done
	log "dockerd not ready after 120 s"
	return 1
}

# e2e_start_dockerd [DRIVER] [EXTRA FLAGS...]: start and wait; fail the test if
# dockerd does not come up (or skip, if dockerd cannot run here at all).
e2e_start_dockerd() {
	local t0
	t0=$(now_ms)
	e2e_launch_dockerd "$@"
	if ! e2e_wait_dockerd; then
		tail -30 "$D/dockerd.log" >&2
		e2e_skip_if_dockerd_impossible
		fail "dockerd did not start"
	fi
	log "dockerd ready in $(($(now_ms) - t0)) ms (-s ${1:-$(e2e_driver_flag)})"
}

# dockerd failures that no change of ours can fix mean this machine cannot run the
# e2e tests at all: skip, with the reason.
e2e_skip_if_dockerd_impossible() {
	local why
	why=$(grep -E 'operation not permitted.*(mount|cgroup)|Devices cgroup isn.t mounted|failed to mount overlay.*no such device' \
		"$D/dockerd.log" | tail -1)
	[ -z "$why" ] || skip "dockerd cannot run on this machine: $why"
}

# e2e_stop_dockerd: stop containers, SIGTERM dockerd (SIGKILL after 40 s).
# Returns 1 when SIGKILL was needed.
e2e_stop_dockerd() { e2e_stop_dockerd_dir "$D"; }

e2e_stop_dockerd_dir() {
	local dir=$1 pid ids t0 rc=0
	pid=$(cat "$dir/dockerd.launch.pid" 2>/dev/null || true)
	pid_alive "$pid" || return 0
	ids=$(timeout 60 "$DOCKER_CLI" -H "unix://$dir/docker.sock" ps -q 2>/dev/null || true)
	if [ -n "$ids" ]; then
		# shellcheck disable=SC2086
		timeout 120 "$DOCKER_CLI" -H "unix://$dir/docker.sock" kill $ids >/dev/null 2>&1 || true
	fi
	t0=$(now_ms)
	stop_pid "$pid" 40 dockerd || rc=1
	log "dockerd stopped in $(($(now_ms) - t0)) ms"
	return "$rc"
}

# e2e_restart_dockerd [DRIVER] [FLAGS...]: SIGTERM dockerd WITHOUT stopping the
# containers first (dockerd stops them itself), then start it again.
e2e_restart_dockerd() {
	local pid t0
	pid=$(cat "$D/dockerd.launch.pid")
	t0=$(now_ms)
	stop_pid "$pid" 60 dockerd || fail "dockerd needed SIGKILL"
	log "dockerd stopped (with its containers) in $(($(now_ms) - t0)) ms"
	e2e_start_dockerd "$@"
}

# e2e_kill_shim DIR PID: SIGKILL the container processes a shim reaps, then the shim,
# then remove its socket in /run/containerd/s and the container's cgroups.
e2e_kill_shim() {
	local dir=$1 pid=$2 c id ns hash
	id=$(pid_cmdline "$pid" | sed -n 's/.* -id \([^ ]*\).*/\1/p')
	ns=$(pid_cmdline "$pid" | sed -n 's/.* -namespace \([^ ]*\).*/\1/p')
	for c in $(children "$pid"); do kill -KILL "$c" 2>/dev/null || true; done
	kill -KILL "$pid" 2>/dev/null || true
	wait_pid_gone "$pid" 10 || true
	if [ -n "$id" ] && [ -n "$ns" ]; then
		# containerd 1.6: sha256 of <address>/<namespace>/<id>
		hash=$(printf '%s' "$dir/ctrd/containerd.sock/$ns/$id" | sha256sum | cut -d' ' -f1)
		rm -f "/run/containerd/s/$hash"
		for c in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/*/docker/plugins/"$id"; do
			[ -d "$c" ] && rmdir "$c" 2>/dev/null
		done
	fi
	return 0
}

# ---------------------------------------------------------------------------
# the legacy plugin

# e2e_start_plugin: start our copy of ploop-graphdriver on the legacy socket and wait
# for the socket. Must run BEFORE dockerd. The binary is copied into $D/bin so that
# a concurrent rebuild cannot swap it, and so that its image servers (which exec
# /proc/self/exe) are recognisable by their executable path.
e2e_start_plugin() {
	local pid n
	is_ploop || return 0
	[ -x "$BUILD/ploop-graphdriver" ] || fail "no $BUILD/ploop-graphdriver: build it first (make)"
	if [ ! -x "$D/bin/ploop-graphdriver" ]; then
		mkdir -p "$D/bin"
		cp "$BUILD/ploop-graphdriver" "$D/bin/ploop-graphdriver"
		# the lean image server, started instead of "ploop-graphdriver serve-image"
		if [ -x "$BUILD/ploop-graphdriver-serve-image" ]; then
			cp "$BUILD/ploop-graphdriver-serve-image" "$D/bin/"
		fi
	fi
	mkdir -p "$E2E_PLUGINS_DIR"
	if [ -e "$E2E_LEGACY_SOCK" ] && e2e_own_plugin_alive; then
		fail "a plugin of this test still serves $E2E_LEGACY_SOCK: e2e_stop_plugin first"
	fi
	if [ -e "$E2E_LEGACY_SOCK" ] && ! e2e_own_entry "$E2E_LEGACY_SOCK"; then
		if curl -s --max-time 5 --unix-socket "$E2E_LEGACY_SOCK" -X POST http://d/Plugin.Activate >/dev/null 2>&1; then
			fail "$E2E_LEGACY_SOCK is served by another process (not ours); set E2E_PLUGIN_NAME"
		fi
		# nobody listens: a stale socket of a killed plugin (DOCKERD.md §3)
		log "removing stale socket $E2E_LEGACY_SOCK"
		rm -f "$E2E_LEGACY_SOCK"
	fi
	grep -qxF "$E2E_LEGACY_SOCK" "$D/created-entries" || e2e_created_entry "$E2E_LEGACY_SOCK"
	echo "----- plugin start $(date +%T.%3N)" >>"$D/plugin.log"
	setsid "$D/bin/ploop-graphdriver" --socket "$E2E_LEGACY_SOCK" --state "$D/state.json" \
		--log-level debug >>"$D/plugin.log" 2>&1 </dev/null 9>&- &
	pid=$!
	echo "$pid" >"$D/plugin.pid"
	for ((n = 0; n < 300; n++)); do
		if [ -S "$E2E_LEGACY_SOCK" ] &&
			curl -s --max-time 5 --unix-socket "$E2E_LEGACY_SOCK" -X POST http://d/Plugin.Activate >/dev/null 2>&1; then
			log "plugin $pid listens on $E2E_LEGACY_SOCK"
			return 0
		fi
		pid_alive "$pid" || break
		sleep 0.1
	done
	tail -30 "$D/plugin.log" >&2
	fail "ploop-graphdriver did not start listening on $E2E_LEGACY_SOCK"
}

e2e_plugin_pid() { cat "$D/plugin.pid"; }

# e2e_own_entry PATH: PATH is a /run/docker/plugins entry one of our instances made.
e2e_own_entry() {
	local dir
	for dir in "${E2E_DIRS[@]}"; do
		grep -qxF "$1" "$dir/created-entries" 2>/dev/null && return 0
	done
	return 1
}

# e2e_own_plugin_alive: a legacy plugin process of any of our instances runs.
e2e_own_plugin_alive() {
	local dir
	for dir in "${E2E_DIRS[@]}"; do
		pid_alive "$(cat "$dir/plugin.pid" 2>/dev/null || true)" && return 0
	done
	return 1
}

# e2e_stop_plugin: SIGTERM the legacy plugin of the current instance and wait (it
# must exit by itself: failing that is a test failure).
e2e_stop_plugin() {
	local pid
	pid=$(cat "$D/plugin.pid" 2>/dev/null || true)
	pid_alive "$pid" || return 0
	stop_pid "$pid" 30 ploop-graphdriver || fail "the plugin ignored SIGTERM for 30 s"
	log "plugin $pid stopped"
}

# e2e_kill_plugin [SIGNAL]: kill the legacy plugin process (default SIGKILL) and wait.
e2e_kill_plugin() {
	local pid
	pid=$(e2e_plugin_pid)
	kill -"${1:-KILL}" "$pid"
	wait_pid_gone "$pid" 30 || fail "plugin $pid did not die"
}

# e2e_plugin_calls MARK: the endpoints the legacy plugin answered since line MARK
# of its log (from its debug lines "/GraphDriver.X: 200"), one a line, in order.
e2e_plugin_calls() {
	log_since "$D/plugin.log" "$1" |
		sed -nE 's,^[0-9:.]+ [a-z]+ /((Plugin|GraphDriver)\.[A-Za-z]+)[^:]*: [0-9]{3}( |$).*,\1,p'
}

# e2e_image_server_pids: our plugin's per-image server processes (not the plugin).
e2e_image_server_pids() {
	local p main
	main=$(cat "$D/plugin.pid" 2>/dev/null || true)
	for p in $(dir_binary_pids "$D"); do [ "$p" = "$main" ] || echo "$p"; done
}

# ---------------------------------------------------------------------------
# a loopback registry (Debian's docker-registry), for `docker plugin push/install`

# e2e_start_registry: serve a registry on 127.0.0.1 (dockerd trusts 127.0.0.0/8
# without TLS) with its storage in $D/registry; sets E2E_REGISTRY to host:port.
e2e_start_registry() {
	local port n pid
	command -v docker-registry >/dev/null || skip "no docker-registry (Debian package docker-registry)"
	for ((n = 0; n < 50; n++)); do
		port=$((20000 + RANDOM % 20000))
		ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || break
	done
	mkdir -p "$D/registry"
	printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
		"$D/registry" "$port" >"$D/registry.yml"
	setsid docker-registry serve "$D/registry.yml" >>"$D/registry.log" 2>&1 </dev/null 9>&- &
	pid=$!
	echo "$pid" >"$D/registry.pid"
	E2E_REGISTRY=127.0.0.1:$port
	for ((n = 0; n < 300; n++)); do
		if curl -sf --max-time 5 "http://$E2E_REGISTRY/v2/" >/dev/null 2>&1; then
			log "registry $pid serves $E2E_REGISTRY"
			return 0
		fi
		pid_alive "$pid" || break
		sleep 0.1
	done
	tail -20 "$D/registry.log" >&2
	fail "docker-registry did not start on $E2E_REGISTRY"
}

# ---------------------------------------------------------------------------
# images

# e2e_busybox_tree DIR: the busybox test tree (DOCKERD.md §5).
e2e_busybox_tree() {
	local b=$1 a
	mkdir -p "$b/bin" "$b/etc" "$b/root" "$b/tmp"
	cp /bin/busybox "$b/bin/busybox"
	for a in $("$b/bin/busybox" --list); do
		[ "$a" = busybox ] || ln -s busybox "$b/bin/$a"
	done
}

# e2e_busybox_tar OUT: write the busybox:local tar to OUT (deterministic order and
# times) and print the sum of its regular files' sizes.
e2e_busybox_tar() {
	local b
	b=$(mktemp -d "$D/bb.XXXX")
	e2e_busybox_tree "$b"
	tar -C "$b" --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -cf "$1" .
	find "$b" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
	rm -rf "$b"
}

# e2e_import_busybox [TAG]: import busybox:local (or TAG); prints the expected size.
e2e_import_busybox() {
	local tag=${1:-busybox:local} size
	size=$(e2e_busybox_tar "$D/busybox.tar")
	dk import "$D/busybox.tar" "$tag" >/dev/null || fail "docker import $tag"
	echo "$size"
}

# ---------------------------------------------------------------------------
# plugin state seen from dockerd's side

# The layer-store IDs dockerd knows of: image layer cache IDs, container mount and
# init IDs, one a line.
e2e_layer_ids() {
	local store
	store=$D/root/image/$(e2e_driver_flag)/layerdb
	local f
	for f in "$store"/sha256/*/cache-id "$store"/mounts/*/mount-id "$store"/mounts/*/init-id; do
		[ -s "$f" ] && printf '%s\n' "$(cat "$f")"
	done
	return 0
}

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Daemon start: `docker info` shows our driver and its Status lines; for a plugin,
# a start without --experimental fails with the documented message.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
pmark=$(log_mark "$D/plugin.log")
e2e_start_dockerd
if is_ploop; then
	# PROTOCOL.md §8.1: Activate, Init, Capabilities, Status (once or twice)
	calls=$(e2e_plugin_calls "$pmark" | head -4 | tr '\n' ' ')
	assert_eq "Plugin.Activate GraphDriver.Init GraphDriver.Capabilities GraphDriver.Status " \
		"$calls" "daemon start calls, in order"
	home_line=$(log_since "$D/plugin.log" "$pmark" | grep -m1 -F "home $D/root/$E2E_PLUGIN_NAME" || true)
	[ -n "$home_line" ] || log "note: the plugin log does not name Home $D/root/$E2E_PLUGIN_NAME"
fi
info=$(dk info 2>&1)
driver_line=$(grep -E '^ *Storage Driver:' <<<"$info" || true)
assert_eq " Storage Driver: $(e2e_driver_flag)" "$driver_line" "docker info names the storage driver"
# the Status pairs follow the driver line, one indentation level deeper
status=$(awk '/^ Storage Driver:/ {on = 1; next} on && /^   *[^ ].*: / {print; next} {on = 0}' <<<"$info")
log "driver status lines: $(tr -s ' ' <<<"$status" | tr '\n' ';')"
if [ "$E2E_DRIVER" != vfs ]; then
	[ -n "$status" ] || fail "docker info shows no Status lines under the storage driver"
	log "ok: docker info shows driver Status lines"
fi
if is_ploop; then
	home=$D/root/$E2E_PLUGIN_NAME
	[ -d "$home" ] || fail "Init did not create Home $home"
	log "ok: Home $home exists"
fi
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

if is_ploop; then
	# without --experimental the plugin is never contacted and dockerd exits
	mark=$(log_mark "$D/dockerd.log")
	E2E_NO_EXPERIMENTAL=1 e2e_launch_dockerd
	if e2e_wait_dockerd; then
		fail "dockerd started a graphdriver plugin without --experimental"
	fi
	out=$(log_since "$D/dockerd.log" "$mark")
	assert_contains "$out" "graphdriver plugins are only supported with experimental mode" \
		"start without --experimental: documented error"
	assert_contains "$out" "driver not supported" "start without --experimental: dockerd gives up"
	# a failed start leaves the data-root bound onto itself (DOCKERD.md §3)
	umount_under "$D/root" "$D/root/$E2E_PLUGIN_NAME"
	# and the plugin still serves a normal start afterwards
	e2e_start_dockerd
	assert_contains "$(dk info 2>&1)" "Storage Driver: $E2E_PLUGIN_NAME" "restart with --experimental works"
	e2e_stop_dockerd || fail "dockerd needed SIGKILL"
fi

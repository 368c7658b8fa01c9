#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `make install` into a DESTDIR, the systemd units it installs (checked as text and
# with systemd-analyze verify), then the plugin started the way the socket unit
# starts it: the socket exists first (systemd-socket-activate stands in for
# systemd), dockerd's first connection starts the plugin with LISTEN_FDS, and
# docker run works through it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "installs ploop-graphdriver"
command -v systemd-socket-activate >/dev/null || fail "systemd-socket-activate (package systemd) is needed"
e2e_setup

dest=$D/dest
[ -x "$BUILD/ploop-graphdriver" ] || fail "no $BUILD/ploop-graphdriver: build it first (make)"
# -o: install what is built, never rebuild from here
run_ok "make install DESTDIR=$dest" make -s -C "$E2E_REPO" -o "$BUILD/ploop-graphdriver" \
	BUILD="$BUILD" DESTDIR="$dest" install >/dev/null
units=$dest/etc/systemd/system
for f in usr/local/bin/ploop-graphdriver etc/systemd/system/ploop-graphdriver.service \
	etc/systemd/system/ploop-graphdriver.socket etc/default/ploop-graphdriver \
	usr/local/share/ploop-graphdriver/config.json; do
	[ -f "$dest/$f" ] || fail "make install did not install /$f"
done
log "ok: make install installs the binary, both units, /etc/default/ploop-graphdriver and config.json"
[ -x "$dest/usr/local/bin/ploop-graphdriver" ] || fail "the installed binary is not executable"
[ -x "$dest/usr/local/bin/ploop-graphdriver-serve-image" ] || fail "the image server binary is not installed"
run_ok "make install PREFIX=/usr (dry run names /usr/bin)" \
	make -s -n -C "$E2E_REPO" -o "$BUILD/ploop-graphdriver" BUILD="$BUILD" PREFIX=/usr install |
	grep -q '/usr/bin/ploop-graphdriver' || fail "PREFIX=/usr does not install into /usr/bin"

svc=$(cat "$units/ploop-graphdriver.service")
sock=$(cat "$units/ploop-graphdriver.socket")
assert_contains "$sock" "ListenStream=/run/docker/plugins/ploop.sock" "socket unit: the legacy socket path"
assert_contains "$sock" "SocketMode=0600" "socket unit: mode 0600"
assert_contains "$svc" "ExecStart=/usr/local/bin/ploop-graphdriver " "service: ExecStart uses PREFIX/bin"
assert_contains "$svc" "KillMode=process" "service: KillMode=process (image servers survive a restart)"
for bad in PrivateMounts ProtectSystem PrivateTmp ProtectHome MountFlags ReadOnlyPaths TemporaryFileSystem; do
	grep -qE "^[[:space:]]*$bad=" <<<"$svc" && fail "service sets $bad=: the plugin must mount in the host namespace"
done
log "ok: the service has no private mount namespace settings"
# systemd-analyze checks the binary path: point ExecStart at the DESTDIR copy
mkdir -p "$D/verify"
sed "s|^ExecStart=/usr/local/bin/|ExecStart=$dest/usr/local/bin/|" "$units/ploop-graphdriver.service" \
	>"$D/verify/ploop-graphdriver.service"
cp "$units/ploop-graphdriver.socket" "$D/verify/"
run_ok "systemd-analyze verify" systemd-analyze verify "$D/verify/ploop-graphdriver.socket" \
	"$D/verify/ploop-graphdriver.service"

# --- socket activation with dockerd: the socket first, the plugin on demand
mkdir -p "$E2E_PLUGINS_DIR" "$D/bin"
if [ -e "$E2E_LEGACY_SOCK" ]; then fail "$E2E_LEGACY_SOCK exists (another plugin?)"; fi
cp "$dest/usr/local/bin/ploop-graphdriver" "$D/bin/ploop-graphdriver"
e2e_created_entry "$E2E_LEGACY_SOCK"
echo "----- plugin start (socket-activated) $(date +%T.%3N)" >>"$D/plugin.log"
setsid systemd-socket-activate -l "$E2E_LEGACY_SOCK" -- \
	"$D/bin/ploop-graphdriver" --socket "$E2E_LEGACY_SOCK" --state "$D/state.json" --log-level debug \
	>>"$D/plugin.log" 2>&1 </dev/null 9>&- &
echo $! >"$D/plugin.pid"
for ((n = 0; n < 100; n++)); do
	[ -S "$E2E_LEGACY_SOCK" ] && break
	sleep 0.1
done
[ -S "$E2E_LEGACY_SOCK" ] || fail "systemd-socket-activate did not create $E2E_LEGACY_SOCK"
e2e_start_dockerd
plog=$(cat "$D/plugin.log")
assert_contains "$plog" "serving the socket passed by systemd" "the plugin took the socket from LISTEN_FDS"
e2e_import_busybox >/dev/null
run_ok "docker run through the socket-activated plugin" dk run --rm --network none busybox:local true
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
e2e_stop_plugin

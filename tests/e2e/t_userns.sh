#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# dockerd --userns-remap default with the legacy plugin: Init carries the maps, Home
# is <data-root>/<uid>.<gid>/ploop, a container's root is owned by the remapped root,
# a file written inside lands as the remapped uid on the host, and the container runs,
# diffs, commits and goes away like any other.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "the userns-remap test is for ploop only"
command -v useradd >/dev/null || skip "no useradd: dockerd cannot create its dockremap user"
e2e_setup

e2e_start_plugin
e2e_start_dockerd "$E2E_PLUGIN_NAME" --userns-remap default
sub=$(awk -F: '$1 == "dockremap" {print $2; exit}' /etc/subuid)
subg=$(awk -F: '$1 == "dockremap" {print $2; exit}' /etc/subgid)
[ -n "$sub" ] && [ -n "$subg" ] || fail "dockerd made no dockremap range in /etc/subuid, /etc/subgid"
log "remapped root: uid $sub, gid $subg"
home=$D/root/$sub.$subg/ploop
[ -d "$home/layers" ] || fail "Home is not $home (dockerd's remapped data-root)"
log "ok: Home $home"
grep -q "\"Home\":\"$home\"" "$D/state.json" || fail "state.json lacks Home $home: $(cat "$D/state.json")"
grep -q "\"host_id\":$sub" "$D/state.json" || fail "Init did not carry the UID map: $(cat "$D/state.json")"
log "ok: Init carried the ID maps"

e2e_import_busybox >/dev/null
run_ok "run u1" dk run -d --name u1 --network none busybox:local \
	sh -c 'echo hi >/hi; trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
cid=$(dk inspect -f '{{.Id}}' u1)
root=$(grep -o '"root":{"path":"[^"]*"' "$D/ctrd/state/io.containerd.runtime.v2.task/moby/$cid/config.json" |
	sed 's/.*"path":"//; s/"$//')
case $root in "$home/mnt/"*) ;; *) fail "u1's root $root is not under $home/mnt" ;; esac
for ((n = 0; n < 100; n++)); do [ -e "$root/hi" ] && break; sleep 0.1; done
assert_eq "$sub:$subg" "$(stat -c %u:%g "$root")" "the container's root is owned by the remapped root"
assert_eq "$sub:$subg" "$(stat -c %u:%g "$root/hi")" "a file written inside is the remapped root's on the host"
assert_eq "$sub:$subg" "$(stat -c %u:%g "$root/bin/busybox")" "image files are the remapped root's"
assert_eq "0 0" "$(dk exec u1 stat -c '%u %g' /hi)" "inside, the file is root's"
assert_eq hi "$(dk exec u1 cat /hi)" "exec reads it back"
assert_diff "A /hi" "$(dk diff u1)" "docker diff u1"
run_ok "commit u1" dk commit u1 img:u1 >/dev/null
assert_eq hi "$(dk run --rm --network none img:u1 cat /hi)" "the committed image runs under the remap"
run_ok "rm -f u1" dk rm -f u1 >/dev/null
run_ok "rmi img:u1" dk rmi img:u1 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
e2e_stop_plugin

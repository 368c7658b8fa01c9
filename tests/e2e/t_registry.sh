#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The managed plugin the way it is meant to be installed: two builds pushed to a
# loopback registry (Debian's docker-registry), `docker plugin install
# --grant-all-permissions` of the first, dockerd with it as --storage-driver, a
# container; then, while no dockerd uses it as its driver, disable/enable and
# `docker plugin upgrade` to the second build; the container made before the upgrade
# starts again on it and keeps its data.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "the registry install test is for ploop only"
[ -x "$BUILD/ploop-graphdriver" ] || fail "no $BUILD/ploop-graphdriver: build it first (make)"
e2e_setup
e2e_start_registry
ref=$E2E_REGISTRY/pgd/ploop
alias=ploop

# --- publish: build 1, and build 2 (the same bundle plus a marker file: another digest)
e2e_start_dockerd vfs
run_ok "make-plugin.sh + docker plugin create $ref:v1" \
	env PLUGIN_OUT="$D/bundle" PLUGIN_NAME="$ref:v1" DOCKER_HOST="unix://$D/docker.sock" \
	DOCKER="$DOCKER_CLI" "$E2E_REPO/tools/make-plugin.sh" "$BUILD" >/dev/null
echo "build 2" >"$D/bundle/rootfs/etc/ploop-graphdriver-build"
run_ok "docker plugin create $ref:v2" dk plugin create "$ref:v2" "$D/bundle" >/dev/null
run_ok "docker plugin push v1" dk plugin push "$ref:v1" >/dev/null
run_ok "docker plugin push v2" dk plugin push "$ref:v2" >/dev/null
d1=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -o /dev/null \
	-w '%header{docker-content-digest}' "http://$E2E_REGISTRY/v2/pgd/ploop/manifests/v1" || true)
d2=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -o /dev/null \
	-w '%header{docker-content-digest}' "http://$E2E_REGISTRY/v2/pgd/ploop/manifests/v2" || true)
[ -n "$d1" ] && [ -n "$d2" ] || fail "the registry does not list both builds (v1 '$d1', v2 '$d2')"
[ "$d1" != "$d2" ] || fail "both builds have the digest $d1"
log "ok: the registry holds v1 $d1 and v2 $d2"
run_ok "remove the local builds" dk plugin rm "$ref:v1" "$ref:v2" >/dev/null

# --- install as a user would
run_ok "docker plugin install --grant-all-permissions" \
	dk plugin install --grant-all-permissions --alias "$alias" "$ref:v1" >/dev/null
id=$(dk plugin inspect -f '{{.Id}}' "$alias")
echo "$id" >>"$D/managed-ids"
e2e_created_entry "$E2E_PLUGINS_DIR/$id"
assert_eq true "$(dk plugin inspect -f '{{.Enabled}}' "$alias")" "installed and enabled"
assert_eq "$ref:v1" "$(dk plugin inspect -f '{{.PluginReference}}' "$alias")" "installed from v1"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

# --- selected as the storage driver
e2e_start_dockerd "$alias:latest"
assert_contains "$(dk info 2>&1)" "Storage Driver: $alias:latest" "docker info names the installed plugin"
e2e_import_busybox >/dev/null
assert_eq hi "$(dk run --rm --network none busybox:local echo hi)" "a container runs on it"
run_ok "create k1 with data" dk run --name k1 --network none busybox:local sh -c 'echo kept >/kept' >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

# --- disable, enable, upgrade while no dockerd uses it as its driver
e2e_start_dockerd vfs
run_ok "docker plugin disable" dk plugin disable "$alias" >/dev/null
assert_eq false "$(dk plugin inspect -f '{{.Enabled}}' "$alias")" "disabled"
run_ok "docker plugin enable" dk plugin enable "$alias" >/dev/null
assert_eq true "$(dk plugin inspect -f '{{.Enabled}}' "$alias")" "enabled again"
run_ok "docker plugin disable (for the upgrade)" dk plugin disable "$alias" >/dev/null
# v2 is another tag than the installed v1: the CLI would ask "Plugin images do not match"
run_ok "docker plugin upgrade to v2" \
	dk plugin upgrade --grant-all-permissions --skip-remote-check "$alias" "$ref:v2" >/dev/null
run_ok "docker plugin enable (v2)" dk plugin enable "$alias" >/dev/null
assert_eq "$ref:v2" "$(dk plugin inspect -f '{{.PluginReference}}' "$alias")" "upgraded to v2"
assert_eq "$id" "$(dk plugin inspect -f '{{.Id}}' "$alias")" "the upgrade keeps the plugin (and its data)"
rootfs=$(find "$D/root/plugins/$id" -maxdepth 2 -name rootfs -type d | head -1)
[ -n "$rootfs" ] && [ -f "$rootfs/etc/ploop-graphdriver-build" ] ||
	fail "the upgraded plugin's rootfs lacks build 2's marker (rootfs '$rootfs')"
log "ok: the plugin runs build 2"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

# --- the container from before the upgrade, on build 2
e2e_start_dockerd "$alias:latest"
run_ok "start k1 on the upgraded plugin" dk start k1 >/dev/null
assert_eq kept "$(dk run --rm --network none busybox:local echo kept)" "a new container runs on v2"
assert_diff "A /kept" "$(dk diff k1)" "k1 kept its change across the upgrade"
run_ok "cp out of k1" dk cp k1:/kept "$D/kept"
assert_eq kept "$(cat "$D/kept")" "k1's file reads back"
run_ok "rm k1" dk rm -f k1 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

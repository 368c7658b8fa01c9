#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Per-container size: `docker run --storage-opt size=...`.
# 1. default daemon (image size 10G): size=2G either gives a ~2 GiB root or, since a
#    clone cannot be smaller than its parent, fails at create with a clear error.
# 2. daemon with --storage-opt ploop.size=1G (Init Opts): the default root is ~1 GiB;
#    size=2G grows it to ~2 GiB (df); writing past a size fails with ENOSPC;
#    size=512M (smaller than the image) fails at create with a clear error.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "--storage-opt size is a ploop feature ($E2E_DRIVER would need xfs quotas)"
e2e_setup

gib=$((1024 * 1024)) # in KiB, as df -k prints
# df_kb OUTPUT: the size column of `df -k /`.
df_kb() { tail -1 <<<"$1" | awk '{print $2}'; }

# --- 1. default image size
e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null
rc=0
out=$(dk run --rm --network none --storage-opt size=2G busybox:local df -k / 2>&1) || rc=$?
if [ "$rc" = 0 ]; then
	assert_range "$(df_kb "$out")" $((18 * gib / 10)) $((205 * gib / 100)) "default daemon, size=2G: df / in KiB is ~2 GiB"
else
	log "default daemon, size=2G: exit $rc: $out"
	assert_contains "$out" "GraphDriver.CreateReadWrite" "size=2G under a 10G default fails at create"
	assert_match "$out" "size" "the error names the size"
fi
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
e2e_stop_plugin

# --- 2. a daemon whose images are 1 GiB (ploop.size through Init Opts)
e2e_new_instance
log "instance with --storage-opt ploop.size=1G: $D"
e2e_start_plugin
e2e_start_dockerd "" --storage-opt ploop.size=1G
e2e_import_busybox >/dev/null
out=$(run_ok "run without --storage-opt" dk run --rm --network none busybox:local df -k /)
assert_range "$(df_kb "$out")" $((8 * gib / 10)) $((105 * gib / 100)) "ploop.size=1G: the default root is ~1 GiB"

out=$(run_ok "run --storage-opt size=2G df" dk run --rm --network none --storage-opt size=2G busybox:local df -k /)
log "df with size=2G: $(tail -1 <<<"$out")"
assert_range "$(df_kb "$out")" $((18 * gib / 10)) $((205 * gib / 100)) "size=2G: df / in KiB is ~2 GiB"

# the size holds: a 1 GiB root refuses 1.2 GiB of data
rc=0
out=$(dk run --rm --network none busybox:local \
	sh -c 'dd if=/dev/zero of=/big bs=1M count=1200 2>&1; echo rc=$?' 2>&1) || rc=$?
log "dd 1200 MiB into the 1 GiB root (exit $rc): $(tr '\n' ' ' <<<"$out")"
assert_match "$out" 'No space left on device|Disk quota exceeded' "writing past the size fails with ENOSPC"
assert_not_contains "$out" "rc=0" "dd reports the failure"

rc=0
out=$(dk run --rm --network none --storage-opt size=512M busybox:local true 2>&1) || rc=$?
log "size=512M under a 1G image (exit $rc): $out"
if [ "$rc" != 0 ]; then
	assert_contains "$out" "GraphDriver.CreateReadWrite" "size=512M (below the image) fails at create with the driver's error"
fi
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

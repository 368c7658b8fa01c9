#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `docker run --storage-opt size=2G`: the container's root filesystem is a ~2 GiB
# ext4 (df), and writing past a small size fails with ENOSPC.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
is_ploop || skip "--storage-opt size is a ploop feature ($E2E_DRIVER would need xfs quotas)"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null

out=$(run_ok "run --storage-opt size=2G df" dk run --rm --network none --storage-opt size=2G \
	busybox:local df -k /)
log "df: $(tail -1 <<<"$out")"
kb=$(tail -1 <<<"$out" | awk '{print $2}')
# ext4 keeps some of the device for itself: accept 1.8 to 2.05 GiB
assert_range "$kb" $((18 * 1024 * 1024 / 10)) $((205 * 1024 * 1024 / 100)) "df / in KiB is ~2 GiB"

# the default size differs from 2G, so the option did take effect
out=$(run_ok "run without --storage-opt" dk run --rm --network none busybox:local df -k /)
kb_default=$(tail -1 <<<"$out" | awk '{print $2}')
log "default root size: $kb_default KiB"
[ "$kb_default" != "$kb" ] || fail "the default root has the same size as size=2G"

# a small size is enforced: 256M, then write 300 MiB. A driver that cannot make a
# root smaller than its image may refuse at create time, with a clear error.
rc=0
out=$(dk run --rm --network none --storage-opt size=256M busybox:local \
	sh -c 'dd if=/dev/zero of=/big bs=1M count=300 2>&1; echo rc=$?' 2>&1) || rc=$?
log "dd into size=256M (exit $rc): $(tr '\n' ' ' <<<"$out")"
if [ "$rc" = 125 ]; then
	assert_contains "$out" "GraphDriver.CreateReadWrite" "size=256M refused at create with the driver's error"
else
	assert_match "$out" 'No space left on device|Disk quota exceeded' "writing 300 MiB into size=256M fails with ENOSPC/EDQUOT"
	assert_not_contains "$out" "rc=0" "dd reports the failure"
fi
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

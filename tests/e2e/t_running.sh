#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A running container: export and cp (nested Get), inspect GraphDriver.Data, exec,
# and `docker ps -s` sizes (DiffSize). The container keeps running throughout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
e2e_start_dockerd
e2e_import_busybox >/dev/null

# PID 1 that exits on SIGTERM (busybox sleep as PID 1 ignores it)
run_ok "start r1" dk run -d --name r1 --network none busybox:local \
	sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
running() { [ "$(dk inspect -f '{{.State.Running}}' r1)" = true ]; }
running || fail "r1 is not running"

out=$(run_ok "docker exec" dk exec r1 sh -c 'echo hello >/hello; echo 12345 >/tmp/n; cat /hello')
assert_eq hello "$out" "exec writes and reads in the running container"

# export streams the whole root filesystem through a nested Get
t0=$(now_ms)
run_ok "docker export of a running container" dk export -o "$D/r1.tar" r1
log "export took $(($(now_ms) - t0)) ms"
list=$(tar -tf "$D/r1.tar")
assert_contains "$list" "bin/busybox" "export holds bin/busybox"
assert_contains "$list" "hello" "export holds the file written by exec"
tar -xOf "$D/r1.tar" bin/busybox | cmp - /bin/busybox || fail "exported bin/busybox differs from /bin/busybox"
log "ok: exported bin/busybox is byte-identical"
running || fail "r1 stopped after export"

# cp in both directions
run_ok "docker cp out of a running container" dk cp r1:/bin/busybox "$D/busybox.out"
cmp "$D/busybox.out" /bin/busybox || fail "docker cp r1:/bin/busybox differs"
log "ok: cp out is byte-identical"
head -c 300000 /dev/urandom >"$D/blob"
run_ok "docker cp into a running container" dk cp "$D/blob" r1:/tmp/blob
sum_in=$(dk exec r1 md5sum /tmp/blob | cut -d' ' -f1)
assert_eq "$(md5sum <"$D/blob" | cut -d' ' -f1)" "$sum_in" "cp in: the container sees the same bytes"
running || fail "r1 stopped after cp"

# inspect: our metadata; GraphDriver.Name
name=$(dk inspect -f '{{.GraphDriver.Name}}' r1)
assert_eq "$(e2e_driver_flag)" "$name" "inspect GraphDriver.Name"
data=$(dk inspect -f '{{json .GraphDriver.Data}}' r1)
log "GraphDriver.Data: $data"
if [ "$E2E_DRIVER" != vfs ]; then # vfs has no metadata
	case $data in null | '{}' | '') fail "inspect shows no GraphDriver.Data" ;; esac
	log "ok: inspect shows GraphDriver.Data"
fi
img_data=$(dk image inspect -f '{{json .GraphDriver.Data}}' busybox:local)
log "image GraphDriver.Data: $img_data"

# ps -s: a real size from DiffSize (-1B means the call failed)
sizes=$(dk ps -s --format '{{.Names}} {{.Size}}')
log "ps -s: $sizes"
line=$(grep '^r1 ' <<<"$sizes")
assert_not_contains "$line" "-1B" "ps -s shows a real size"
assert_match "$line" '^r1 [0-9.]+[kMG]?B \(virtual [0-9.]+[kMG]?B\)$' "ps -s size format"
# written: /hello (6 B) + /tmp/n (6 B) + /tmp/blob (300000 B); ~300 kB
assert_match "$line" '^r1 30[0-9](\.[0-9]+)?kB ' "ps -s counts the container's own files (~300kB)"
sz=$(dk inspect --size -f '{{.SizeRw}}' r1)
log "inspect --size SizeRw: $sz"
assert_range "$sz" 300012 400000 "inspect --size SizeRw counts the written files"

# still running, still answering
out=$(dk exec r1 cat /tmp/n)
assert_eq 12345 "$out" "the container still runs and reads its files"
t0=$(now_ms)
run_ok "docker stop r1" dk stop r1 >/dev/null
log "stop took $(($(now_ms) - t0)) ms"
run_ok "docker start r1 again" dk start r1 >/dev/null
out=$(dk exec r1 cat /hello)
assert_eq hello "$out" "data survives stop/start"
run_ok "docker rm -f r1" dk rm -f r1 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"

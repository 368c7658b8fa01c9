#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Images and containers through the driver: import size, run, diff (exact output
# and order), commit (whiteouts), save, and load into a fresh daemon.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
e2e_setup

e2e_start_plugin
e2e_start_dockerd

# import: the image size is the ApplyDiff size = the sum of the tar's file sizes
t0=$(now_ms)
is_ploop && pmark=$(log_mark "$D/plugin.log")
want=$(e2e_import_busybox)
log "import of busybox:local took $(($(now_ms) - t0)) ms"
size=$(dk image inspect -f '{{.Size}}' busybox:local)
if [ "$E2E_DRIVER" = overlay2 ]; then
	# overlay2 reports the on-disk size of the layer (PROTOCOL.md §10.5)
	assert_range "$size" "$want" $((want + want / 100)) "overlay2 image size within 1% of $want"
else
	assert_eq "$want" "$size" "image size equals the sum of the tar's regular files ($want)"
fi
if is_ploop; then
	applied=$(log_since "$D/plugin.log" "$pmark" | sed -nE 's,.*/GraphDriver\.ApplyDiff[^:]*: 200 Size ([0-9]+).*,\1,p' | tail -1)
	assert_eq "$size" "$applied" "the image size is the Size our ApplyDiff answered"
fi

t0=$(now_ms)
is_ploop && pmark=$(log_mark "$D/plugin.log")
run_ok "docker run --rm busybox:local true" dk run --rm --network none busybox:local true
log "first run --rm took $(($(now_ms) - t0)) ms"
if is_ploop; then
	# PROTOCOL.md §8.4: the 10 calls of a run --rm, in this order
	assert_eq "$(printf '%s\n' CreateReadWrite Get Put CreateReadWrite Get Put Get Put Remove Remove |
		sed 's/^/GraphDriver./')" "$(e2e_plugin_calls "$pmark")" "docker run --rm: the calls of §8.4 in order"
fi
out=$(run_ok "docker run --rm busybox:local ps" dk run --rm --network none busybox:local ps)
assert_match "$out" '^ *1 +(root|0) +ps$' "ps runs as PID 1 in the container"

# docker diff: modify, delete, nested adds; exact lines in this order, no init files
run_ok "run c1" dk run --name c1 --network none busybox:local \
	sh -c 'echo hello >/hello; rm /bin/ls; mkdir -p /d/e' >/dev/null
out=$(dk diff c1)
assert_diff "$(printf 'C /bin\nD /bin/ls\nA /d\nA /d/e\nA /hello')" "$out" "docker diff c1"

run_ok "run c2" dk run --name c2 --network none busybox:local \
	sh -c 'mkdir /foo; echo xyzzy > /foo/bar' >/dev/null
out=$(dk diff c2)
assert_diff "$(printf 'A /foo\nA /foo/bar')" "$out" "docker diff c2"

# commit: a Diff streamed into an ApplyDiff; whiteouts take effect in the new image
t0=$(now_ms)
run_ok "docker commit c1" dk commit c1 img:c1 >/dev/null
log "commit took $(($(now_ms) - t0)) ms"
out=$(run_ok "run the committed image" dk run --rm --network none img:c1 \
	sh -c 'cat /hello; if [ -e /bin/ls ]; then echo ls-present; fi; ls -d /d/e')
assert_eq "$(printf 'hello\n/d/e')" "$out" "committed image: /hello present, /bin/ls gone, /d/e there"
run_ok "commit c2" dk commit c2 img:c2 >/dev/null
out=$(dk run --rm --network none img:c2 cat /foo/bar)
assert_eq xyzzy "$out" "committed image img:c2 has /foo/bar"

# a container of a committed image, and a diff against the committed layer
run_ok "run c3 from img:c1" dk run --name c3 --network none img:c1 \
	sh -c 'rm /hello; echo again >/d/e/f' >/dev/null
out=$(dk diff c3)
assert_diff "$(printf 'C /d\nC /d/e\nA /d/e/f\nD /hello')" "$out" "docker diff c3 (on a committed image)"

# save reads every layer file back through Get and CRC-checks it
t0=$(now_ms)
run_ok "docker save img:c1" dk save -o "$D/img-c1.tar" img:c1
log "save took $(($(now_ms) - t0)) ms"
saved=$D/img-c1.tar
dk rm c1 c2 c3 >/dev/null
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
is_ploop && e2e_stop_plugin
prev=$D

# load into a fresh daemon (and, for ploop, a fresh plugin with its own state)
e2e_new_instance
log "fresh instance $D"
e2e_start_plugin
e2e_start_dockerd
run_ok "docker load into a fresh daemon" dk load -i "$saved" >/dev/null
out=$(run_ok "run the loaded image" dk run --rm --network none img:c1 \
	sh -c 'cat /hello; if [ -e /bin/ls ]; then echo ls-present; fi; echo ok')
assert_eq "$(printf 'hello\nok')" "$out" "loaded image runs with the committed contents"
size=$(dk image inspect -f '{{.Size}}' img:c1)
log "loaded image size $size (the busybox layer was $want)"
e2e_stop_dockerd || fail "dockerd needed SIGKILL"
log "first instance $prev"

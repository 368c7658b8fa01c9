#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The containerd face: a private containerd 1.6 with ploop-snapshotter as its proxy
# snapshotter "ploop". Through ctr: import a three-layer image (a whiteout, an opaque
# directory) unpacked by ploop; `ctr run --rm` sees exactly the merged tree; the size
# label gives a container its own filesystem size; `ctr snapshots` prepare, view,
# commit, label, info, usage, tree, rm with containerd's rules (a view is not
# committed, a parent with children is not removed); 20 containers at once; at the
# end no snapshot, mount, loop device or process is left.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_snapshotter.sh"
e2e_setup

e2e_start_snapshotter
e2e_start_containerd_ploop
snap() { ctr_ snapshots --snapshotter ploop "$@"; }

e2e_layers_image "$D/layers.tar" pgd/layers:1
img=docker.io/pgd/layers:1
t0=$(now_ms)
run_ok "import a 3-layer image with --snapshotter ploop" ctr_ images import --snapshotter ploop "$D/layers.tar" >/dev/null
log "import + unpack took $(($(now_ms) - t0)) ms"
committed=$(snap ls | awk 'NR > 1 && $NF == "Committed"' | grep -c . || true)
assert_eq 3 "$committed" "three committed snapshots, one per layer"

out=$(ctr_ run --rm --snapshotter ploop "$img" c-tree sh -c 'cd /data && find . | sort && cat b c dir/y')
assert_eq "$(printf '.\n./b\n./c\n./dir\n./dir/y\nb\nc\ny')" "$out" \
	"the container sees every layer: whiteout of a, opaque dir (x gone), b, c"

# sizes: the default (10G) and a label of 20G, as df inside sees them (KiB)
kb=$(ctr_ run --rm --snapshotter ploop "$img" c-size1 df -k / | awk 'NR == 2 {print $2}')
assert_range "$kb" $((9 * 1024 * 1024)) $((10 * 1024 * 1024)) "default root filesystem size (KiB)"
kb=$(ctr_ run --rm --snapshotter ploop --snapshotter-label containerd.io/snapshot/ploop.size=20G \
	"$img" c-size2 df -k / | awk 'NR == 2 {print $2}')
assert_range "$kb" $((19 * 1024 * 1024)) $((20 * 1024 * 1024)) "size label 20G (KiB)"
out=$(ctr_ run --rm --snapshotter ploop --snapshotter-label containerd.io/snapshot/ploop.size=lots \
	"$img" c-size3 true 2>&1 || true)
assert_contains "$out" "ploop.size" "a malformed size label is refused, naming the label"

# the snapshots commands, with containerd's rules
top=$(snap ls | awk 'NR > 1 && $NF == "Committed" {print $1}' | while read -r k; do
	snap ls | awk -v k="$k" 'NR > 1 && $2 == k' | grep -q . || echo "$k"
done)
[ -n "$top" ] || fail "no top layer snapshot"
mnt=$(snap prepare --mounts k1 "$top" 2>&1) || fail "prepare k1: $mnt"
assert_contains "$mnt" '"Type": "bind"' "prepare returns a bind mount"
out=$(snap mounts /target k1)
assert_match "$out" "^mount -t bind $D/snap/store/mnt/[0-9a-f]{32} /target -o rbind,rw\$" \
	"mounts of k1: a read-write bind of its ploop mount"
src=$(awk '{print $4}' <<<"$out")
[ -f "$src/data/b" ] || fail "the bind source $src of k1 does not hold the image's files"
echo k1 >"$src/k1-file"
run_ok "commit k1 as c1" snap commit c1 k1
run_ok "view v1 of c1" snap view v1 c1 >/dev/null
out=$(snap mounts /target v1)
assert_match "$out" "^mount -t bind $D/snap/store/mnt/[0-9a-f]{32} /target -o rbind,ro\$" \
	"mounts of the view v1: a read-only bind"
assert_eq k1 "$(cat "$(awk '{print $4}' <<<"$out")/k1-file")" "the view of c1 holds what was written in k1"
out=$(snap commit c2 v1 2>&1 || true)
assert_contains "$out" "not active" "a view cannot be committed"
out=$(snap rm c1 2>&1 || true)
assert_contains "$out" "child" "a committed snapshot with a child is not removed"
out=$(snap prepare k1dup "$top" >/dev/null 2>&1; snap prepare k1dup "$top" 2>&1 || true)
assert_contains "$out" "already exists" "a duplicate key is refused"
run_ok "label c1" snap label c1 containerd.io/snapshot/test=yes >/dev/null
out=$(snap info c1)
assert_contains "$out" '"containerd.io/snapshot/test": "yes"' "info shows the label"
assert_contains "$out" '"Kind": "Committed"' "info shows the kind"
out=$(snap usage c1 | awk 'NR == 2')
[ -n "$out" ] || fail "no usage line for c1"
log "usage of c1: $out"
out=$(snap tree)
assert_contains "$out" "c1" "tree lists c1"
out=$(ctr_ snapshots --snapshotter ploop info nosuch 2>&1 || true)
assert_contains "$out" "not found" "info of an unknown key: not found"
run_ok "rm v1 k1dup" snap rm v1 k1dup
run_ok "rm c1 now that it has no child" snap rm c1

# 20 containers at once
t0=$(now_ms)
pids=()
for i in $(seq 1 20); do
	ctr_ run --rm --snapshotter ploop "$img" "c-many-$i" sh -c "cat /data/b >/dev/null && echo $i >/mine && cat /mine" \
		>"$D/many-$i.out" 2>&1 &
	pids+=($!)
done
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || fail "container c-many-$((i + 1)): $(cat "$D/many-$((i + 1)).out")"
done
for i in $(seq 1 20); do assert_eq "$i" "$(cat "$D/many-$i.out")" "container $i wrote and read its own root" >/dev/null 2>&1 || fail "container $i: $(cat "$D/many-$i.out")"; done
log "ok: 20 containers at once, each its own root ($(($(now_ms) - t0)) ms)"

# removing the image removes every snapshot (containerd's garbage collector)
run_ok "images rm --sync" ctr_ images rm --sync "$img" >/dev/null
left=$(snap ls | awk 'NR > 1')
assert_eq "" "$left" "no snapshot is left"
e2e_wait_snapshots_gone
assert_eq "" "$(mounts_under "$D/snap")" "no mount under the snapshotter root"
assert_eq "" "$(ls -A "$D/snap/store/layers")" "no layer is left in the store"
assert_eq "" "$(loops_under "$D")" "no loop device backed under $D"

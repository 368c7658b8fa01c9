#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/createcost.sh [DOCKERD FLAGS...]: what one `docker create` leaves on disk with a
# real dockerd and this plugin: after the create (and the idle mounts' linger), for its
# -init layer and its container layer, the layer's own bytes and bench/clustermap.py's
# account of every cluster of its top delta. E.g. `bench/createcost.sh --storage-opt
# ploop.size=1T`. VERBOSE=1 lists every changed block; MKFS_EXTRA adds options to the
# plugin's mkfs.ext4 command line. BUILD as in bench/run.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${BUILD:-$HERE/../build}
E2E_DRIVER=ploop
export E2E_PLUGIN_NAME=${E2E_PLUGIN_NAME:-ploopdisk} # not the default: other benches use it
# shellcheck source=tests/e2e/lib.sh
. "$HERE/../tests/e2e/lib.sh"
e2e_setup
if [ -n "${MKFS_EXTRA:-}" ]; then
	# options added to the plugin's mkfs.ext4 command line, to try layouts
	mkdir -p "$D/mkfs"
	printf '#!/bin/sh\nexec /sbin/mkfs.ext4 "$@" %s\n' "$MKFS_EXTRA" >"$D/mkfs/mkfs.ext4"
	chmod +x "$D/mkfs/mkfs.ext4"
	export PATH=$D/mkfs:$PATH
fi
e2e_start_plugin
e2e_start_dockerd "" "$@"
e2e_import_busybox >/dev/null
dk run --rm --network none busybox:local true
home=$D/root/$E2E_PLUGIN_NAME
sync
before=$(du -skx "$home" | cut -f1)
touch "$D/mark"
dk create --name cc --network none busybox:local true >/dev/null
sleep 4 # the linger of the idle mounts (2 s)
sync
after=$(du -skx "$home" | cut -f1)
log "storage: $before KiB before, $after KiB after one docker create; new or changed:"
find "$home" -newer "$D/mark" -printf "%k KiB %y %n %P\n" | sort -k5 >&2
mid=$(cat "$D/root/image/$E2E_PLUGIN_NAME/layerdb/mounts/$(dk inspect -f '{{.Id}}' cc)/mount-id")
for id in "$mid-init" "$mid"; do
	own=$(find "$home/layers/$id" -type f -links 1 -exec du -ck {} + | awk 'END {print $1}')
	echo "== ${id#"$mid"} (container layer if empty): $own KiB of its own files"
	python3 "$HERE/clustermap.py" "$home/layers/$id" |
		if [ -n "${VERBOSE:-}" ]; then cat; else grep -v "^    block"; fi
done

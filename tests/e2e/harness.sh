#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# harness.sh DRIVER: run the driver-neutral e2e tests with dockerd's built-in
# DRIVER (vfs or overlay2). This validates lib.sh and the assertions themselves
# against a known-good driver. Called by t_harness_<driver>.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
driver=${1:?usage: harness.sh vfs|overlay2}
export E2E_DRIVER=$driver
rc=0
for t in t_daemon t_image t_running t_cleanup t_restart t_crash t_parallel; do
	if bash "$here/$t.sh"; then
		echo "[harness $driver] $t passed" >&2
	else
		echo "[harness $driver] $t FAILED" >&2
		rc=1
	fi
done
exit "$rc"

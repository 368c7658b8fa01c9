#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The harness itself against dockerd's built-in vfs driver, independent of our
# plugin: the driver-neutral tests must pass, and a crashed instance (dockerd and
# containerd SIGKILLed with running containers) must be cleaned up completely.
set -euo pipefail
exec "$(dirname "$0")/harness.sh" vfs

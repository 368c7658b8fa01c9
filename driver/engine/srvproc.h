/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Process setup of the image server (imgsrv.c). */
#ifndef PGD_SRVPROC_H
#define PGD_SRVPROC_H

#include <stdbool.h>

/* Make the process an I/O flusher (no recursion into I/O reclaim, no throttling for
   others' dirty pages) and the OOM killer's last choice; failures are logged. */
void pgd_srvproc_harden (void);

/* When ENABLED, lock the process's pages once touched (mlockall MCL_ONFAULT), raising
   RLIMIT_MEMLOCK when allowed; left unlocked (logged) when the limit has no room. */
void pgd_srvproc_lock_memory (bool enabled);

/* Ignore SIGPIPE, SIGHUP, SIGINT and SIGTERM: the server stops when its FUSE mount goes
   away, never on a terminal's or a service manager's signal. */
void pgd_srvproc_ignore_signals (void);

#endif

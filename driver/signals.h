/* SPDX-License-Identifier: GPL-2.0-or-later */
/* How a server binary waits to be stopped: SIGTERM and SIGINT go through a self-pipe
   (the handler only writes one byte); SIGPIPE is caught, not ignored, so that a write
   to a closed pipe fails with EPIPE while exec'd helpers get the default back. */
#ifndef PGD_SIGNALS_H
#define PGD_SIGNALS_H

#include "err.h"

/* Install the handlers; the self-pipe's read end goes to *READ_FD (close-on-exec). */
int pgd_stop_signals_install (int *read_fd, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Block until SIGTERM or SIGINT arrives on READ_FD; returns the signal number. */
int pgd_stop_signals_wait (int read_fd);

#endif

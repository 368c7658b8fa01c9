/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The request the calling thread serves, kept per thread (as nbdkit keeps its current
   connection): a face attaches its client's socket while a driver call runs, and the
   store asks whether that client is still there before it changes anything after a long
   wait. A request that no face attached (the snapshotter, the tests, the reaper) never
   counts as abandoned. */
#ifndef PGD_REQUEST_H
#define PGD_REQUEST_H

#include <stdbool.h>

#include "err.h"

/* Attach the client socket FD to the calling thread's request until pgd_request_detach.
   FD is only polled, never read, written or closed. */
void pgd_request_attach (int fd);

/* End the calling thread's request: it is no longer cancellable. */
void pgd_request_detach (void);

/* True when the calling thread serves a request whose client hung up (its socket
   reports hang-up or an error); false when it is there or no client is attached. */
bool pgd_request_gone (void);

/* -1 with ERR (ECANCELED, naming WHAT) when the calling thread's client has gone, so
   the caller stops before it changes anything; 0 otherwise. */
int pgd_request_check (const char *what, struct pgd_err *err) __attribute__ ((warn_unused_result));

#endif

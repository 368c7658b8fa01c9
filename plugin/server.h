/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The HTTP server: libmicrohttpd, one thread per connection, on a Unix socket that we
   bind ourselves or that systemd passed us. */
#ifndef PGD_SERVER_H
#define PGD_SERVER_H

#include <stdbool.h>

#include "driver.h"
#include "err.h"

/* Most connections served at once; more are refused by libmicrohttpd. */
#define PGD_SERVER_MAX_CONNECTIONS 256

struct pgd_server;

/* Listen on the Unix socket PATH: create its directory, remove a stale socket (but
   fail if a live server answers there), bind, chmod 0600, listen. */
int pgd_server_bind_unix (const char *path, int *fd, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* The socket systemd passed (LISTEN_PID = us, LISTEN_FDS >= 1, fd 3): 1 with *FD set,
   0 when not socket-activated, -1 when the passed fd is unusable. */
int pgd_server_activated_fd (int *fd, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Serve the protocol on the listening socket FD (taken) with OPS and CTX. */
int pgd_server_start (struct pgd_server **out, int fd, const struct pgd_ops *ops, void *ctx,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Stop accepting, give requests in flight up to GRACE_MS, then stop and free S.
   False when requests were still running: S is left alive and CTX may still be in
   use, so the caller must not free CTX (it should just exit). */
bool pgd_server_stop (struct pgd_server *s, unsigned grace_ms);

#endif

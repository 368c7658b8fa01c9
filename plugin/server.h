/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The HTTP server: libmicrohttpd, one thread per connection, on a Unix socket that we
   bind ourselves or that systemd passed us. */
#ifndef PGD_SERVER_H
#define PGD_SERVER_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

#include "driver.h"
#include "err.h"

/* Most connections served at once; more are refused by libmicrohttpd. */
#define PGD_SERVER_MAX_CONNECTIONS 256

/* The stack of every thread that serves a request (libmicrohttpd's, the stream
   workers): the diff walk recurses once per directory level (driver/diff/tree.c bounds
   the depth by PATH_MAX, about 1 KiB a level), so the size is stated here rather than
   left to RLIMIT_STACK (glibc gives threads 2 MiB when it is unlimited). */
#define PGD_REQUEST_STACK ((size_t)8 << 20)

struct pgd_server;

/* The socket file a server bound, as found right after bind: removed at exit only
   while that very file is still there (a successor may have bound the path anew). */
struct pgd_socket_file
{
  char path[sizeof ((struct sockaddr_un *)0)->sun_path];
  dev_t dev;
  ino_t ino;
};

/* Listen on the Unix socket PATH: create its directory, remove a stale socket (but
   fail if a live server answers there), bind, chmod 0600, listen; FILE records what
   was bound for pgd_server_unlink_unix. */
int pgd_server_bind_unix (const char *path, struct pgd_socket_file *file, int *fd,
                          struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Remove the socket file FILE names if it is still the one we bound; logs what it did. */
void pgd_server_unlink_unix (const struct pgd_socket_file *file);

/* The socket systemd passed (LISTEN_PID = us, LISTEN_FDS >= 1, fd 3): 1 with *FD set,
   0 when not socket-activated, -1 when the passed fd is unusable. */
int pgd_server_activated_fd (int *fd, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Serve the protocol on the listening socket FD (taken) with OPS and CTX. */
int pgd_server_start (struct pgd_server **out, int fd, const struct pgd_ops *ops, void *ctx,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Stop accepting, give requests in flight up to GRACE_MS, then cut the connections of
   Diff streams still running and give them PGD_STREAM_CUT_MS more; then stop and free S.
   False when requests were still running: S is left alive and CTX may still be in
   use, so the caller must not free CTX (it should just exit). */
bool pgd_server_stop (struct pgd_server *s, unsigned grace_ms);

#endif

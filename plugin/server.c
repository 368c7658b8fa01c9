/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libmicrohttpd set-up (PROTOCOL.md Appendix B): thread per connection so handlers may
   block, no connection timeout, a connection cap, a Unix socket passed in. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"
#include "routes.h"
#include "util.h"

/* sd_listen_fds(3): the first passed descriptor. */
#define SD_LISTEN_FDS_START 3

struct pgd_server
{
  struct MHD_Daemon *daemon;
  struct pgd_routes routes;
  int fd;
};

/* Remove PATH if it is a socket nobody listens on; fail if it is anything else. */
static int
remove_stale_socket (const char *path, const struct sockaddr_un *sa, struct pgd_err *err)
{
  cleanup_close int probe = -1;
  struct stat st;

  if (lstat (path, &st) < 0)
    return errno == ENOENT ? 0 : pgd_error (err, errno, "stat %s", path);
  if (!S_ISSOCK (st.st_mode))
    return pgd_error (err, EEXIST, "%s exists and is not a socket", path);
  probe = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0)
    return pgd_error (err, errno, "socket");
  if (connect (probe, (const struct sockaddr *)sa, sizeof *sa) == 0 || errno == EAGAIN)
    return pgd_error (err, EADDRINUSE, "another server is listening on %s", path);
  if (unlink (path) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "remove stale socket %s", path);
  pgd_log (PGD_LOG_INFO, "removed stale socket %s", path);
  return 0;
}

int
pgd_server_bind_unix (const char *path, struct pgd_socket_file *file, int *out, struct pgd_err *err)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char dir[PATH_MAX];
  cleanup_close int fd = -1;
  struct stat st;
  mode_t old_mask;
  int rc;

  if (path[0] == '\0' || strlen (path) >= sizeof sa.sun_path)
    return pgd_error (err, ENAMETOOLONG, "socket path \"%s\" (at most %zu bytes)", path,
                      sizeof sa.sun_path - 1);
  memcpy (sa.sun_path, path, strlen (path) + 1);
  snprintf (dir, sizeof dir, "%s", path);
  char *slash = strrchr (dir, '/');
  if (slash != NULL && slash != dir)
    {
      *slash = '\0';
      if (pgd_mkdir_p (dir, 0755, err) < 0)
        return pgd_error_wrap (err, "socket directory");
    }
  if (remove_stale_socket (path, &sa, err) < 0)
    return -1;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return pgd_error (err, errno, "socket");
  /* no window in which others could connect: the file is born 0600 */
  old_mask = umask (0177);
  rc = bind (fd, (const struct sockaddr *)&sa, sizeof sa);
  umask (old_mask);
  if (rc < 0)
    return pgd_error (err, errno, "bind %s", path);
  if (chmod (path, 0600) < 0)
    return pgd_error (err, errno, "chmod %s", path);
  if (listen (fd, SOMAXCONN) < 0)
    return pgd_error (err, errno, "listen on %s", path);
  if (lstat (path, &st) < 0)
    return pgd_error (err, errno, "stat %s", path);
  memcpy (file->path, sa.sun_path, sizeof file->path);
  file->dev = st.st_dev;
  file->ino = st.st_ino;
  *out = fd;
  fd = -1;
  return 0;
}

void
pgd_server_unlink_unix (const struct pgd_socket_file *file)
{
  struct stat st;

  if (lstat (file->path, &st) < 0)
    {
      if (errno != ENOENT)
        pgd_log (PGD_LOG_WARN, "stat socket %s: %s", file->path, strerror (errno));
      return;
    }
  if (st.st_dev != file->dev || st.st_ino != file->ino)
    {
      pgd_log (PGD_LOG_INFO, "socket %s was bound anew by another server; left in place",
               file->path);
      return;
    }
  if (unlink (file->path) < 0 && errno != ENOENT)
    pgd_log (PGD_LOG_WARN, "remove socket %s: %s", file->path, strerror (errno));
  else
    pgd_log (PGD_LOG_DEBUG, "removed socket %s", file->path);
}

/* Parse a decimal environment value; -1 when absent or malformed. */
static long
env_number (const char *name)
{
  const char *s = getenv (name);
  char *end;
  long v;

  if (s == NULL || *s == '\0')
    return -1;
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0)
    return -1;
  return v;
}

int
pgd_server_activated_fd (int *out, struct pgd_err *err)
{
  long pid = env_number ("LISTEN_PID");
  long nfds = env_number ("LISTEN_FDS");
  int type = 0, listening = 0;
  socklen_t len = sizeof type;
  struct stat st;

  if (pid != (long)getpid () || nfds < 1)
    return 0;
  /* ours: do not hand them on to the helpers we start */
  unsetenv ("LISTEN_PID");
  unsetenv ("LISTEN_FDS");
  unsetenv ("LISTEN_FDNAMES");
  for (long i = 0; i < nfds; i++)
    (void)fcntl (SD_LISTEN_FDS_START + (int)i, F_SETFD, FD_CLOEXEC);
  if (nfds > 1)
    pgd_log (PGD_LOG_WARN, "systemd passed %ld sockets; serving the first", nfds);
  if (fstat (SD_LISTEN_FDS_START, &st) < 0)
    return pgd_error (err, errno, "socket-activation fd %d", SD_LISTEN_FDS_START);
  if (!S_ISSOCK (st.st_mode))
    return pgd_error (err, ENOTSOCK, "socket-activation fd %d", SD_LISTEN_FDS_START);
  if (getsockopt (SD_LISTEN_FDS_START, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return pgd_error (err, errno, "socket-activation fd %d", SD_LISTEN_FDS_START);
  len = sizeof listening;
  if (getsockopt (SD_LISTEN_FDS_START, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
    return pgd_error (err, errno, "socket-activation fd %d", SD_LISTEN_FDS_START);
  if (type != SOCK_STREAM || !listening)
    return pgd_error (err, EINVAL, "socket-activation fd %d is not a listening stream socket",
                      SD_LISTEN_FDS_START);
  *out = SD_LISTEN_FDS_START;
  return 1;
}

/* libmicrohttpd's own messages go to our log. */
static void
mhd_logger (void *cls, const char *fmt, va_list ap)
{
  char line[1024];
  size_t n;

  (void)cls;
  vsnprintf (line, sizeof line, fmt, ap);
  n = strlen (line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  pgd_log (PGD_LOG_INFO, "libmicrohttpd: %s", line);
}

int
pgd_server_start (struct pgd_server **out, int fd, const struct pgd_ops *ops, void *ctx,
                  struct pgd_err *err)
{
  /* ITC: needed by MHD_quiesce_daemon; POLL: no FD_SETSIZE limit on descriptors */
  const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION
                         | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  struct pgd_server *s;
  int fl;

  fl = fcntl (fd, F_GETFL);
  if (fl < 0 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) < 0)
    {
      pgd_error (err, errno, "listening socket");
      close (fd);
      return -1;
    }
  s = calloc (1, sizeof *s);
  if (s == NULL)
    {
      close (fd);
      return pgd_error (err, ENOMEM, "server");
    }
  s->fd = fd;
  if (pgd_routes_init (&s->routes, ops, ctx, err) < 0)
    {
      close (fd);
      free (s);
      return -1;
    }
  s->daemon = MHD_start_daemon (
      flags, 0, NULL, NULL, pgd_routes_handle, &s->routes,
      /* first, so that every later message goes through it */
      MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)PGD_SERVER_MAX_CONNECTIONS, MHD_OPTION_THREAD_STACK_SIZE, PGD_REQUEST_STACK,
      MHD_OPTION_NOTIFY_COMPLETED, pgd_routes_completed, &s->routes, MHD_OPTION_END);
  if (s->daemon == NULL)
    {
      pgd_routes_destroy (&s->routes);
      close (fd);
      free (s);
      return pgd_error (err, 0, "start the HTTP server (libmicrohttpd)");
    }
  *out = s;
  return 0;
}

bool
pgd_server_stop (struct pgd_server *s, unsigned grace_ms)
{
  /* the listening socket stays open until MHD is stopped (MHD_quiesce_daemon docs) */
  if (MHD_quiesce_daemon (s->daemon) == MHD_INVALID_SOCKET)
    pgd_log (PGD_LOG_WARN, "could not stop accepting connections");
  if (!pgd_routes_wait_idle (&s->routes, grace_ms))
    {
      /* a Diff stream to a client that stopped reading would hold its layers mounted
         past our exit: cut it, and give it a moment to let them go */
      pgd_routes_cut_streams (&s->routes, "shutdown");
      if (!pgd_routes_wait_idle (&s->routes, PGD_STREAM_CUT_MS))
        {
          pgd_log (PGD_LOG_WARN, "requests still running after %u ms; not waiting for them",
                   grace_ms + PGD_STREAM_CUT_MS);
          return false;
        }
    }
  MHD_stop_daemon (s->daemon);
  close (s->fd);
  pgd_routes_destroy (&s->routes);
  free (s);
  return true;
}

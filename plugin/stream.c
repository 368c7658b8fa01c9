/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ApplyDiff and Diff: tar streams between a connection and the driver, through a
   pipe and one worker thread each, in bounded buffers (PROTOCOL.md §4.3, §5.12). */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "util.h"

/* Pipe capacity asked for (best effort) and the Diff response block size. */
#define PIPE_SIZE (1024 * 1024)
#define DIFF_BLOCK (64 * 1024)

/* A pipe whose ends are not inherited by the helpers the driver runs: a leaked
   write end would keep the reader from ever seeing EOF. */
static int
make_pipe (int fds[2], struct pgd_err *err)
{
  if (pipe2 (fds, O_CLOEXEC) < 0)
    return pgd_error (err, errno, "pipe");
  (void)fcntl (fds[1], F_SETPIPE_SZ, PIPE_SIZE);
  return 0;
}

/* Start FN(ARG) in *T with the stack a request's work needs (PGD_REQUEST_STACK). */
static int
start_worker (pthread_t *t, void *(*fn) (void *), void *arg)
{
  pthread_attr_t attr;
  int rc = pthread_attr_init (&attr);

  if (rc != 0)
    return rc;
  rc = pthread_attr_setstacksize (&attr, PGD_REQUEST_STACK);
  if (rc == 0)
    rc = pthread_create (t, &attr, fn, arg);
  pthread_attr_destroy (&attr);
  return rc;
}

static void
close_fd (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

struct pgd_apply
{
  struct pgd_routes *r;
  const struct pgd_ops *ops;
  void *ctx;
  char *id;
  char *parent;
  int rfd; /* the worker's; closed by the worker when apply_diff returns */
  int wfd; /* ours */
  pthread_t thread;
  bool running;  /* the thread exists and is not joined yet */
  bool draining; /* the worker stopped reading: drop the rest of the upload */
  int ret;
  int64_t size;
  struct pgd_err err;
};

static void *
apply_worker (void *arg)
{
  struct pgd_apply *a = arg;

  a->ret = a->ops->apply_diff (a->ctx, a->id, a->parent, a->rfd, &a->size, &a->err);
  /* from now on the writer gets EPIPE instead of blocking on a full pipe */
  close_fd (&a->rfd);
  return NULL;
}

void
pgd_apply_free (struct pgd_apply *a)
{
  if (a == NULL)
    return;
  close_fd (&a->wfd);
  if (a->running)
    pthread_join (a->thread, NULL);
  close_fd (&a->rfd);
  pgd_routes_release (a->r);
  free (a->id);
  free (a->parent);
  free (a);
}

int
pgd_apply_start (struct pgd_apply **out, struct pgd_routes *r, const char *id, const char *parent,
                 struct pgd_err *err)
{
  struct pgd_apply *a;
  int fds[2];
  int rc;

  *out = NULL;
  if (r->ops->apply_diff == NULL)
    return pgd_error (err, 0, "ApplyDiff is not implemented");
  a = calloc (1, sizeof *a);
  if (a == NULL)
    return pgd_error (err, ENOMEM, "ApplyDiff %s", id);
  a->r = r;
  pgd_routes_hold (r); /* released by pgd_apply_free */
  a->ops = r->ops;
  a->ctx = r->ctx;
  a->rfd = a->wfd = -1;
  a->id = strdup (id);
  a->parent = parent ? strdup (parent) : NULL;
  if (a->id == NULL || (parent && a->parent == NULL))
    {
      pgd_apply_free (a);
      return pgd_error (err, ENOMEM, "ApplyDiff %s", id);
    }
  if (make_pipe (fds, err) < 0)
    {
      pgd_apply_free (a);
      return pgd_error_wrap (err, "ApplyDiff %s", id);
    }
  a->rfd = fds[0];
  a->wfd = fds[1];
  rc = start_worker (&a->thread, apply_worker, a);
  if (rc != 0)
    {
      pgd_apply_free (a);
      return pgd_error (err, rc, "ApplyDiff %s: start worker", id);
    }
  a->running = true;
  *out = a;
  return 0;
}

void
pgd_apply_feed (struct pgd_apply *a, const char *data, size_t len)
{
  while (len > 0 && !a->draining)
    {
      ssize_t n = write (a->wfd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          /* EPIPE: the driver is done (failed early, or stopped after the end of
             the archive); drain the rest of the upload */
          if (errno != EPIPE)
            pgd_log (PGD_LOG_WARN, "ApplyDiff %s: write to pipe: %s", a->id, strerror (errno));
          a->draining = true;
          return;
        }
      data += n;
      len -= (size_t)n;
    }
}

int
pgd_apply_finish (struct pgd_apply *a, int64_t *size, struct pgd_err *err)
{
  close_fd (&a->wfd);
  if (a->running)
    {
      pthread_join (a->thread, NULL);
      a->running = false;
    }
  if (a->ret < 0)
    {
      *err = a->err;
      return -1;
    }
  *size = a->size;
  return 0;
}

/* One Diff response: owned by the MHD response, freed by its free callback. */
struct diff_stream
{
  struct pgd_routes *r;
  struct pgd_stream_ref ref; /* registered on R while the layers are held */
  bool registered;
  void *stream; /* from diff_open */
  char *id;
  int rfd; /* ours: the response reads it */
  int wfd; /* the worker's; closed by the worker when diff_write returns */
  pthread_t thread;
  bool running;
  int ret;
  struct pgd_err err;
};

static void *
diff_worker (void *arg)
{
  struct diff_stream *d = arg;

  d->ret = d->r->ops->diff_write (d->stream, d->wfd, &d->err);
  close_fd (&d->wfd);
  return NULL;
}

static void
diff_join (struct diff_stream *d)
{
  if (!d->running)
    return;
  pthread_join (d->thread, NULL);
  d->running = false;
}

static ssize_t
diff_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  struct diff_stream *d = cls;
  ssize_t n;

  (void)pos;
  do
    n = read (d->rfd, buf, max);
  while (n < 0 && errno == EINTR);
  if (n > 0)
    return n;
  if (n < 0)
    {
      pgd_log (PGD_LOG_WARN, "Diff %s: read from pipe: %s; cutting the stream", d->id,
               strerror (errno));
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
  diff_join (d);
  if (d->ret == 0)
    return MHD_CONTENT_READER_END_OF_STREAM;
  /* too late for a 500: end without the final chunk so dockerd sees the error */
  pgd_log (PGD_LOG_WARN, "Diff %s failed while streaming, cutting the stream: %s", d->id,
           d->err.msg);
  return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void
diff_free (void *cls)
{
  struct diff_stream *d = cls;

  /* a client that left early: the worker gets EPIPE rather than blocking forever */
  close_fd (&d->rfd);
  diff_join (d);
  close_fd (&d->wfd);
  if (d->stream)
    d->r->ops->diff_close (d->stream);
  /* only now are the layers released: Cleanup may take them down */
  if (d->registered)
    pgd_routes_stream_end (d->r, &d->ref);
  close_fd (&d->ref.conn_fd);
  pgd_routes_release (d->r);
  free (d->id);
  free (d);
}

/* Our own descriptor of CONN's socket, so that it can be shut down from another
   thread without racing libmicrohttpd's close of its own; -1 when unavailable. */
static int
dup_connection_fd (struct MHD_Connection *conn)
{
  const union MHD_ConnectionInfo *ci
      = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);

  if (ci == NULL)
    return -1;
  return fcntl (ci->connect_fd, F_DUPFD_CLOEXEC, 3);
}

int
pgd_diff_response (struct pgd_routes *r, struct MHD_Connection *conn, const char *id,
                   const char *parent, struct MHD_Response **out, struct pgd_err *err)
{
  const struct pgd_ops *ops = r->ops;
  struct MHD_Response *resp;
  struct diff_stream *d;
  int fds[2];
  int rc;

  *out = NULL;
  if (ops->diff_open == NULL || ops->diff_write == NULL || ops->diff_close == NULL)
    return pgd_error (err, 0, "Diff is not implemented");
  d = calloc (1, sizeof *d);
  if (d == NULL || (d->id = strdup (id)) == NULL)
    {
      free (d);
      return pgd_error (err, ENOMEM, "Diff %s", id);
    }
  d->r = r;
  d->rfd = d->wfd = -1;
  d->ref.id = d->id;
  d->ref.conn_fd = dup_connection_fd (conn);
  pgd_routes_hold (r); /* released by diff_free */
  if (d->ref.conn_fd < 0)
    {
      pgd_error (err, errno, "Diff %s: the connection's socket", id);
      diff_free (d);
      return -1;
    }
  if (ops->diff_open (r->ctx, id, parent, &d->stream, err) < 0)
    {
      d->stream = NULL;
      diff_free (d);
      return -1;
    }
  pgd_routes_stream_begin (r, &d->ref);
  d->registered = true;
  if (make_pipe (fds, err) < 0)
    {
      diff_free (d);
      return pgd_error_wrap (err, "Diff %s", id);
    }
  d->rfd = fds[0];
  d->wfd = fds[1];
  rc = start_worker (&d->thread, diff_worker, d);
  if (rc != 0)
    {
      diff_free (d);
      return pgd_error (err, rc, "Diff %s: start worker", id);
    }
  d->running = true;
  resp = MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, DIFF_BLOCK, diff_read, d, diff_free);
  if (resp == NULL)
    {
      diff_free (d);
      return pgd_error (err, ENOMEM, "Diff %s: response", id);
    }
  *out = resp;
  return 0;
}

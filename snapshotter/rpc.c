/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gRPC transport of the snapshotter (grpc C core 1.51). One thread waits on the
   server's completion queue for new calls; each call gets its own pluck queue and a
   detached thread that reads the request, runs the handler and sends the status. */
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rpc.h"
#include "util.h"

struct pgd_rpc_server
{
  grpc_server *server;
  grpc_completion_queue *cq; /* new calls and the shutdown notice */
  pthread_t loop;
  const struct pgd_rpc_method *methods;
  size_t nmethods;
  void *ctx;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* broadcast when a call thread ends */
  unsigned running;    /* call threads alive */
  bool stopping;
  int shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
};

struct pgd_rpc_call
{
  struct pgd_rpc_server *s;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_completion_queue *cq; /* bound to this call only */
  uintptr_t next_tag;
};

enum pgd_rpc_code
pgd_rpc_code_of (int errnum)
{
  switch (errnum)
    {
    case ENOENT:
      return PGD_RPC_NOT_FOUND;
    case EEXIST:
      return PGD_RPC_ALREADY_EXISTS;
    case EINVAL:
    case ENAMETOOLONG:
      return PGD_RPC_INVALID_ARGUMENT;
    case EBUSY:
    case ENOTEMPTY:
    case EROFS:
      return PGD_RPC_FAILED_PRECONDITION;
    case ENOSYS:
      return PGD_RPC_UNIMPLEMENTED;
    default:
      return PGD_RPC_UNKNOWN;
    }
}

/* Run one batch on the call's own queue and wait for it; true when it succeeded. */
static bool
run_batch (struct pgd_rpc_call *c, const grpc_op *ops, size_t n)
{
  void *tag = (void *)++c->next_tag;

  if (grpc_call_start_batch (c->call, ops, n, tag, NULL) != GRPC_CALL_OK)
    return false;
  grpc_event ev
      = grpc_completion_queue_pluck (c->cq, tag, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

int
pgd_rpc_send (struct pgd_rpc_call *c, const void *msg, size_t len, struct pgd_err *err)
{
  grpc_slice slice = grpc_slice_from_copied_buffer (msg, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&slice, 1);
  grpc_op op = { .op = GRPC_OP_SEND_MESSAGE };

  grpc_slice_unref (slice);
  op.data.send_message.send_message = bb;
  bool ok = run_batch (c, &op, 1);
  grpc_byte_buffer_destroy (bb);
  return ok ? 0 : pgd_error (err, EPIPE, "send a reply: the client went away");
}

static const struct pgd_rpc_method *
find_method (const struct pgd_rpc_server *s, grpc_slice path)
{
  for (size_t i = 0; i < s->nmethods; i++)
    if (grpc_slice_str_cmp (path, s->methods[i].path) == 0)
      return &s->methods[i];
  return NULL;
}

/* Read the request, run the method, set CODE and ERR for the status. */
static void
serve_call (struct pgd_rpc_call *c, enum pgd_rpc_code *code, struct pgd_err *err)
{
  grpc_byte_buffer *bb = NULL;
  grpc_op ops[2] = { { .op = GRPC_OP_SEND_INITIAL_METADATA }, { .op = GRPC_OP_RECV_MESSAGE } };

  ops[1].data.recv_message.recv_message = &bb;
  if (!run_batch (c, ops, 2) || bb == NULL)
    {
      if (bb)
        grpc_byte_buffer_destroy (bb);
      *code = PGD_RPC_INVALID_ARGUMENT;
      pgd_error (err, 0, "no request message");
      return;
    }
  grpc_byte_buffer_reader reader;
  grpc_slice req = grpc_empty_slice ();
  if (grpc_byte_buffer_reader_init (&reader, bb))
    {
      req = grpc_byte_buffer_reader_readall (&reader);
      grpc_byte_buffer_reader_destroy (&reader);
    }
  grpc_byte_buffer_destroy (bb);

  const struct pgd_rpc_method *m = find_method (c->s, c->details.method);
  *code = PGD_RPC_OK;
  if (m == NULL)
    {
      char *name = grpc_slice_to_c_string (c->details.method);
      *code = PGD_RPC_UNIMPLEMENTED;
      pgd_error (err, 0, "unknown method %s", name ? name : "?");
      gpr_free (name);
    }
  else if (m->fn (c->s->ctx, c, GRPC_SLICE_START_PTR (req), GRPC_SLICE_LENGTH (req), err) < 0)
    *code = pgd_rpc_code_of (err->errnum);
  grpc_slice_unref (req);
}

static void
free_call (struct pgd_rpc_call *c)
{
  if (c->call)
    grpc_call_unref (c->call);
  grpc_call_details_destroy (&c->details);
  grpc_metadata_array_destroy (&c->md);
  if (c->cq)
    {
      grpc_completion_queue_shutdown (c->cq);
      while (
          grpc_completion_queue_pluck (c->cq, NULL, gpr_inf_future (GPR_CLOCK_REALTIME), NULL).type
          != GRPC_QUEUE_SHUTDOWN)
        ;
      grpc_completion_queue_destroy (c->cq);
    }
  free (c);
}

static void *
call_thread (void *arg)
{
  struct pgd_rpc_call *c = arg;
  struct pgd_rpc_server *s = c->s;
  struct pgd_err err = { 0 };
  enum pgd_rpc_code code;
  int cancelled = 0;

  grpc_op close_op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };
  close_op.data.recv_close_on_server.cancelled = &cancelled;
  void *close_tag = (void *)++c->next_tag;
  bool close_started
      = grpc_call_start_batch (c->call, &close_op, 1, close_tag, NULL) == GRPC_CALL_OK;

  serve_call (c, &code, &err);
  if (code != PGD_RPC_OK)
    pgd_log (code == PGD_RPC_NOT_FOUND || code == PGD_RPC_ALREADY_EXISTS ? PGD_LOG_DEBUG
                                                                         : PGD_LOG_WARN,
             "rpc status %d: %s", code, err.msg);
  grpc_slice details = grpc_slice_from_copied_string (code == PGD_RPC_OK ? "" : err.msg);
  grpc_op st = { .op = GRPC_OP_SEND_STATUS_FROM_SERVER };
  st.data.send_status_from_server.status = (grpc_status_code)code;
  st.data.send_status_from_server.status_details = &details;
  run_batch (c, &st, 1);
  grpc_slice_unref (details);
  if (close_started)
    grpc_completion_queue_pluck (c->cq, close_tag, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
  free_call (c);

  PGD_SCOPED_LOCK (&s->lock);
  s->running--;
  pthread_cond_broadcast (&s->cond);
  return NULL;
}

/* Ask the server for the next call; NULL when it is shutting down or out of memory. */
static struct pgd_rpc_call *
request_call (struct pgd_rpc_server *s)
{
  struct pgd_rpc_call *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  c->s = s;
  grpc_call_details_init (&c->details);
  grpc_metadata_array_init (&c->md);
  c->cq = grpc_completion_queue_create_for_pluck (NULL);
  if (grpc_server_request_call (s->server, &c->call, &c->details, &c->md, c->cq, s->cq, c)
      != GRPC_CALL_OK)
    {
      free_call (c);
      return NULL;
    }
  return c;
}

static void *
loop_thread (void *arg)
{
  struct pgd_rpc_server *s = arg;
  bool shut = false, pending = request_call (s) != NULL;

  for (;;)
    {
      grpc_event ev = grpc_completion_queue_next (s->cq, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      if (ev.type != GRPC_OP_COMPLETE)
        continue;
      if (ev.tag == &s->shutdown_tag)
        shut = true;
      else
        {
          struct pgd_rpc_call *c = ev.tag;
          pending = false;
          if (ev.success)
            {
              pthread_t t;
              pthread_attr_t attr;
              pthread_attr_init (&attr);
              pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
              pthread_mutex_lock (&s->lock);
              s->running++;
              pthread_mutex_unlock (&s->lock);
              if (pthread_create (&t, &attr, call_thread, c) != 0)
                {
                  pgd_log (PGD_LOG_ERROR, "rpc: cannot start a thread for a call");
                  grpc_call_cancel (c->call, NULL);
                  free_call (c);
                  pthread_mutex_lock (&s->lock);
                  s->running--;
                  pthread_mutex_unlock (&s->lock);
                }
              pthread_attr_destroy (&attr);
            }
          else
            free_call (c);
          if (!shut)
            pending = request_call (s) != NULL;
        }
      if (shut && !pending)
        grpc_completion_queue_shutdown (s->cq);
    }
  return NULL;
}

int
pgd_rpc_start (struct pgd_rpc_server **out, const char *path, const struct pgd_rpc_method *methods,
               size_t n, void *ctx, struct pgd_err *err)
{
  char dir[PATH_MAX], addr[PATH_MAX + 8];
  struct stat st;

  if (strlen (path) >= 100)
    return pgd_error (err, ENAMETOOLONG, "socket %s", path);
  snprintf (dir, sizeof dir, "%s", path);
  char *slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = '\0';
      if (pgd_mkdir_p (dir, 0711, err) < 0)
        return -1;
    }
  if (lstat (path, &st) == 0)
    {
      if (!S_ISSOCK (st.st_mode))
        return pgd_error (err, EEXIST, "socket %s: exists and is not a socket", path);
      if (unlink (path) < 0)
        return pgd_error (err, errno, "remove stale socket %s", path);
    }
  struct pgd_rpc_server *s = calloc (1, sizeof *s);
  if (s == NULL)
    return pgd_error (err, ENOMEM, "rpc server");
  s->methods = methods;
  s->nmethods = n;
  s->ctx = ctx;
  pthread_mutex_init (&s->lock, NULL);
  pthread_cond_init (&s->cond, NULL);
  grpc_init ();
  s->server = grpc_server_create (NULL, NULL);
  s->cq = grpc_completion_queue_create_for_next (NULL);
  grpc_server_register_completion_queue (s->server, s->cq, NULL);
  snprintf (addr, sizeof addr, "unix:%s", path);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create ();
  mode_t old = umask (0077); /* root (containerd) only */
  int port = grpc_server_add_http2_port (s->server, addr, creds);
  umask (old);
  grpc_server_credentials_release (creds);
  if (port == 0)
    {
      grpc_server_destroy (s->server);
      grpc_completion_queue_shutdown (s->cq);
      grpc_completion_queue_destroy (s->cq);
      grpc_shutdown ();
      free (s);
      return pgd_error (err, 0, "listen on %s: grpc refused the address", path);
    }
  grpc_server_start (s->server);
  if (pthread_create (&s->loop, NULL, loop_thread, s) != 0)
    {
      free (s);
      return pgd_error (err, EAGAIN, "rpc server thread");
    }
  *out = s;
  return 0;
}

bool
pgd_rpc_stop (struct pgd_rpc_server *s, unsigned grace_ms)
{
  struct timespec until;

  grpc_server_shutdown_and_notify (s->server, s->cq, &s->shutdown_tag);
  grpc_server_cancel_all_calls (s->server);
  pthread_join (s->loop, NULL);
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += grace_ms / 1000;
  until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L)
    {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  pthread_mutex_lock (&s->lock);
  while (s->running > 0)
    if (pthread_cond_timedwait (&s->cond, &s->lock, &until) == ETIMEDOUT)
      break;
  bool done = s->running == 0;
  pthread_mutex_unlock (&s->lock);
  if (!done)
    return false;
  grpc_server_destroy (s->server);
  grpc_completion_queue_destroy (s->cq);
  grpc_shutdown ();
  pthread_mutex_destroy (&s->lock);
  pthread_cond_destroy (&s->cond);
  free (s);
  return true;
}

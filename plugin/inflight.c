/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "inflight.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "util.h"

int
pgd_routes_init (struct pgd_routes *r, const struct pgd_ops *ops, void *ctx, struct pgd_err *err)
{
  pthread_condattr_t attr;
  int rc;

  memset (r, 0, sizeof *r);
  r->ops = ops;
  r->ctx = ctx;
  rc = pthread_mutex_init (&r->lock, NULL);
  if (rc != 0)
    return pgd_error (err, rc, "routes lock");
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  rc = pthread_cond_init (&r->idle, &attr);
  pthread_condattr_destroy (&attr);
  if (rc != 0)
    {
      pthread_mutex_destroy (&r->lock);
      return pgd_error (err, rc, "routes condition");
    }
  return 0;
}

void
pgd_routes_destroy (struct pgd_routes *r)
{
  pthread_mutex_destroy (&r->lock);
  pthread_cond_destroy (&r->idle);
}

void
pgd_routes_hold (struct pgd_routes *r)
{
  PGD_SCOPED_LOCK (&r->lock);
  r->active++;
}

void
pgd_routes_release (struct pgd_routes *r)
{
  PGD_SCOPED_LOCK (&r->lock);
  if (--r->active == 0)
    pthread_cond_broadcast (&r->idle);
}

/* The CLOCK_MONOTONIC time TIMEOUT_MS from now, for pthread_cond_timedwait on IDLE. */
static struct timespec
deadline_in (unsigned timeout_ms)
{
  return pgd_timespec_at (pgd_now_ns () + (uint64_t)timeout_ms * 1000000ULL);
}

bool
pgd_routes_wait_idle (struct pgd_routes *r, unsigned timeout_ms)
{
  struct timespec until = deadline_in (timeout_ms);

  PGD_SCOPED_LOCK (&r->lock);
  while (r->active > 0)
    if (pthread_cond_timedwait (&r->idle, &r->lock, &until) == ETIMEDOUT)
      break;
  return r->active == 0;
}

void
pgd_routes_stream_begin (struct pgd_routes *r, struct pgd_stream_ref *ref)
{
  PGD_SCOPED_LOCK (&r->lock);
  ref->next = r->streams;
  r->streams = ref;
}

void
pgd_routes_stream_end (struct pgd_routes *r, struct pgd_stream_ref *ref)
{
  PGD_SCOPED_LOCK (&r->lock);
  for (struct pgd_stream_ref **pp = &r->streams; *pp; pp = &(*pp)->next)
    if (*pp == ref)
      {
        *pp = ref->next;
        break;
      }
  pthread_cond_broadcast (&r->idle);
}

/* Wait up to TIMEOUT_MS for no Diff stream to be in flight; called with R->lock held. */
static bool
wait_streams_locked (struct pgd_routes *r, unsigned timeout_ms)
{
  struct timespec until = deadline_in (timeout_ms);

  while (r->streams != NULL)
    if (pthread_cond_timedwait (&r->idle, &r->lock, &until) == ETIMEDOUT)
      break;
  return r->streams == NULL;
}

/* Shut the connections of the streams in flight down; called with R->lock held. The
   sender then fails, libmicrohttpd frees the response, and its worker and layers go. */
static void
cut_streams_locked (struct pgd_routes *r, const char *who)
{
  for (struct pgd_stream_ref *s = r->streams; s; s = s->next)
    {
      pgd_log (PGD_LOG_WARN, "%s: the Diff of %s is still streaming; cutting its connection", who,
               s->id);
      if (shutdown (s->conn_fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
        pgd_log (PGD_LOG_WARN, "%s: shut the Diff of %s down: %s", who, s->id, strerror (errno));
    }
}

void
pgd_routes_cut_streams (struct pgd_routes *r, const char *who)
{
  PGD_SCOPED_LOCK (&r->lock);
  cut_streams_locked (r, who);
}

bool
pgd_routes_drain_streams (struct pgd_routes *r, const char *who)
{
  PGD_SCOPED_LOCK (&r->lock);
  if (r->streams == NULL)
    return true;
  pgd_log (PGD_LOG_INFO, "%s: waiting up to %u ms for Diff streams in flight", who,
           (unsigned)PGD_STREAM_DRAIN_MS);
  if (wait_streams_locked (r, PGD_STREAM_DRAIN_MS))
    return true;
  cut_streams_locked (r, who);
  if (wait_streams_locked (r, PGD_STREAM_CUT_MS))
    return true;
  pgd_log (PGD_LOG_WARN, "%s: Diff streams still hold their layers %u ms after the cut", who,
           (unsigned)PGD_STREAM_CUT_MS);
  return false;
}

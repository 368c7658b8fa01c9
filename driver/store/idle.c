/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Idle mounts: a layer whose last reference went away stays mounted for linger_ms, so
   the Put-then-Get pairs dockerd makes (docker create then start, a container's stop
   then diff or commit) do not pay a whole unmount and mount of the user engine. One
   thread finds each idle layer whose time is up and hands its unmount to a thread of its
   own: an unmount stuck on one image server (stopped, until the engine declares it dead)
   never holds up the others. Anything that needs the layer
   closed (Remove, a clone of it as a parent, shutdown, ApplyDiff's end) unmounts it at
   once instead. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "log.h"
#include "util.h"

/* The idle layer whose time is up, or NULL; *NEXT gets the earliest deadline still to
   come (0 when none). Called with l->lock held. */
static struct layer *
due_layer (struct pgd_layers *l, uint64_t now, uint64_t *next)
{
  uint64_t linger = (uint64_t)l->linger_ms * 1000000ULL;

  *next = 0;
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    for (struct layer *lay = l->table[b]; lay; lay = lay->next)
      {
        if (lay->busy || lay->state != LAYER_MOUNTED || lay->refs > 0 || lay->idle_since == 0)
          continue;
        uint64_t deadline = lay->idle_since + linger;
        if (deadline <= now)
          return lay;
        if (*next == 0 || deadline < *next)
          *next = deadline;
      }
  return NULL;
}

/* Unmount LAY, claimed by the reaper; unclaim it. Called with l->lock held. */
static void
unmount_idle (struct pgd_layers *l, struct layer *lay)
{
  struct pgd_err err;

  pgd_log (PGD_LOG_DEBUG, "idle layer %s: unmounting", lay->id);
  if (pgd_layer_unmount (l, lay, &err) < 0)
    {
      pgd_log (PGD_LOG_WARN, "idle layer %s: %s; retrying later", lay->id, err.msg);
      if (lay->state == LAYER_MOUNTED)
        lay->idle_since = pgd_now_ns ();
    }
  pgd_layer_unclaim (l, lay);
}

struct reap_job
{
  struct pgd_layers *l;
  struct layer *lay;
};

static void *
reap_job_main (void *arg)
{
  struct reap_job *job = arg;
  struct pgd_layers *l = job->l;

  {
    PGD_SCOPED_LOCK (&l->lock);
    unmount_idle (l, job->lay);
    l->reap_jobs--;
    pthread_cond_broadcast (&l->cond); /* pgd_reaper_stop waits for the last one */
  }
  free (job);
  return NULL;
}

/* Unmount LAY (claimed) in a thread of its own; inline when none can be started. Called
   with l->lock held. */
static void
reap (struct pgd_layers *l, struct layer *lay)
{
  struct reap_job *job = malloc (sizeof *job);
  pthread_attr_t attr;
  pthread_t t;

  if (job != NULL)
    {
      *job = (struct reap_job){ .l = l, .lay = lay };
      pthread_attr_init (&attr);
      pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
      int rc = pthread_create (&t, &attr, reap_job_main, job);
      pthread_attr_destroy (&attr);
      if (rc == 0)
        {
          l->reap_jobs++;
          return;
        }
      free (job);
    }
  unmount_idle (l, lay);
}

static void *
reaper_main (void *arg)
{
  struct pgd_layers *l = arg;

  PGD_SCOPED_LOCK (&l->lock);
  while (!l->reaper_stop)
    {
      uint64_t next;
      struct layer *lay = due_layer (l, pgd_now_ns (), &next);
      if (lay)
        {
          if (pgd_layer_claim (l, lay)) /* immediate: a due layer is not busy */
            reap (l, lay);
          continue;
        }
      if (next == 0)
        pthread_cond_wait (&l->cond, &l->lock);
      else
        {
          struct timespec ts = pgd_timespec_at (next);
          pthread_cond_timedwait (&l->cond, &l->lock, &ts);
        }
    }
  return NULL;
}

int
pgd_reaper_start (struct pgd_layers *l, struct pgd_err *err)
{
  if (l->linger_ms == 0)
    return 0;
  l->reaper_stop = false;
  int rc = pthread_create (&l->reaper, NULL, reaper_main, l);
  if (rc != 0)
    return pgd_error (err, rc, "start the idle-mount reaper");
  l->reaper_running = true;
  return 0;
}

void
pgd_reaper_stop (struct pgd_layers *l)
{
  if (!l->reaper_running)
    return;
  {
    PGD_SCOPED_LOCK (&l->lock);
    l->reaper_stop = true;
    pthread_cond_broadcast (&l->cond);
  }
  pthread_join (l->reaper, NULL);
  l->reaper_running = false;
  PGD_SCOPED_LOCK (&l->lock);
  while (l->reap_jobs > 0)
    pthread_cond_wait (&l->cond, &l->lock);
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer table: one entry per layer in use (hashed by ID), pinned while claimed or
   awaited; claims (one mount, unmount, clone or remove at a time per layer); the
   store's paths and the on-disk checks of a layer. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "internal.h"
#include "log.h"
#include "request.h"
#include "track.h"
#include "util.h"

/* how often a request waiting for a claim looks whether its client is still there */
#define CANCEL_POLL_MS 200U

static unsigned
hash_id (const char *id)
{
  unsigned h = 5381;
  for (const unsigned char *p = (const unsigned char *)id; *p; p++)
    h = h * 33 + *p;
  return h % PGD_BUCKETS;
}

void
pgd_store_path (const struct pgd_layers *l, char *buf, const char *sub, const char *id)
{
  if (id)
    pgd_pathf (buf, PATH_MAX, "%s/%s/%s", l->home, sub, id);
  else
    pgd_pathf (buf, PATH_MAX, "%s/%s", l->home, sub);
}

int
pgd_store_ready (const struct pgd_layers *l, struct pgd_err *err)
{
  if (!l->ready)
    return pgd_error (err, 0, "driver not initialised: no Init received and no saved state");
  return 0;
}

struct layer *
pgd_layer_find (struct pgd_layers *l, const char *id, bool create)
{
  unsigned h = hash_id (id);
  struct layer *lay;

  for (lay = l->table[h]; lay; lay = lay->next)
    if (strcmp (lay->id, id) == 0)
      return lay;
  if (!create)
    return NULL;
  lay = calloc (1, sizeof *lay);
  if (lay == NULL)
    return NULL;
  lay->id = strdup (id);
  if (lay->id == NULL)
    {
      free (lay);
      return NULL;
    }
  lay->next = l->table[h];
  l->table[h] = lay;
  return lay;
}

static void
free_layer (struct layer *lay)
{
  free (lay->id);
  free (lay);
}

void
pgd_layer_forget (struct pgd_layers *l, const char *id)
{
  struct layer **pp = &l->table[hash_id (id)];

  for (; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->id, id) == 0)
      {
        struct layer *dead = *pp;
        *pp = dead->next;
        if (dead->pins == 0)
          free_layer (dead);
        else
          {
            /* a thread holds or waits for its claim: the last of them frees it */
            dead->gone = true;
            pthread_cond_broadcast (&l->cond);
          }
        return;
      }
}

bool
pgd_layer_on_disk (const struct pgd_layers *l, const char *id)
{
  char path[PATH_MAX];
  struct stat st;

  pgd_pathf (path, sizeof path, "%s/layers/%s/" PGD_IMAGE_DD, l->home, id);
  return stat (path, &st) == 0;
}

/* The ApplyDiff marker: absent = never applied; "started"; "done". */
static void
apply_marker_path (const struct pgd_layers *l, const char *id, char *buf)
{
  pgd_pathf (buf, PATH_MAX, "%s/layers/%s/applydiff", l->home, id);
}

int
pgd_layer_usable (const struct pgd_layers *l, const char *id, struct pgd_err *err)
{
  char path[PATH_MAX];
  cleanup_free char *state = NULL;
  struct pgd_err ignored;

  apply_marker_path (l, id, path);
  if (access (path, F_OK) < 0)
    return 0;
  if (pgd_read_file (path, &state, NULL, &ignored) == 0 && strcmp (state, "done") == 0)
    return 0;
  return pgd_error (err, 0, "layer %s is incomplete (its ApplyDiff did not finish); remove it", id);
}

/* Drop one pin of LAY; the last pin of an entry already out of the table frees it. */
static void
unpin (struct layer *lay)
{
  if (--lay->pins == 0 && lay->gone)
    free_layer (lay);
}

/* Wait for LAY's claim: 1 claimed, 0 the entry left the table meanwhile, -1 the calling
   request's client went away while it waited (CANCELLABLE only; polled every
   CANCEL_POLL_MS, since a hang-up wakes nobody here). */
static int
claim_wait (struct pgd_layers *l, struct layer *lay, bool cancellable)
{
  lay->pins++;
  while (lay->busy && !lay->gone)
    {
      if (!cancellable)
        {
          pthread_cond_wait (&l->cond, &l->lock);
          continue;
        }
      struct timespec ts = pgd_timespec_at (pgd_now_ns () + (uint64_t)CANCEL_POLL_MS * 1000000ULL);
      pthread_cond_timedwait (&l->cond, &l->lock, &ts);
      if (lay->busy && !lay->gone && pgd_request_gone ())
        {
          unpin (lay);
          return -1;
        }
    }
  if (lay->gone)
    {
      unpin (lay);
      return 0;
    }
  lay->busy = true; /* the pin stays until the unclaim */
  return 1;
}

bool
pgd_layer_claim (struct pgd_layers *l, struct layer *lay)
{
  return claim_wait (l, lay, false) == 1;
}

struct layer *
pgd_layer_claim_id (struct pgd_layers *l, const char *id, bool create)
{
  for (;;)
    {
      struct layer *lay = pgd_layer_find (l, id, create);
      if (lay == NULL || pgd_layer_claim (l, lay))
        return lay;
    }
}

struct layer *
pgd_layer_claim_req (struct pgd_layers *l, const char *id, const char *what, struct pgd_err *err)
{
  for (;;)
    {
      struct layer *lay = pgd_layer_find (l, id, true);
      if (lay == NULL)
        return pgd_error (err, ENOMEM, "%s %s", what, id), NULL;
      bool waited = lay->busy;
      if (waited)
        pgd_log (PGD_LOG_DEBUG, "%s %s: waiting (another operation holds the layer)", what, id);
      int rc = claim_wait (l, lay, true);
      if (rc == 0)
        continue;
      /* after a wait, the client may have left: stop before anything changes */
      char req[PATH_MAX];
      snprintf (req, sizeof req, "%s %s", what, id);
      if (rc < 0 || (waited && pgd_request_gone ()))
        {
          if (rc == 1)
            pgd_layer_unclaim (l, lay);
          if (pgd_request_check (req, err) < 0)
            return NULL;
          continue; /* (not reached: a hang-up stays) */
        }
      return lay;
    }
}

void
pgd_layer_unclaim (struct pgd_layers *l, struct layer *lay)
{
  lay->busy = false;
  pthread_cond_broadcast (&l->cond);
  unpin (lay);
}

/* Unclaim LAY, claimed for an ID found absent: its entry goes unless it tracks a mount. */
void
pgd_layer_unclaim_absent (struct pgd_layers *l, struct layer *lay)
{
  if (lay->state == LAYER_UNMOUNTED && lay->refs == 0)
    pgd_layer_forget (l, lay->id);
  pgd_layer_unclaim (l, lay);
}

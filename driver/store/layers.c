/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store: Get, Put, Exists, Cleanup, mount reference counting, open and close
   (the table is table.c, Create and Remove lifecycle.c). Layout under Home:
     layers/<id>/     the layer's ploop image (DiskDescriptor.xml, deltas) + metadata
     mnt/<id>/        where the layer is mounted (the path Get returns, stable per ID)
     run/<id>/        the engine's runtime state for a mounted layer
     staging/         layers being created; swept at start
     templates/<s>-<c>/  an empty formatted base image every base layer is cloned from */
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

int
pgd_layer_acquire (struct pgd_layers *l, const char *id, const char *mount_label, unsigned flags,
                   char *dir, struct pgd_err *err)
{
  bool need_rw = flags & PGD_ACQ_RW;
  char image[PATH_MAX], run[PATH_MAX], opts[PATH_MAX + 32];
  struct pgd_image_info info;
  struct layer *lay;
  int ret;

  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    return -1;
  /* claimed first: a Remove that held the claim has deleted the layer by now */
  lay = pgd_layer_claim_req (l, id, "get layer", err);
  if (lay == NULL)
    return -1;
  ret = 0;
  if (!pgd_layer_on_disk (l, id))
    ret = pgd_error (err, ENOENT, "layer %s", id);
  else if (!(flags & PGD_ACQ_APPLYING))
    ret = pgd_layer_usable (l, id, err);
  if (ret < 0)
    {
      pgd_layer_unclaim_absent (l, lay);
      return -1;
    }
  pgd_store_path (l, dir, "mnt", id);
  pgd_store_path (l, image, "layers", id);
  pgd_store_path (l, run, "run", id);
  if (lay->state == LAYER_MOUNTED && lay->refs == 0 && lay->idle_since != 0)
    {
      /* an idle mount is taken back only while its image server lives */
      pthread_mutex_unlock (&l->lock);
      bool alive = pgd_engine_is_mounted (&l->engine, image, run, dir);
      pthread_mutex_lock (&l->lock);
      if (!alive)
        {
          pgd_log (PGD_LOG_WARN,
                   "idle layer %s lost its image server (dead or stopped); mounting it again", id);
          /* the teardown reports the unclean close; the mount below checks the image */
          if (pgd_layer_unmount (l, lay, err) < 0 && lay->state == LAYER_MOUNTED)
            {
              pgd_layer_unclaim (l, lay);
              return -1;
            }
        }
    }
  if (lay->server_lost && lay->state == LAYER_UNMOUNTED)
    {
      /* said once, to the first Get after it, rather than mounted again in silence */
      lay->server_lost = false;
      pgd_layer_unclaim (l, lay);
      return pgd_error (err, PGD_ESTALLED,
                        "layer %s: its image server made no progress for %u ms and was declared "
                        "dead (killed); writes not yet flushed may be lost; the image is checked "
                        "at the next Get",
                        id, l->stall_ms);
    }
  if (lay->state != LAYER_MOUNTED)
    {
      /* the mount below is the first change: not for a client that has gone */
      char what[PATH_MAX];
      snprintf (what, sizeof what, "get layer %s", id);
      if (pgd_request_check (what, err) < 0)
        {
          pgd_layer_unclaim (l, lay);
          return -1;
        }
    }
  if (lay->state == LAYER_MOUNTED)
    {
      ret = 0;
      if (need_rw && lay->ro)
        ret = pgd_error (err, EROFS,
                         "layer %s is mounted read-only (a child layer shares its data)", id);
      else
        {
          lay->refs++;
          lay->idle_since = 0;
        }
      pgd_layer_unclaim (l, lay);
      return ret;
    }

  /* first reference: mount outside the lock */
  pthread_mutex_unlock (&l->lock);
  ret = pgd_image_info (image, &info, err);
  if (ret == 0 && need_rw && info.top_shared)
    ret = pgd_error (err, EROFS, "layer %s has child layers; it can only be read", id);
  if (ret == 0)
    ret = pgd_mkdir_p (dir, 0755, err);
  if (ret == 0)
    ret = pgd_mkdir_p (run, 0700, err);
  if (ret == 0 && (flags & PGD_ACQ_APPLYING))
    pgd_track_drop (l->tracker, id, image); /* an ApplyDiff is no clone's change */
  else if (ret == 0)
    pgd_track_open (l->tracker, id, image, info.top_file, !info.top_shared);
  opts[0] = '\0';
  if (mount_label && *mount_label)
    snprintf (opts, sizeof opts, "context=\"%s\"", mount_label);
  if (ret == 0)
    ret = pgd_engine_mount (&l->engine, image, run, dir, info.top_shared ? PGD_MOUNT_RO : 0,
                            opts[0] ? opts : NULL, err);
  if (ret == 0 && !info.top_shared && !(flags & PGD_ACQ_APPLYING))
    pgd_track_watch (l->tracker, id, dir);
  else if (ret < 0)
    pgd_track_close (l->tracker, id, image, false);
  pthread_mutex_lock (&l->lock);
  if (ret == 0)
    {
      lay->state = LAYER_MOUNTED;
      lay->ro = info.top_shared;
      lay->refs = 1;
      pgd_log (PGD_LOG_DEBUG, "mounted %s at %s%s", id, dir, lay->ro ? " (read-only)" : "");
    }
  else
    pgd_error_wrap (err, "mount layer %s", id);
  pgd_layer_unclaim (l, lay);
  return ret;
}

/* After a clean unmount of ID: its runtime directory RUN (the closed server's log) and
   its empty mount point DIR go. Nothing of a closed layer stays outside layers/ (a
   Get makes both again), and a stray write to the old path fails instead of landing
   on the host disk. An unclean close keeps RUN, and its log, for a look. */
static void
tidy_unmounted (const char *id, const char *run, const char *dir)
{
  struct pgd_err e;

  if (pgd_rm_rf (run, &e) < 0)
    pgd_log (PGD_LOG_WARN, "layer %s: %s", id, e.msg);
  if (rmdir (dir) < 0 && errno != ENOENT)
    pgd_log (PGD_LOG_WARN, "layer %s: rmdir %s: %s (something wrote into it unmounted)", id, dir,
             strerror (errno));
}

int
pgd_layer_unmount (struct pgd_layers *l, struct layer *lay, struct pgd_err *err)
{
  char image[PATH_MAX], run[PATH_MAX], dir[PATH_MAX];

  pthread_mutex_unlock (&l->lock);
  pgd_store_path (l, image, "layers", lay->id);
  pgd_store_path (l, run, "run", lay->id);
  pgd_store_path (l, dir, "mnt", lay->id);
  int ret = pgd_engine_umount (&l->engine, image, run, dir, err);
  bool gone = ret == 0 || !pgd_is_mountpoint (dir);
  bool lost = ret < 0 && err->errnum == PGD_ESTALLED;
  if (gone)
    pgd_track_close (l->tracker, lay->id, image, ret == 0);
  if (ret == 0)
    tidy_unmounted (lay->id, run, dir);
  pthread_mutex_lock (&l->lock);
  lay->idle_since = 0;
  if (lost)
    lay->server_lost = true;
  if (gone)
    {
      /* also when torn down all the same (e.g. its image server had died): a later Get
         must mount again, not hand out the bare directory */
      lay->state = LAYER_UNMOUNTED;
      lay->refs = 0;
    }
  if (ret < 0)
    return pgd_error_wrap (err, "unmount layer %s", lay->id);
  pgd_log (PGD_LOG_DEBUG, "unmounted %s", lay->id);
  return 0;
}

int
pgd_layer_release (struct pgd_layers *l, const char *id, unsigned flags, struct pgd_err *err)
{
  struct layer *lay;

  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    return -1;
  lay = pgd_layer_claim_id (l, id, false);
  if (lay == NULL)
    return 0;
  if (lay->state != LAYER_MOUNTED || lay->refs == 0 || --lay->refs > 0)
    {
      pgd_layer_unclaim (l, lay);
      return 0;
    }
  if (l->linger_ms > 0 && !(flags & PGD_REL_NOW))
    {
      lay->idle_since = pgd_now_ns (); /* the unclaim wakes the reaper */
      pgd_layer_unclaim (l, lay);
      return 0;
    }
  int ret = pgd_layer_unmount (l, lay, err);
  if (ret < 0 && lay->state == LAYER_MOUNTED)
    lay->refs = 1; /* still mounted: a later Put retries */
  pgd_layer_unclaim (l, lay);
  return ret;
}

int
pgd_store_get (void *ctx, const char *id, const char *mount_label, char **dir, struct pgd_err *err)
{
  char path[PATH_MAX];

  if (pgd_layer_acquire (ctx, id, mount_label, 0, path, err) < 0)
    return -1;
  *dir = strdup (path);
  if (*dir == NULL)
    {
      struct pgd_err ignored;
      if (pgd_layer_release (ctx, id, 0, &ignored) < 0)
        pgd_log (PGD_LOG_WARN, "%s", ignored.msg);
      return pgd_error (err, ENOMEM, "get %s", id);
    }
  return 0;
}

int
pgd_store_put (void *ctx, const char *id, struct pgd_err *err)
{
  return pgd_layer_release (ctx, id, 0, err);
}

int
pgd_store_exists (void *ctx, const char *id, bool *exists, struct pgd_err *err)
{
  struct pgd_layers *l = ctx;

  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    return -1;
  *exists = pgd_layer_on_disk (l, id);
  return 0;
}

int
pgd_layers_unmount_idle (struct pgd_layers *l, bool wait, struct pgd_err *err)
{
  cleanup_free char **ids = NULL;
  size_t n = 0, cap = 0;
  int ret = 0;

  /* IDs, not entries: an entry may be freed while the lock is dropped below */
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    for (struct layer *lay = l->table[b]; lay; lay = lay->next)
      {
        bool idle = !lay->busy && lay->state == LAYER_MOUNTED && lay->refs == 0;
        if (!idle && !(wait && lay->busy))
          continue;
        if (n == cap)
          {
            char **more = realloc (ids, (cap = cap ? cap * 2 : 32) * sizeof *ids);
            if (more == NULL)
              {
                ret = pgd_error (err, ENOMEM, "unmount idle layers");
                goto out;
              }
            ids = more;
          }
        if ((ids[n] = strdup (lay->id)) == NULL)
          {
            ret = pgd_error (err, ENOMEM, "unmount idle layers");
            goto out;
          }
        n++;
      }
  for (size_t i = 0; i < n; i++)
    {
      struct layer *lay = pgd_layer_claim_id (l, ids[i], false);
      struct pgd_err e;
      if (lay == NULL)
        continue; /* removed meanwhile */
      if (lay->state == LAYER_MOUNTED && lay->refs == 0 && pgd_layer_unmount (l, lay, &e) < 0)
        {
          pgd_log (PGD_LOG_WARN, "unmount idle layer: %s", e.msg);
          if (ret == 0)
            {
              *err = e;
              ret = -1;
            }
        }
      pgd_layer_unclaim (l, lay);
    }
out:
  for (size_t i = 0; i < n; i++)
    free (ids[i]);
  return ret;
}

void
pgd_layers_shutdown (struct pgd_layers *l)
{
  struct pgd_err err;

  /* a busy layer is being unmounted (or mounted, then held) by another thread: skipped;
     each failure is logged */
  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_layers_unmount_idle (l, false, &err) < 0)
    pgd_log (PGD_LOG_DEBUG, "cleanup: not every idle layer was unmounted (%s)", err.msg);
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Create of a read-write layer on a parent that is mounted read-write and idle (docker
   run's container layer on its -init layer, kept mounted for the linger time): the
   engine snapshots the served parent online and its mount becomes the child's, so the
   parent is not unmounted before the clone and the child's first Get mounts nothing.
   The kernel engine, or any failure before the switch, leaves the regular path
   (unmount the parent, clone it) to the caller. Only with PGD_ONLINE_SNAPSHOT=1 in
   the environment (see enabled). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "internal.h"
#include "log.h"
#include "track.h"
#include "util.h"

#define PARENT_FILE "parent"
#define ONLINE_ENV "PGD_ONLINE_SNAPSHOT"

struct fork_ctx
{
  struct pgd_tracker *t;
  const char *parent, *child, *dir;
};

static void
fork_record (void *p)
{
  struct fork_ctx *f = p;
  pgd_track_fork (f->t, f->parent, f->child, f->dir);
}

/* Claim PARENT when it is mounted read-write, idle and whole; NULL otherwise. */
static struct layer *
claim_idle_parent (struct pgd_layers *l, const char *parent)
{
  struct pgd_err ignored;

  PGD_SCOPED_LOCK (&l->lock);
  struct layer *play = pgd_layer_claim_id (l, parent, false);
  if (play == NULL)
    return NULL;
  if (play->state != LAYER_MOUNTED || play->ro || play->refs != 0 || play->idle_since == 0
      || pgd_layer_usable (l, parent, &ignored) < 0)
    {
      pgd_layer_unclaim (l, play);
      return NULL;
    }
  return play;
}

/* Take down what a snapshot that could not be finished left mounted (under PRUN or
   CRUN, whichever holds it), and the child's image IMAGE. */
static void
abandon (struct pgd_layers *l, const char *id, const char *image, const char *prun,
         const char *crun)
{
  struct pgd_err e;
  const char *run = pgd_engine_snapshot_pending (prun) ? prun : crun;

  pgd_track_drop (l->tracker, id, image);
  if (pgd_engine_snapshot_pending (run)
      && pgd_engine_snapshot_abort (&l->engine, image, run, &e) < 0)
    pgd_log (PGD_LOG_ERROR, "create %s: %s", id, e.msg);
  if (pgd_rm_rf (image, &e) < 0)
    pgd_log (PGD_LOG_WARN, "%s", e.msg);
}

/* Once the server serves the child's image (in STAGING): make the layer durable, move it
   into place and hand the mount over. */
static int
finish (struct pgd_layers *l, const struct pgd_create_req *req, const char *staging,
        const char *final, struct pgd_err *err)
{
  char pf[PATH_MAX + 16], layers_dir[PATH_MAX], prun[PATH_MAX], pmnt[PATH_MAX], crun[PATH_MAX],
      cmnt[PATH_MAX];

  pgd_store_path (l, layers_dir, "layers", NULL);
  pgd_store_path (l, prun, "run", req->parent);
  pgd_store_path (l, pmnt, "mnt", req->parent);
  pgd_store_path (l, crun, "run", req->id);
  pgd_store_path (l, cmnt, "mnt", req->id);
  snprintf (pf, sizeof pf, "%s/" PARENT_FILE, staging);
  if (pgd_write_file_atomic (pf, req->parent, strlen (req->parent), err) < 0
      || pgd_fsync_dir (staging, err) < 0)
    {
      abandon (l, req->id, staging, prun, crun);
      return -1;
    }
  if (rename (staging, final) < 0)
    {
      pgd_error (err, errno, "rename %s to %s", staging, final);
      abandon (l, req->id, staging, prun, crun);
      return -1;
    }
  if (pgd_fsync_dir (layers_dir, err) < 0
      || pgd_engine_handover (&l->engine, prun, pmnt, crun, cmnt, err) < 0)
    {
      abandon (l, req->id, final, prun, crun);
      return -1;
    }
  return 0;
}

/* Off unless PGD_ONLINE_SNAPSHOT=1: measured on this VM, the freeze alone (40-50 ms:
   ext4 writes back and checkpoints its journal; a plain loop-file ext4 took 41 ms for
   its first freeze after a write, 2-6 ms idle) costs more than the unmount, clone and
   mount it saves (README, "Fewer mount cycles per docker run"). */
static bool
enabled (void)
{
  const char *v = getenv (ONLINE_ENV);
  return v != NULL && strcmp (v, "1") == 0;
}

int
pgd_store_create_online (struct pgd_layers *l, const struct pgd_create_req *req, struct layer *lay,
                         const char *staging, const char *final, bool *done, struct pgd_err *err)
{
  char pimage[PATH_MAX], prun[PATH_MAX], pmnt[PATH_MAX], crun[PATH_MAX], cmnt[PATH_MAX];
  struct pgd_err serr;
  uint64_t t0 = pgd_now_ns ();

  *done = false;
  if (!req->rw || req->parent == NULL || l->engine.kind != PGD_ENGINE_USER || !enabled ())
    return 0;
  struct layer *play = claim_idle_parent (l, req->parent);
  if (play == NULL)
    return 0;
  pgd_store_path (l, pimage, "layers", req->parent);
  pgd_store_path (l, prun, "run", req->parent);
  pgd_store_path (l, pmnt, "mnt", req->parent);
  pgd_store_path (l, crun, "run", req->id);
  pgd_store_path (l, cmnt, "mnt", req->id);
  struct fork_ctx fc = { .t = l->tracker, .parent = req->parent, .child = req->id, .dir = pmnt };
  int ret = pgd_mkdir_p (cmnt, 0755, &serr);
  if (ret == 0)
    ret = pgd_engine_snapshot (&l->engine, pimage, prun, pmnt, staging, crun, cmnt, fork_record,
                               &fc, &serr);
  if (ret < 0)
    {
      /* the parent is served as before: the caller unmounts it and clones */
      pgd_log (PGD_LOG_INFO, "create %s: no online snapshot of %s (%s); cloning it unmounted",
               req->id, req->parent, serr.msg);
      PGD_SCOPED_LOCK (&l->lock);
      pgd_layer_unclaim (l, play);
      return 0;
    }
  *done = true;
  ret = finish (l, req, staging, final, err);
  /* the parent's record as at a clean unmount: its image is closed and final */
  pgd_track_close (l->tracker, req->parent, pimage, ret == 0);
  PGD_SCOPED_LOCK (&l->lock);
  play->state = LAYER_UNMOUNTED;
  play->refs = 0;
  play->idle_since = 0;
  pgd_layer_unclaim (l, play);
  if (ret < 0)
    return pgd_error_wrap (err, "online snapshot of %s", req->parent);
  lay->state = LAYER_MOUNTED;
  lay->ro = false;
  lay->refs = 0;
  lay->idle_since = pgd_now_ns (); /* lingers as after a Put; the reaper unmounts it */
  pgd_log (PGD_LOG_DEBUG, "created %s on %s by an online snapshot, mount handed over (%u ms)",
           req->id, req->parent, pgd_elapsed_ms (t0));
  return 0;
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store: Create, Remove, Get, Put, Exists, Cleanup and mount reference
   counting. Layout under Home:
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
#include "log.h"
#include "store.h"
#include "track.h"
#include "util.h"

#define PARENT_FILE "parent"

static unsigned
hash_id (const char *id)
{
  unsigned h = 5381;
  for (const unsigned char *p = (const unsigned char *) id; *p; p++)
    h = h * 33 + *p;
  return h % PGD_BUCKETS;
}

void
pgd_store_path (const struct pgd_layers *l, char *buf, const char *sub, const char *id)
{
  if (id)
    snprintf (buf, PATH_MAX, "%s/%s/%s", l->home, sub, id);
  else
    snprintf (buf, PATH_MAX, "%s/%s", l->home, sub);
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

  snprintf (path, sizeof path, "%s/layers/%s/" PGD_IMAGE_DD, l->home, id);
  return stat (path, &st) == 0;
}

/* The ApplyDiff marker: absent = never applied; "started"; "done". */
static void
apply_marker_path (const struct pgd_layers *l, const char *id, char *buf)
{
  snprintf (buf, PATH_MAX, "%s/layers/%s/applydiff", l->home, id);
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
  return pgd_error (err, 0, "layer %s is incomplete (its ApplyDiff did not finish); remove it",
                    id);
}

/* Drop one pin of LAY; the last pin of an entry already out of the table frees it. */
static void
unpin (struct layer *lay)
{
  if (--lay->pins == 0 && lay->gone)
    free_layer (lay);
}

bool
pgd_layer_claim (struct pgd_layers *l, struct layer *lay)
{
  lay->pins++;
  while (lay->busy && !lay->gone)
    pthread_cond_wait (&l->cond, &l->lock);
  if (lay->gone)
    {
      unpin (lay);
      return false;
    }
  lay->busy = true; /* the pin stays until the unclaim */
  return true;
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

void
pgd_layer_unclaim (struct pgd_layers *l, struct layer *lay)
{
  lay->busy = false;
  pthread_cond_broadcast (&l->cond);
  unpin (lay);
}

/* Unclaim LAY, claimed for an ID found absent: its entry goes unless it tracks a mount. */
static void
unclaim_absent (struct pgd_layers *l, struct layer *lay)
{
  if (lay->state == LAYER_UNMOUNTED && lay->refs == 0)
    pgd_layer_forget (l, lay->id);
  pgd_layer_unclaim (l, lay);
}

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
  lay = pgd_layer_claim_id (l, id, true);
  if (lay == NULL)
    return pgd_error (err, ENOMEM, "layer %s", id);
  ret = 0;
  if (!pgd_layer_on_disk (l, id))
    ret = pgd_error (err, ENOENT, "layer %s", id);
  else if (!(flags & PGD_ACQ_APPLYING))
    ret = pgd_layer_usable (l, id, err);
  if (ret < 0)
    {
      unclaim_absent (l, lay);
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
          pgd_log (PGD_LOG_WARN, "idle layer %s lost its image server (dead or stopped); mounting it again", id);
          /* the teardown reports the unclean close; the mount below checks the image */
          if (pgd_layer_unmount (l, lay, err) < 0 && lay->state == LAYER_MOUNTED)
            {
              pgd_layer_unclaim (l, lay);
              return -1;
            }
        }
    }
  if (lay->state == LAYER_MOUNTED)
    {
      ret = 0;
      if (need_rw && lay->ro)
        ret = pgd_error (err, EROFS, "layer %s is mounted read-only (a child layer shares its data)", id);
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
  if (gone)
    pgd_track_close (l->tracker, lay->id, image, ret == 0);
  pthread_mutex_lock (&l->lock);
  lay->idle_since = 0;
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

/* Parse Create's StorageOpt: only "size" is known. */
static int
parse_storage_opt (const struct pgd_create_req *req, uint64_t *size, struct pgd_err *err)
{
  *size = 0;
  for (size_t i = 0; i < req->nstorage_opt; i++)
    {
      const struct pgd_kv *kv = &req->storage_opt[i];
      if (strcasecmp (kv->key, "size") != 0)
        return pgd_error (err, 0, "Unknown option %s", kv->key);
      if (pgd_parse_size (kv->value, size, err) < 0)
        return pgd_error_wrap (err, "storage option size");
      if (*size < (16ULL << 20))
        return pgd_error (err, 0, "storage option size=%s: smaller than 16 MiB", kv->value);
    }
  return 0;
}

/* Remove a private runtime directory; a failure is only logged. */
static void
drop_dir (const char *path)
{
  struct pgd_err err;
  if (pgd_rm_rf (path, &err) < 0)
    pgd_log (PGD_LOG_WARN, "%s", err.msg);
}

/* Make sure the formatted empty base for the current size/cluster exists; its
   directory goes to PATH. Serialised by the template lock. */
static int
ensure_template (struct pgd_layers *l, char *path, struct pgd_err *err)
{
  char name[64], staging[PATH_MAX], run[PATH_MAX], mnt[PATH_MAX];
  int ret;

  snprintf (name, sizeof name, "%llu-%u", (unsigned long long) l->default_size, l->cluster);
  pgd_store_path (l, path, "templates", name);
  PGD_SCOPED_LOCK (&l->template_lock);
  if (access (path, F_OK) == 0)
    return 0;
  snprintf (staging, sizeof staging, "%s/staging/template-%s", l->home, name);
  snprintf (run, sizeof run, "%s/staging/template-%s.run", l->home, name);
  snprintf (mnt, sizeof mnt, "%s/staging/template-%s.mnt", l->home, name);
  if (pgd_rm_rf (staging, err) < 0 || pgd_mkdir_p (staging, 0700, err) < 0
      || pgd_mkdir_p (run, 0700, err) < 0 || pgd_mkdir_p (mnt, 0755, err) < 0)
    return -1;
  if (pgd_image_create (staging, l->default_size, l->cluster, err) < 0)
    return pgd_error_wrap (err, "create base template");
  if (pgd_engine_mount (&l->engine, staging, run, mnt, PGD_MOUNT_MKFS, NULL, err) < 0)
    return pgd_error_wrap (err, "format base template");
  /* the root of an empty layer: 0755, owned by (remapped) root, nothing inside */
  int64_t uid = pgd_idmap_to_host (l->maps.uid, l->maps.nuid, 0);
  int64_t gid = pgd_idmap_to_host (l->maps.gid, l->maps.ngid, 0);
  char lf[PATH_MAX + 16];
  snprintf (lf, sizeof lf, "%s/lost+found", mnt);
  ret = 0;
  if (rmdir (lf) < 0 && errno != ENOENT)
    ret = pgd_error (err, errno, "rmdir %s", lf);
  if (ret == 0 && chmod (mnt, 0755) < 0)
    ret = pgd_error (err, errno, "chmod %s", mnt);
  if (ret == 0 && chown (mnt, uid < 0 ? 0 : uid, gid < 0 ? 0 : gid) < 0)
    ret = pgd_error (err, errno, "chown %s", mnt);
  struct pgd_err uerr;
  if (pgd_engine_umount (&l->engine, staging, run, mnt, &uerr) < 0 && ret == 0)
    {
      *err = uerr;
      ret = -1;
    }
  if (ret < 0)
    return pgd_error_wrap (err, "format base template");
  rmdir (mnt);
  drop_dir (run); /* holds the server's log */
  if (pgd_fsync_dir (staging, err) < 0)
    return -1;
  if (rename (staging, path) < 0)
    return pgd_error (err, errno, "rename %s to %s", staging, path);
  pgd_log (PGD_LOG_INFO, "made base template %s", path);
  return 0;
}

/* After a grow, let ext4 take the new size: the engine resizes it offline while
   attaching (online resize would need CAP_SYS_RESOURCE), then we unmount. */
static int
resize_fs (struct pgd_layers *l, const char *image, const char *tag, struct pgd_err *err)
{
  char run[PATH_MAX], mnt[PATH_MAX];
  int ret;

  snprintf (run, sizeof run, "%s.run", image);
  snprintf (mnt, sizeof mnt, "%s.mnt", image);
  if (pgd_mkdir_p (run, 0700, err) < 0 || pgd_mkdir_p (mnt, 0755, err) < 0)
    return -1;
  ret = pgd_engine_mount (&l->engine, image, run, mnt, PGD_MOUNT_RESIZE, NULL, err);
  if (ret == 0)
    ret = pgd_engine_umount (&l->engine, image, run, mnt, err);
  rmdir (mnt);
  drop_dir (run);
  return ret < 0 ? pgd_error_wrap (err, "resize %s", tag) : 0;
}

/* STAGING becomes a clone of the closed image SRC (parent ID): its deltas linked plus
   a private top; or, when SRC's chain is as deep as libploop allows, a flattened copy
   of one private delta (costs a copy of SRC's data; logged with what it cost). */
static int
clone_or_flatten (const char *src, const char *id, const char *staging, struct pgd_err *err)
{
  struct pgd_image_info info;
  uint64_t copied = 0, t0;

  if (pgd_image_info (src, &info, err) < 0)
    return -1;
  if (info.ndeltas < PGD_IMAGE_MAX_DELTAS)
    return pgd_image_clone (src, staging, err);
  t0 = pgd_now_ns ();
  if (pgd_image_copy (src, staging, &copied, err) < 0)
    return pgd_error_wrap (err, "flatten parent %s", id);
  pgd_log (PGD_LOG_INFO, "parent %s has %u deltas (the most a chain may have): flattened into "
           "one delta, %llu KiB copied in %llu ms",
           id, info.ndeltas, (unsigned long long) (copied >> 10),
           (unsigned long long) ((pgd_now_ns () - t0) / 1000000));
  return 0;
}

/* Build the new layer in STAGING: clone of the parent (or of the base template),
   grown when asked. The parent is claimed so that it is not mounted read-write,
   removed or cloned meanwhile. */
static int
build_layer (struct pgd_layers *l, const struct pgd_create_req *req, uint64_t size,
             const char *staging, struct pgd_err *err)
{
  char src[PATH_MAX];
  struct pgd_image_info info;
  int ret;

  if (req->parent == NULL)
    {
      if (ensure_template (l, src, err) < 0)
        return -1;
      /* a delta of its own, not a link to the template's: a chain starts at 1 */
      ret = pgd_image_copy (src, staging, NULL, err);
    }
  else
    {
      struct layer *play;

      pthread_mutex_lock (&l->lock);
      /* claimed first: a Remove that held the claim has deleted the parent by now */
      play = pgd_layer_claim_id (l, req->parent, true);
      if (play == NULL)
        {
          pthread_mutex_unlock (&l->lock);
          return pgd_error (err, ENOMEM, "parent layer %s", req->parent);
        }
      ret = 0;
      if (!pgd_layer_on_disk (l, req->parent))
        ret = pgd_error (err, ENOENT, "parent layer %s", req->parent);
      else if (pgd_layer_usable (l, req->parent, err) < 0)
        ret = pgd_error_wrap (err, "parent");
      if (ret < 0)
        {
          unclaim_absent (l, play);
          pthread_mutex_unlock (&l->lock);
          return -1;
        }
      /* an idle read-write mount of the parent is closed first: a clone shares its deltas */
      if (play->state == LAYER_MOUNTED && !play->ro && play->refs == 0)
        ret = pgd_layer_unmount (l, play, err);
      bool mounted_rw = play->state == LAYER_MOUNTED && !play->ro;
      pthread_mutex_unlock (&l->lock);
      pgd_store_path (l, src, "layers", req->parent);
      if (ret < 0)
        pgd_error_wrap (err, "parent");
      else if (mounted_rw)
        ret = pgd_error (err, EBUSY, "parent layer %s is mounted read-write", req->parent);
      else
        ret = clone_or_flatten (src, req->parent, staging, err);
      pthread_mutex_lock (&l->lock);
      pgd_layer_unclaim (l, play);
      pthread_mutex_unlock (&l->lock);
    }
  if (ret < 0)
    return -1;
  if (size == 0)
    return 0;
  if (pgd_image_info (staging, &info, err) < 0)
    return -1;
  if (size < info.virtual_size)
    return pgd_error (err, 0, "storage option size=%llu is smaller than the parent's %llu bytes",
                      (unsigned long long) size, (unsigned long long) info.virtual_size);
  if (size == info.virtual_size)
    return 0;
  if (pgd_image_grow (staging, size, err) < 0)
    return -1;
  return resize_fs (l, staging, req->id, err);
}

int
pgd_store_create (void *ctx, const struct pgd_create_req *req, struct pgd_err *err)
{
  struct pgd_layers *l = ctx;
  char staging[PATH_MAX], final[PATH_MAX], layers_dir[PATH_MAX];
  struct layer *lay;
  uint64_t size;
  int ret;

  if (parse_storage_opt (req, &size, err) < 0)
    return pgd_error_wrap (err, "create layer %s", req->id);
  pthread_mutex_lock (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    {
      pthread_mutex_unlock (&l->lock);
      return -1;
    }
  lay = pgd_layer_claim_id (l, req->id, true);
  if (lay == NULL)
    {
      pthread_mutex_unlock (&l->lock);
      return pgd_error (err, ENOMEM, "create layer %s", req->id);
    }
  bool exists = pgd_layer_on_disk (l, req->id);
  pthread_mutex_unlock (&l->lock);
  if (exists)
    ret = pgd_error (err, EEXIST, "create layer %s", req->id);
  else
    {
      snprintf (staging, sizeof staging, "%s/staging/%s.%d.%llx", l->home, req->id, getpid (),
                (unsigned long long) pgd_now_ns ());
      pgd_store_path (l, final, "layers", req->id);
      pgd_store_path (l, layers_dir, "layers", NULL);
      ret = pgd_mkdir_p (staging, 0700, err);
      if (ret == 0)
        ret = build_layer (l, req, size, staging, err);
      if (ret == 0 && req->parent)
        {
          char pf[PATH_MAX + 16];
          snprintf (pf, sizeof pf, "%s/" PARENT_FILE, staging);
          ret = pgd_write_file_atomic (pf, req->parent, strlen (req->parent), err);
          struct pgd_err terr;
          /* without its record the layer is only ever compared in full */
          if (ret == 0 && l->tracker && pgd_track_create (staging, req->parent, &terr) < 0)
            pgd_log (PGD_LOG_WARN, "layer %s: no change record: %s", req->id, terr.msg);
        }
      if (ret == 0)
        ret = pgd_fsync_dir (staging, err);
      if (ret == 0 && rename (staging, final) < 0)
        ret = pgd_error (err, errno, "rename %s to %s", staging, final);
      if (ret == 0)
        ret = pgd_fsync_dir (layers_dir, err);
      if (ret < 0)
        {
          struct pgd_err ignored;
          if (pgd_rm_rf (staging, &ignored) < 0)
            pgd_log (PGD_LOG_WARN, "%s", ignored.msg);
          pgd_error_wrap (err, "create layer %s", req->id);
        }
    }
  pthread_mutex_lock (&l->lock);
  if (ret < 0 && !exists)
    unclaim_absent (l, lay);
  else
    pgd_layer_unclaim (l, lay);
  pthread_mutex_unlock (&l->lock);
  if (ret == 0)
    pgd_log (PGD_LOG_DEBUG, "created %s%s%s", req->id, req->parent ? " on " : "",
             req->parent ? req->parent : "");
  return ret;
}

/* Delete everything of ID on disk; the layer is claimed and unmounted. */
static int
delete_layer_files (struct pgd_layers *l, const char *id, struct pgd_err *err)
{
  static const char *const subs[] = { "mnt", "run", "layers" };
  char path[PATH_MAX], trash[PATH_MAX];

  for (size_t i = 0; i < 3; i++)
    {
      pgd_store_path (l, path, subs[i], id);
      if (i == 2)
        {
          /* rename first so a crash never leaves a half-deleted image under layers/ */
          snprintf (trash, sizeof trash, "%s/staging/removed.%s.%llx", l->home, id,
                    (unsigned long long) pgd_now_ns ());
          if (rename (path, trash) < 0 && errno != ENOENT)
            return pgd_error (err, errno, "rename %s", path);
          snprintf (path, sizeof path, "%s", trash);
        }
      if (pgd_rm_rf (path, err) < 0)
        return -1;
    }
  return 0;
}

int
pgd_store_remove (void *ctx, const char *id, struct pgd_err *err)
{
  struct pgd_layers *l = ctx;
  char image[PATH_MAX], run[PATH_MAX], dir[PATH_MAX];
  struct layer *lay;
  int ret = 0;

  pthread_mutex_lock (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    {
      pthread_mutex_unlock (&l->lock);
      return -1;
    }
  lay = pgd_layer_claim_id (l, id, true);
  if (lay == NULL)
    {
      pthread_mutex_unlock (&l->lock);
      return pgd_error (err, ENOMEM, "remove layer %s", id);
    }
  pthread_mutex_unlock (&l->lock);

  pgd_store_path (l, image, "layers", id);
  pgd_store_path (l, run, "run", id);
  pgd_store_path (l, dir, "mnt", id);
  if (lay->state == LAYER_MOUNTED || pgd_is_mountpoint (dir))
    {
      if (lay->refs > 0)
        pgd_log (PGD_LOG_WARN, "remove %s: still held by %u reference(s); unmounting", id,
                 lay->refs);
      ret = pgd_engine_umount (&l->engine, image, run, dir, err);
      if (ret < 0 && !pgd_is_mountpoint (dir))
        {
          /* torn down all the same (its image server had died, e.g. with a managed
             plugin): the image is being deleted, an unclean close does not matter */
          pgd_log (PGD_LOG_WARN, "remove %s: %s", id, err->msg);
          ret = 0;
        }
    }
  if (ret == 0)
    pgd_track_drop (l->tracker, id, image);
  if (ret == 0)
    ret = delete_layer_files (l, id, err);

  pthread_mutex_lock (&l->lock);
  if (ret == 0)
    {
      lay->state = LAYER_UNMOUNTED;
      lay->refs = 0;
      /* out of the table before the unclaim: a waiter wakes, sees it gone and looks
         the ID up again (it no longer exists) */
      pgd_layer_forget (l, id);
    }
  pgd_layer_unclaim (l, lay);
  pthread_mutex_unlock (&l->lock);
  return ret < 0 ? pgd_error_wrap (err, "remove layer %s", id) : 0;
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

int
pgd_layers_open (struct pgd_layers **out, const struct pgd_layers_config *cfg,
                 struct pgd_err *err)
{
  struct pgd_layers *l = calloc (1, sizeof *l);

  if (l == NULL)
    return pgd_error (err, ENOMEM, "layer store");
  l->home_lock_fd = -1;
  pthread_mutex_init (&l->lock, NULL);
  pthread_mutex_init (&l->template_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&l->cond, &ca);
  pthread_condattr_destroy (&ca);
  l->linger_ms = cfg->linger_ms;
  l->default_size = PGD_DEFAULT_SIZE;
  l->cluster = PGD_DEFAULT_CLUSTER;
  snprintf (l->state_file, sizeof l->state_file, "%s",
            cfg->state_file ? cfg->state_file : "/var/lib/ploop-graphdriver/state.json");
  snprintf (l->engine_name, sizeof l->engine_name, "%s", cfg->engine ? cfg->engine : "auto");
  snprintf (l->exe, sizeof l->exe, "%s", cfg->exe ? cfg->exe : "/proc/self/exe");
  if (!cfg->no_tracker && pgd_tracker_new (&l->tracker, err) < 0)
    goto fail;
  if (pgd_engine_setup (&l->engine, l->engine_name, l->exe, err) < 0)
    goto fail;
  l->engine.stall_ms = l->stall_ms = cfg->stall_ms;
  if (cfg->home)
    {
      struct pgd_init_req req = { .home = cfg->home };
      if (pgd_store_init (l, &req, false, err) < 0)
        goto fail;
    }
  else if (pgd_store_load (l, err) < 0)
    goto fail;
  if (l->ready)
    pgd_store_recover (l);
  if (pgd_reaper_start (l, err) < 0)
    goto fail;
  *out = l;
  return 0;
fail:
  pgd_layers_close (l);
  return -1;
}

void
pgd_layers_close (struct pgd_layers *l)
{
  if (l == NULL)
    return;
  pgd_reaper_stop (l);
  pgd_tracker_free (l->tracker);
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    while (l->table[b])
      pgd_layer_forget (l, l->table[b]->id);
  free (l->maps.uid);
  free (l->maps.gid);
  pgd_home_unlock (l);
  pthread_mutex_destroy (&l->lock);
  pthread_mutex_destroy (&l->template_lock);
  pthread_cond_destroy (&l->cond);
  free (l);
}

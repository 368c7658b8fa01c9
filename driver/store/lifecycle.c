/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Crash-safe Create and Remove: a layer is built in staging/ (a base layer from the
   cached formatted template, a child as a clone of its parent, grown when StorageOpt
   asks) and renamed into place; Remove unmounts, moves the layer aside and deletes it. */
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

#define PARENT_FILE "parent"

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

  snprintf (name, sizeof name, "%llu-%u", (unsigned long long)l->default_size, l->cluster);
  pgd_store_path (l, path, "templates", name);
  PGD_SCOPED_LOCK (&l->template_lock);
  if (access (path, F_OK) == 0)
    return 0;
  pgd_pathf (staging, sizeof staging, "%s/staging/template-%s", l->home, name);
  pgd_pathf (run, sizeof run, "%s/staging/template-%s.run", l->home, name);
  pgd_pathf (mnt, sizeof mnt, "%s/staging/template-%s.mnt", l->home, name);
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

  pgd_pathf (run, sizeof run, "%s.run", image);
  pgd_pathf (mnt, sizeof mnt, "%s.mnt", image);
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
  pgd_log (PGD_LOG_INFO,
           "parent %s has %u deltas (the most a chain may have): flattened into "
           "one delta, %llu KiB copied in %llu ms",
           id, info.ndeltas, (unsigned long long)(copied >> 10),
           (unsigned long long)((pgd_now_ns () - t0) / 1000000));
  return 0;
}

/* Claim the entry of ID (adding it) once the store is ready: NULL with ERR otherwise. */
static struct layer *
claim_layer (struct pgd_layers *l, const char *id, const char *what, struct pgd_err *err)
{
  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    return NULL;
  /* a wait for another claim ends when the client has gone: nothing changed then */
  return pgd_layer_claim_req (l, id, what, err);
}

/* Unclaim LAY under the store lock; ABSENT: its ID turned out not to be on disk. */
static void
unclaim_layer (struct pgd_layers *l, struct layer *lay, bool absent)
{
  PGD_SCOPED_LOCK (&l->lock);
  if (absent)
    pgd_layer_unclaim_absent (l, lay);
  else
    pgd_layer_unclaim (l, lay);
}

/* Claim PARENT for a clone: it must be on disk and whole; an idle read-write mount of it
   is closed first (a clone shares its deltas). *MOUNTED_RW: it is still mounted
   read-write (held). NULL with ERR when it cannot be used. */
static struct layer *
claim_parent (struct pgd_layers *l, const char *parent, bool *mounted_rw, struct pgd_err *err)
{
  struct layer *play;

  PGD_SCOPED_LOCK (&l->lock);
  /* claimed first: a Remove that held the claim has deleted the parent by now */
  play = pgd_layer_claim_req (l, parent, "parent layer", err);
  if (play == NULL)
    return NULL;
  if (!pgd_layer_on_disk (l, parent))
    {
      pgd_error (err, ENOENT, "parent layer %s", parent);
      pgd_layer_unclaim_absent (l, play);
      return NULL;
    }
  if (pgd_layer_usable (l, parent, err) < 0
      || (play->state == LAYER_MOUNTED && !play->ro && play->refs == 0
          && pgd_layer_unmount (l, play, err) < 0))
    {
      pgd_error_wrap (err, "parent");
      pgd_layer_unclaim (l, play);
      return NULL;
    }
  char what[PATH_MAX];
  snprintf (what, sizeof what, "create a child of layer %s", parent);
  /* (the unmount of an idle parent may have waited on its server) */
  if (pgd_request_check (what, err) < 0)
    {
      pgd_layer_unclaim (l, play);
      return NULL;
    }
  *mounted_rw = play->state == LAYER_MOUNTED && !play->ro;
  return play;
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
      bool mounted_rw = false;
      struct layer *play = claim_parent (l, req->parent, &mounted_rw, err);

      if (play == NULL)
        return -1;
      pgd_store_path (l, src, "layers", req->parent);
      if (mounted_rw)
        ret = pgd_error (err, EBUSY, "parent layer %s is mounted read-write", req->parent);
      else
        ret = clone_or_flatten (src, req->parent, staging, err);
      unclaim_layer (l, play, false);
    }
  if (ret < 0)
    return -1;
  if (size == 0)
    return 0;
  if (pgd_image_info (staging, &info, err) < 0)
    return -1;
  if (size < info.virtual_size)
    return pgd_error (err, 0, "storage option size=%llu is smaller than the parent's %llu bytes",
                      (unsigned long long)size, (unsigned long long)info.virtual_size);
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
  lay = claim_layer (l, req->id, "create layer", err);
  if (lay == NULL)
    return -1;
  /* on disk or not cannot change while the ID is claimed */
  bool exists = pgd_layer_on_disk (l, req->id);
  if (exists)
    ret = pgd_error (err, EEXIST, "create layer %s", req->id);
  else
    {
      pgd_pathf (staging, sizeof staging, "%s/staging/%s.%d.%llx", l->home, req->id, getpid (),
                 (unsigned long long)pgd_now_ns ());
      pgd_store_path (l, final, "layers", req->id);
      pgd_store_path (l, layers_dir, "layers", NULL);
      bool online = false;
      ret = pgd_mkdir_p (staging, 0700, err);
      if (ret == 0 && size == 0)
        ret = pgd_store_create_online (l, req, lay, staging, final, &online, err);
      if (online)
        goto out;
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
out:
  unclaim_layer (l, lay, ret < 0 && !exists);
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
          pgd_pathf (trash, sizeof trash, "%s/staging/removed.%s.%llx", l->home, id,
                     (unsigned long long)pgd_now_ns ());
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

  lay = claim_layer (l, id, "remove layer", err);
  if (lay == NULL)
    return -1;

  pgd_store_path (l, image, "layers", id);
  pgd_store_path (l, run, "run", id);
  pgd_store_path (l, dir, "mnt", id);
  if (lay->state == LAYER_MOUNTED || pgd_is_mountpoint (dir))
    {
      if (lay->refs > 0)
        pgd_log (PGD_LOG_WARN, "remove %s: still held by %u reference(s); unmounting", id,
                 lay->refs);
      /* the image is deleted next: one nobody holds is shut down and unmounted with
         nothing flushed or written back; a held one (its holder may still read it) is
         unmounted as before */
      ret = lay->refs > 0 ? pgd_engine_umount (&l->engine, image, run, dir, err)
                          : pgd_engine_discard (&l->engine, image, run, dir, err);
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

  {
    PGD_SCOPED_LOCK (&l->lock);
    if (ret == 0)
      {
        lay->state = LAYER_UNMOUNTED;
        lay->refs = 0;
        /* out of the table before the unclaim: a waiter wakes, sees it gone and looks
           the ID up again (it no longer exists) */
        pgd_layer_forget (l, id);
      }
    pgd_layer_unclaim (l, lay);
  }
  return ret < 0 ? pgd_error_wrap (err, "remove layer %s", id) : 0;
}

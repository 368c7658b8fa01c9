/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Store functions for a face that keeps a layer mounted for the layer's whole life
   (the containerd snapshotter: a snapshot stays served while it exists), the disk
   usage of one layer, and the list of layers on disk. */
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
#include "util.h"

int
pgd_layers_pin (struct pgd_layers *l, const char *id, char *dir, struct pgd_err *err)
{
  if (!pgd_id_valid (id, err))
    return -1;
  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
    struct layer *lay = pgd_layer_claim_id (l, id, false);
    if (lay != NULL)
      {
        bool mounted = lay->state == LAYER_MOUNTED;
        if (mounted && lay->refs == 0)
          lay->refs = 1; /* an idle mount (linger): take it back */
        lay->idle_since = 0;
        pgd_layer_unclaim (l, lay);
        if (mounted)
          {
            pgd_store_path (l, dir, "mnt", id);
            return 0;
          }
      }
  }
  return pgd_layer_acquire (l, id, NULL, 0, dir, err);
}

int
pgd_layers_unpin (struct pgd_layers *l, const char *id, struct pgd_err *err)
{
  if (!pgd_id_valid (id, err))
    return -1;
  PGD_SCOPED_LOCK (&l->lock);
  if (pgd_store_ready (l, err) < 0)
    return -1;
  struct layer *lay = pgd_layer_claim_id (l, id, false);
  if (lay == NULL)
    return 0;
  int ret = 0;
  if (lay->state == LAYER_MOUNTED)
    {
      unsigned refs = lay->refs;
      lay->refs = 0;
      ret = pgd_layer_unmount (l, lay, err);
      if (ret < 0 && lay->state == LAYER_MOUNTED)
        lay->refs = refs;
    }
  pgd_layer_unclaim (l, lay);
  return ret;
}

int
pgd_layers_usage (struct pgd_layers *l, const char *id, uint64_t *bytes, struct pgd_err *err)
{
  char image[PATH_MAX], mnt[PATH_MAX];
  struct pgd_image_info info;
  struct stat st;

  if (!pgd_id_valid (id, err))
    return -1;
  pgd_store_path (l, mnt, "mnt", id);
  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
    if (!pgd_layer_on_disk (l, id))
      return pgd_error (err, ENOENT, "usage of layer %s", id);
  }
  /* what a mounted layer's files hold reaches its delta only once written back */
  if (pgd_is_mountpoint (mnt))
    {
      cleanup_close int fd = open (mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0 || syncfs (fd) < 0)
        return pgd_error (err, errno, "usage of layer %s: sync %s", id, mnt);
    }
  pgd_store_path (l, image, "layers", id);
  if (pgd_image_info (image, &info, err) < 0)
    return pgd_error_wrap (err, "usage of layer %s", id);
  if (stat (info.top_file, &st) < 0)
    return pgd_error (err, errno, "usage of layer %s: stat %s", id, info.top_file);
  *bytes = (uint64_t)st.st_blocks * 512;
  return 0;
}

int
pgd_layers_list (struct pgd_layers *l, struct pgd_kvlist *out, struct pgd_err *err)
{
  char dir[PATH_MAX];
  struct dirent *de;
  int rc;

  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
  }
  pgd_store_path (l, dir, "layers", NULL);
  cleanup_dir DIR *d = opendir (dir);
  if (d == NULL)
    return pgd_error (err, errno, "list layers: open %s", dir);
  while ((rc = pgd_readdir (d, &de, dir, err)) > 0)
    if (de->d_name[0] != '.' && pgd_layer_on_disk (l, de->d_name)
        && pgd_kvlist_add (out, de->d_name, "", err) < 0)
      return -1;
  return rc;
}

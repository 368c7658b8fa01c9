/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store's diff operations: mount the layer (and its parent) through the
   reference-counted mounts, ask the change tracker which directories to visit, then
   hand the trees to the diff engine. With PGD_TRACK_VERIFY=1 in the environment every
   tracked answer is checked against the full comparison (tests). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "diff/diff.h"
#include "internal.h"
#include "log.h"
#include "track.h"
#include "util.h"

/* A layer and its parent mounted for a diff. */
struct mounted_pair
{
  struct pgd_layers *l;
  char id[PGD_ID_MAX + 1];
  char parent[PGD_ID_MAX + 1];
  char new_dir[PATH_MAX];
  char old_dir[PATH_MAX];
};

static void
pair_release (struct mounted_pair *p)
{
  struct pgd_err err;

  if (p->new_dir[0] && pgd_layer_release (p->l, p->id, 0, &err) < 0)
    pgd_log (PGD_LOG_WARN, "%s", err.msg);
  if (p->old_dir[0] && pgd_layer_release (p->l, p->parent, 0, &err) < 0)
    pgd_log (PGD_LOG_WARN, "%s", err.msg);
  p->new_dir[0] = p->old_dir[0] = '\0';
}

static int
pair_acquire (struct mounted_pair *p, struct pgd_layers *l, const char *id, const char *parent,
              struct pgd_err *err)
{
  memset (p, 0, sizeof *p);
  p->l = l;
  snprintf (p->id, sizeof p->id, "%s", id);
  if (pgd_layer_acquire (l, id, NULL, 0, p->new_dir, err) < 0)
    {
      p->new_dir[0] = '\0';
      return -1;
    }
  if (parent == NULL || parent[0] == '\0')
    return 0;
  snprintf (p->parent, sizeof p->parent, "%s", parent);
  if (pgd_layer_acquire (l, parent, NULL, 0, p->old_dir, err) < 0)
    {
      p->old_dir[0] = '\0';
      pgd_error_wrap (err, "parent");
      pair_release (p);
      return -1;
    }
  return 0;
}

static const char *
old_root (const struct mounted_pair *p)
{
  return p->old_dir[0] ? p->old_dir : NULL;
}

/* The tracker's hint for P in H; NULL when the full comparison must run. */
static const struct pgd_diff_hint *
pair_hint (struct mounted_pair *p, struct pgd_diff_hint *h)
{
  struct pgd_err err;
  bool use = false;

  if (!p->old_dir[0])
    return NULL;
  if (pgd_track_hint (p->l->tracker, p->id, p->parent, p->new_dir, p->old_dir, h, &use, &err) < 0)
    {
      pgd_log (PGD_LOG_DEBUG, "changes of %s: full comparison (%s)", p->id, err.msg);
      pgd_diff_hint_free (h);
      return NULL;
    }
  return use ? h : NULL;
}

static bool
verifying (void)
{
  const char *v = getenv ("PGD_TRACK_VERIFY");
  return v != NULL && strcmp (v, "1") == 0;
}

static int
mismatch (const struct mounted_pair *p, const char *what, struct pgd_err *err)
{
  pgd_log (PGD_LOG_ERROR, "change tracker: %s of %s differ from the full comparison", what, p->id);
  return pgd_error (err, EIO, "change tracker: %s of %s differ from the full comparison", what,
                    p->id);
}

int
pgd_layers_diff_open (void *ctx, const char *id, const char *parent, void **stream,
                      struct pgd_err *err)
{
  struct mounted_pair *p = malloc (sizeof *p);

  if (p == NULL)
    return pgd_error (err, ENOMEM, "diff %s", id);
  if (pair_acquire (p, ctx, id, parent, err) < 0)
    {
      free (p);
      return pgd_error_wrap (err, "diff %s", id);
    }
  *stream = p;
  return 0;
}

/* Diff both ways into memory files, compare them byte for byte, send one to FD. */
static int
verify_diff (struct mounted_pair *p, const struct pgd_diff_hint *hint, int fd, struct pgd_err *err)
{
  cleanup_close int a = memfd_create ("tracked", MFD_CLOEXEC);
  cleanup_close int b = memfd_create ("full", MFD_CLOEXEC);
  time_t now = time (NULL);
  struct stat sa, sb;

  if (a < 0 || b < 0)
    return pgd_error (err, errno, "memfd");
  if (pgd_diff_write_hint (p->new_dir, old_root (p), hint, now, a, &p->l->maps, err) < 0
      || pgd_diff_write_hint (p->new_dir, old_root (p), NULL, now, b, &p->l->maps, err) < 0)
    return -1;
  if (fstat (a, &sa) < 0 || fstat (b, &sb) < 0)
    return pgd_error (err, errno, "memfd");
  cleanup_free char *da = malloc (sa.st_size + 1), *db = malloc (sb.st_size + 1);
  if (da == NULL || db == NULL)
    return pgd_error (err, ENOMEM, "verify diff");
  if (sa.st_size != sb.st_size || pread (a, da, sa.st_size, 0) != sa.st_size
      || pread (b, db, sb.st_size, 0) != sb.st_size || memcmp (da, db, sa.st_size) != 0)
    return mismatch (p, "the tar bytes", err);
  for (off_t off = 0; off < sa.st_size;)
    {
      ssize_t n = write (fd, da + off, sa.st_size - off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write the diff");
      off += n;
    }
  return 0;
}

int
pgd_layers_diff_write (void *stream, int fd, struct pgd_err *err)
{
  struct mounted_pair *p = stream;
  struct pgd_diff_hint hint_sets = { 0 };
  const struct pgd_diff_hint *hint = pair_hint (p, &hint_sets);
  int ret;

  if (hint && verifying ())
    ret = verify_diff (p, hint, fd, err);
  else
    ret = pgd_diff_write_hint (p->new_dir, old_root (p), hint, 0, fd, &p->l->maps, err);
  pgd_diff_hint_free (&hint_sets);
  if (ret < 0)
    return pgd_error_wrap (err, "diff %s", p->id);
  return 0;
}

void
pgd_layers_diff_close (void *stream)
{
  struct mounted_pair *p = stream;

  if (p == NULL)
    return;
  pair_release (p);
  free (p);
}

int
pgd_layers_changes (void *ctx, const char *id, const char *parent, struct pgd_changes *out,
                    struct pgd_err *err)
{
  struct mounted_pair p;
  int ret;

  if (pair_acquire (&p, ctx, id, parent, err) < 0)
    return pgd_error_wrap (err, "changes of %s", id);
  struct pgd_diff_hint hint_sets = { 0 };
  const struct pgd_diff_hint *hint = pair_hint (&p, &hint_sets);
  size_t first = out->n;
  ret = pgd_diff_changes_hint (p.new_dir, old_root (&p), hint, out, err);
  if (ret == 0 && hint && verifying ())
    {
      struct pgd_changes full = { 0 };
      ret = pgd_diff_changes (p.new_dir, old_root (&p), &full, err);
      bool same = ret == 0 && full.n == out->n - first;
      for (size_t i = 0; same && i < full.n; i++)
        same = full.items[i].kind == out->items[first + i].kind
               && strcmp (full.items[i].path, out->items[first + i].path) == 0;
      if (ret == 0 && !same)
        ret = mismatch (&p, "the changes", err);
      pgd_changes_free (&full);
    }
  pgd_diff_hint_free (&hint_sets);
  pair_release (&p);
  return ret < 0 ? pgd_error_wrap (err, "changes of %s", id) : 0;
}

int
pgd_layers_diff_size (void *ctx, const char *id, const char *parent, int64_t *size,
                      struct pgd_err *err)
{
  struct mounted_pair p;
  int ret;

  if (pair_acquire (&p, ctx, id, parent, err) < 0)
    return pgd_error_wrap (err, "size of %s", id);
  struct pgd_diff_hint hint_sets = { 0 };
  const struct pgd_diff_hint *hint = pair_hint (&p, &hint_sets);
  ret = pgd_diff_size_hint (p.new_dir, old_root (&p), hint, size, err);
  if (ret == 0 && hint && verifying ())
    {
      int64_t full;
      ret = pgd_diff_size (p.new_dir, old_root (&p), &full, err);
      if (ret == 0 && full != *size)
        ret = mismatch (&p, "the sizes", err);
    }
  pgd_diff_hint_free (&hint_sets);
  pair_release (&p);
  return ret < 0 ? pgd_error_wrap (err, "size of %s", id) : 0;
}

/* ApplyDiff runs once per layer (PROTOCOL.md §4.2): a durable marker says it started;
   only a finished apply turns it into "done". A retried request with the rest of a
   cut stream finds the marker and is refused; a layer whose apply never finished is
   refused by Get and clone until it is removed. */
static int
mark_apply (struct pgd_layers *l, const char *id, const char *state, bool must_be_new,
            struct pgd_err *err)
{
  char path[PATH_MAX];

  pgd_pathf (path, sizeof path, "%s/layers/%s/applydiff", l->home, id);
  PGD_SCOPED_LOCK (&l->lock);
  if (!pgd_layer_on_disk (l, id))
    return pgd_error (err, ENOENT, "layer %s", id);
  if (must_be_new && access (path, F_OK) == 0)
    return pgd_error (err, EEXIST, "layer %s already had its ApplyDiff (allowed once per layer)",
                      id);
  return pgd_write_file_atomic (path, state, strlen (state), err);
}

int
pgd_layers_apply_diff (void *ctx, const char *id, const char *parent, int fd, int64_t *size,
                       struct pgd_err *err)
{
  struct pgd_layers *l = ctx;
  char dir[PATH_MAX];
  int ret;

  (void)parent; /* always applied onto the layer's current content */
  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
  }
  if (mark_apply (l, id, "started", true, err) < 0)
    return pgd_error_wrap (err, "apply diff");
  if (pgd_layer_acquire (l, id, NULL, PGD_ACQ_RW | PGD_ACQ_APPLYING, dir, err) < 0)
    return pgd_error_wrap (err, "apply diff");
  ret = pgd_diff_apply (dir, fd, &l->maps, size, err);
  if (ret < 0)
    pgd_error_wrap (err, "apply diff to layer %s", id);
  struct pgd_err rerr;
  /* unmounted now: "done" may only be written once everything is closed and durable */
  if (pgd_layer_release (l, id, PGD_REL_NOW, &rerr) < 0 && ret == 0)
    {
      *err = rerr;
      ret = -1;
    }
  if (ret == 0)
    ret = mark_apply (l, id, "done", false, err);
  if (ret == 0)
    pgd_log (PGD_LOG_DEBUG, "applied %lld bytes to %s", (long long)*size, id);
  return ret;
}

int
pgd_layers_track_hint (struct pgd_layers *l, const char *id, const char *parent, bool *use,
                       size_t *nvisit, struct pgd_err *err)
{
  struct mounted_pair p;
  struct pgd_diff_hint hint_sets = { 0 };

  if (!pgd_id_valid (id, err) || (parent && !pgd_id_valid (parent, err)))
    return -1;
  if (pair_acquire (&p, l, id, parent, err) < 0)
    return pgd_error_wrap (err, "track hint of %s", id);
  *use = pair_hint (&p, &hint_sets) != NULL;
  if (nvisit)
    *nvisit = hint_sets.visit.n;
  pgd_diff_hint_free (&hint_sets);
  pair_release (&p);
  return 0;
}

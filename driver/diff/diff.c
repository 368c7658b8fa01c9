/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Changes and DiffSize: thin consumers of the comparison walk (tree.c). The tar
   streams live in tarout.c (Diff) and apply.c (ApplyDiff). */
#include "diff.h"

#include <sys/stat.h>

#include "keymap.h"
#include "tree.h"

static int
add_change (void *opaque, const struct pgd_tree_change *c, struct pgd_err *err)
{
  return pgd_changes_add (opaque, c->path, c->kind, err);
}

int
pgd_diff_changes (const char *new_root, const char *old_root, struct pgd_changes *out,
                  struct pgd_err *err)
{
  return pgd_diff_changes_hint (new_root, old_root, NULL, out, err);
}

int
pgd_diff_changes_hint (const char *new_root, const char *old_root, const struct pgd_diff_hint *hint,
                       struct pgd_changes *out, struct pgd_err *err)
{
  if (pgd_tree_walk_hint (new_root, old_root, hint, 0, add_change, out, NULL, err) < 0)
    return pgd_error_wrap (err, "changes of %s", new_root);
  return 0;
}

struct size_sum
{
  int64_t total;
  struct pgd_keymap inodes; /* (dev, ino) of multiply linked files already counted */
};

static int
add_size (void *opaque, const struct pgd_tree_change *c, struct pgd_err *err)
{
  struct size_sum *s = opaque;
  bool added = true;

  if (c->kind == PGD_CHANGE_DELETE || S_ISDIR (c->st->st_mode))
    return 0;
  if (c->st->st_nlink > 1)
    {
      dev_t key[2] = { c->st->st_dev, c->st->st_ino };
      if (pgd_keymap_put (&s->inodes, key, sizeof key, NULL, &added, err) < 0)
        return -1;
    }
  if (added)
    s->total += c->st->st_size;
  return 0;
}

int
pgd_diff_size (const char *new_root, const char *old_root, int64_t *size, struct pgd_err *err)
{
  return pgd_diff_size_hint (new_root, old_root, NULL, size, err);
}

int
pgd_diff_size_hint (const char *new_root, const char *old_root, const struct pgd_diff_hint *hint,
                    int64_t *size, struct pgd_err *err)
{
  struct size_sum s = { 0 };
  int r = pgd_tree_walk_hint (new_root, old_root, hint, 0, add_size, &s, NULL, err);

  pgd_keymap_free (&s.inodes);
  if (r < 0)
    return pgd_error_wrap (err, "size of %s", new_root);
  *size = s.total;
  return 0;
}

void
pgd_diff_hint_free (struct pgd_diff_hint *h)
{
  pgd_keymap_free (&h->visit);
  pgd_keymap_free (&h->full);
}

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The comparison walk behind Changes, Diff and DiffSize: NEW and OLD are walked
   together, depth first, names sorted bytewise, and every change is reported in
   Docker's order (a parent directory as Modify before its first changed child). */
#ifndef PGD_TREE_H
#define PGD_TREE_H

#include <stdint.h>
#include <sys/stat.h>

#include "driver.h"
#include "err.h"

/* One change as the walk reports it. */
struct pgd_tree_change
{
  enum pgd_change_kind kind;
  const char *path;      /* absolute: "/a/b" */
  int dirfd;             /* NEW's directory holding NAME (Add, Modify); -1 for Delete */
  const char *name;      /* last component of PATH */
  const struct stat *st; /* NEW's lstat of PATH (Add, Modify); NULL for Delete */
};

/* Called for every change in order; a negative return stops the walk. */
typedef int (*pgd_tree_fn) (void *opaque, const struct pgd_tree_change *c, struct pgd_err *err);

/* Walk flags. */
enum
{
  PGD_TREE_NO_FASTPATH = 1, /* always compare in full, even for clones */
};

/* What the walk did, for tests and measurements. */
struct pgd_tree_stats
{
  uint64_t compared; /* paths present on both sides */
  uint64_t fast;     /* of which found unchanged by (inode, ctime) alone */
  int fastpath;      /* 1 when the two trees were seen as clones of one filesystem */
  uint64_t pruned;   /* directories left out on the tracker's hint */
};

/* Report every change of NEW_ROOT relative to OLD_ROOT (NULL = empty) to FN. A root
   lost+found is ignored. STATS may be NULL. */
int pgd_tree_walk (const char *new_root, const char *old_root, unsigned flags, pgd_tree_fn fn,
                   void *opaque, struct pgd_tree_stats *stats, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

struct pgd_diff_hint;

/* pgd_tree_walk guided by HINT (diff.h): in a directory of HINT->full, or one new or
   replaced (another inode) in NEW, every entry is compared; in any other directory
   only the entries named in HINT->visit, and only those directories are entered.
   HINT NULL, or trees that are not clones of one filesystem: everything. The caller
   vouches that nothing changed outside (the change tracker's hint). */
int pgd_tree_walk_hint (const char *new_root, const char *old_root,
                        const struct pgd_diff_hint *hint, unsigned flags, pgd_tree_fn fn,
                        void *opaque, struct pgd_tree_stats *stats, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Layer diffs on mounted trees, with Docker's exact semantics (libarchive).
   NEW_ROOT is the layer's merged view; OLD_ROOT its parent's (NULL = empty tree).
   A lost+found at either root is never part of a diff. When both trees are clones of
   one ext4 (same statfs fsid) or on one device, a file whose (inode, ctime) is the
   same on both sides is unchanged without further checks (tree.c). */
#ifndef PGD_DIFF_H
#define PGD_DIFF_H

#include <stdint.h>
#include <time.h>

#include "driver.h"
#include "err.h"
#include "keymap.h" /* the tracker's hint is a set of paths */

/* Extract the tar read from FD (until EOF, trailing bytes included) into ROOT, honouring
   whiteouts and opaque directories, mapping owners through MAPS, refusing any entry
   that would write outside ROOT. *SIZE = sum of the entries' header sizes.
   PROTOCOL.md §10.2; an absolute name, a name or hardlink climbing out with "..", a
   symlink whose target climbs out, and any path through a symlink are refused with
   an error naming the entry. FD is read to EOF even after an error; ROOT may then be
   partly written. */
int pgd_diff_apply (const char *root, int fd, const struct pgd_idmaps *maps, int64_t *size,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Append to OUT the changes of NEW_ROOT relative to OLD_ROOT, in Docker's order:
   depth first, names sorted bytewise, a parent directory as Modify just before its
   first changed descendant, only the top of a deleted subtree (PROTOCOL.md §10.4). */
int pgd_diff_changes (const char *new_root, const char *old_root, struct pgd_changes *out,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Write to FD a PAX tar of exactly those changes (whiteouts for deletions), streamed,
   owners mapped back through MAPS; in the order of pgd_diff_changes. SIGPIPE is held
   back meanwhile: a consumer that goes away gives an error with EPIPE, and no
   end-of-archive blocks follow an error. */
int pgd_diff_write (const char *new_root, const char *old_root, int fd,
                    const struct pgd_idmaps *maps, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* lstat sizes of the non-directories reported Add or Modify (hardlinked inodes once,
   symlinks by their length, deletions 0): dockerd's DiffSize. */
int pgd_diff_size (const char *new_root, const char *old_root, int64_t *size, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* The change tracker's hint: absolute paths ("/a/b"; "" is the root). */
struct pgd_diff_hint
{
  struct pgd_keymap visit; /* directories that may hold changes, and their ancestors */
  struct pgd_keymap full;  /* of those, the ones whose own entries may have changed */
};

/* Free both sets of H and leave it empty. */
void pgd_diff_hint_free (struct pgd_diff_hint *h);

/* The three above walking only what HINT names (see pgd_tree_walk_hint; NULL =
   everything): same entries, same order, same bytes. NOW (0 = the clock) is the
   mtime of the whiteouts, fixed so two runs compare. */
int pgd_diff_changes_hint (const char *new_root, const char *old_root,
                           const struct pgd_diff_hint *hint, struct pgd_changes *out,
                           struct pgd_err *err) __attribute__ ((warn_unused_result));
int pgd_diff_write_hint (const char *new_root, const char *old_root,
                         const struct pgd_diff_hint *hint, time_t now, int fd,
                         const struct pgd_idmaps *maps, struct pgd_err *err)
    __attribute__ ((warn_unused_result));
int pgd_diff_size_hint (const char *new_root, const char *old_root,
                        const struct pgd_diff_hint *hint, int64_t *size, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif

/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Layer diffs on mounted trees, with Docker's exact semantics (libarchive).
   NEW_ROOT is the layer's merged view; OLD_ROOT its parent's (NULL = empty tree). */
#ifndef PGD_DIFF_H
#define PGD_DIFF_H

#include <stdint.h>

#include "driver.h"
#include "err.h"

/* Extract the tar read from FD (until EOF, trailing bytes included) into ROOT, honouring
   whiteouts and opaque directories, mapping owners through MAPS, refusing any entry
   that would write outside ROOT. *SIZE = sum of the entries' header sizes. */
int pgd_diff_apply (const char *root, int fd, const struct pgd_idmaps *maps, int64_t *size,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Append to OUT the changes of NEW_ROOT relative to OLD_ROOT, in Docker's order. */
int pgd_diff_changes (const char *new_root, const char *old_root, struct pgd_changes *out,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Write to FD a PAX tar of exactly those changes (whiteouts for deletions), streamed. */
int pgd_diff_write (const char *new_root, const char *old_root, int fd,
                    const struct pgd_idmaps *maps, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Bytes of regular files added or modified (hardlinked inodes once). */
int pgd_diff_size (const char *new_root, const char *old_root, int64_t *size,
                   struct pgd_err *err) __attribute__ ((warn_unused_result));

#endif
